"""Losses: softmax_cross_entropy (fused) and mse."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

import nnplug


class SoftmaxCrossEntropyConfig(nnplug.LayerConfig):
    type: Literal["softmax_cross_entropy"] = "softmax_cross_entropy"


class SoftmaxCrossEntropy(nnplug.Loss):
    """L = mean over n of (logsumexp(zₙ) − Σₖ tₙₖ zₙₖ), softmax fused into the loss.

    pred z: (N, K) logits. target: (N,) integer labels in [0, K), or (N, K) rows of class
    probabilities (one-hot). Gradient: (softmax(z) − t) / N.
    """

    Config = SoftmaxCrossEntropyConfig

    def check_pred_shape(self, pred_shape: tuple[int, ...]) -> None:
        if len(pred_shape) != 1 or pred_shape[0] < 2:
            raise nnplug.ShapeError(
                f"softmax_cross_entropy expects logits of shape (classes,) with at least 2 "
                f"classes, received {pred_shape}"
            )

    def _onehot(self, pred: np.ndarray, target: Any) -> np.ndarray:
        n, k = pred.shape
        t = np.asarray(target)
        if t.shape == (n,):
            if t.dtype.kind not in "iu":
                raise nnplug.ShapeError(f"softmax_cross_entropy: labels must be integers, got dtype {t.dtype}")
            if n and (t.min() < 0 or t.max() >= k):
                bad = t[(t < 0) | (t >= k)][0]
                raise nnplug.ShapeError(f"softmax_cross_entropy: label {bad} is outside the {k} classes [0, {k})")
            onehot = np.zeros_like(pred)
            onehot[np.arange(n), t] = 1
            return onehot
        if t.shape == (n, k):
            if t.dtype.kind not in "fiub" or not np.isfinite(t).all() or (t < 0).any():
                raise nnplug.ShapeError("softmax_cross_entropy: one-hot targets must be finite and non-negative")
            if n and not np.allclose(t.sum(axis=1), 1, atol=1e-4):
                raise nnplug.ShapeError("softmax_cross_entropy: each one-hot target row must sum to 1")
            return t.astype(pred.dtype, copy=False)
        raise nnplug.ShapeError(
            f"softmax_cross_entropy: target of shape {t.shape} does not fit logits {pred.shape}; "
            f"expected labels ({n},) or one-hot rows ({n}, {k})"
        )

    def forward(self, pred: np.ndarray, target: Any) -> tuple[float, Any]:
        if pred.ndim != 2:
            raise nnplug.ShapeError(f"softmax_cross_entropy expects (N, classes) logits, received {pred.shape}")
        onehot = self._onehot(pred, target)
        # Only the target's classes count: elsewhere log_softmax may be -inf (a logit of -inf,
        # or a spread past the dtype's range) and 0 · -inf would be NaN. A logit of +inf
        # still gives NaN, which the executor reports.
        with np.errstate(over="ignore", invalid="ignore"):
            shifted = pred - pred.max(axis=1, keepdims=True)  # log-sum-exp stays finite
            log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            log_softmax = shifted - log_z
            terms = np.multiply(onehot, log_softmax, out=np.zeros_like(log_softmax), where=onehot != 0)
            value = 0.0 - terms.sum() / pred.shape[0]  # 0.0 -: a perfect fit is 0.0, not -0.0
        return float(value), (log_softmax, onehot)

    def backward(self, cache: Any) -> np.ndarray:
        log_softmax, onehot = cache
        return (np.exp(log_softmax) - onehot) / log_softmax.shape[0]

    def example_target(self, pred_shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, pred_shape[1], size=pred_shape[0])

    def accuracy(self, pred: np.ndarray, target: np.ndarray) -> float | None:
        t = np.asarray(target)
        labels = t.argmax(axis=1) if t.ndim == 2 else t
        return float(np.mean(pred.argmax(axis=1) == labels))

    @classmethod
    def gradcheck_cases(cls) -> Any:
        from hypothesis import strategies as st

        from nnplug.testing import Case

        return st.builds(lambda k: Case({}, ((k,),)), st.integers(2, 8))


class MSEConfig(nnplug.LayerConfig):
    type: Literal["mse"] = "mse"


class MSE(nnplug.Loss):
    """L = mean over all elements of (pred − target)², as PyTorch and Keras compute it.

    pred and target: the same shape (N, ...). Gradient: 2 (pred − target) / size.
    """

    Config = MSEConfig

    def forward(self, pred: np.ndarray, target: Any) -> tuple[float, Any]:
        t = np.asarray(target)
        if t.shape != pred.shape:
            raise nnplug.ShapeError(f"mse: target shape {t.shape} differs from prediction shape {pred.shape}")
        if t.dtype.kind not in "fiu":
            raise nnplug.ShapeError(f"mse: target must be numeric, got dtype {t.dtype}")
        diff = pred - t.astype(pred.dtype, copy=False)
        return float(np.mean(diff * diff)), diff

    def backward(self, cache: Any) -> np.ndarray:
        diff = cache
        return diff * (2 / diff.size)

    def example_target(self, pred_shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(pred_shape)

    @classmethod
    def gradcheck_cases(cls) -> Any:
        from hypothesis import strategies as st

        from nnplug.testing import Case, shapes

        return st.builds(lambda s: Case({}, (s,)), shapes(min_dims=1, max_dims=3))
