"""Optimizers: SGD (momentum, Nesterov) and Adam, with L2 weight decay.

An optimizer updates ``params[node][name]`` in place from gradients of the same nesting.
Its state (velocities, moments, the step count) is a flat ``{"node/param/slot": array}``
mapping plus ``step``, so a checkpoint restores it exactly and a resumed run takes the
same steps an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nnplug.errors import ConfigError

Params = dict[str, dict[str, np.ndarray]]

_SGD_ONLY = ("momentum", "nesterov")
_ADAM_ONLY = ("beta1", "beta2", "eps")


class OptimizerConfig(BaseModel):
    """The ``train.optimizer`` section: ``type`` (sgd or adam), ``lr`` and the type's knobs.

    ``lr`` defaults to 0.01 for SGD and 0.001 for Adam. ``weight_decay`` adds
    ``weight_decay * w`` to every gradient (L2, as PyTorch's ``weight_decay``).
    """

    # The schema states the cross-field rules of _fields_fit_type too (JSON Schema's if/then).
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False, json_schema_extra={
        "allOf": [
            {"if": {"properties": {"type": {"const": "sgd"}}, "required": ["type"]},
             "then": {"not": {"anyOf": [{"required": [key]} for key in _ADAM_ONLY]}},
             "else": {"not": {"anyOf": [{"required": [key]} for key in _SGD_ONLY]}}},
            {"if": {"properties": {"nesterov": {"const": True}}, "required": ["nesterov"]},
             "then": {"properties": {"momentum": {"exclusiveMinimum": 0}}, "required": ["momentum"]}},
        ]})

    type: Literal["sgd", "adam"] = "adam"
    lr: float | None = Field(None, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)

    @model_validator(mode="after")
    def _fields_fit_type(self) -> OptimizerConfig:
        wrong = _ADAM_ONLY if self.type == "sgd" else _SGD_ONLY
        given = sorted(set(wrong) & self.model_fields_set)
        if given:
            other = "sgd" if self.type == "adam" else "adam"
            raise ValueError(f"{' and '.join(given)}: {other} settings, which {self.type} does not take")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum > 0")
        return self

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.01 if self.type == "sgd" else 0.001


class Optimizer:
    """Base: applies weight decay, counts steps, keeps named state slots per parameter."""

    slots: tuple[str, ...] = ()

    def __init__(self, config: OptimizerConfig, params: Params) -> None:
        self.config = config
        self.lr = config.learning_rate
        self.step_count = 0
        self.state: dict[str, np.ndarray] = {
            f"{node}/{name}/{slot}": np.zeros_like(value)
            for node, group in params.items()
            for name, value in group.items()
            for slot in self.slots
        }

    def step(self, params: Params, grads: Params) -> None:
        """One update of every parameter in place."""
        self.step_count += 1
        for node, group in params.items():
            for name, w in group.items():
                g = grads[node][name]
                if self.config.weight_decay:
                    g = g + w.dtype.type(self.config.weight_decay) * w
                self._update(f"{node}/{name}", w, g)

    def _update(self, key: str, w: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, scalars): what a checkpoint stores."""
        return dict(self.state), {"type": self.config.type, "step": self.step_count}

    def load_state_dict(self, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
        """Restore saved state; refuses state that does not fit these parameters."""
        if scalars.get("type") != self.config.type:
            raise ConfigError(f"optimizer state is for {scalars.get('type')!r}, "
                              f"but the model file asks for {self.config.type!r}")
        missing = sorted(set(self.state) - set(arrays))
        extra = sorted(set(arrays) - set(self.state))
        if missing or extra:
            raise ConfigError(f"optimizer state does not fit the model: missing {missing[:5]}, "
                              f"unexpected {extra[:5]}")
        for key, value in arrays.items():
            if value.shape != self.state[key].shape:
                raise ConfigError(f"optimizer state {key}: shape {value.shape}, "
                                  f"expected {self.state[key].shape}")
            self.state[key] = value.astype(self.state[key].dtype)
        step = scalars.get("step")
        if not isinstance(step, int) or step < 0:
            raise ConfigError(f"optimizer state: step must be a non-negative int, got {step!r}")
        self.step_count = step


class SGD(Optimizer):
    """v ← μ v + g;  w ← w − lr (g + μ v) with Nesterov, else w ← w − lr v (PyTorch's form)."""

    def __init__(self, config: OptimizerConfig, params: Params) -> None:
        self.slots = ("velocity",) if config.momentum else ()
        super().__init__(config, params)

    def _update(self, key: str, w: np.ndarray, g: np.ndarray) -> None:
        lr = w.dtype.type(self.lr)  # a numpy scalar of the model's dtype: float32 stays float32
        mu = w.dtype.type(self.config.momentum)
        if not self.config.momentum:
            w -= lr * g
            return
        v = self.state[f"{key}/velocity"]
        v *= mu
        v += g
        w -= lr * (g + mu * v) if self.config.nesterov else lr * v


class Adam(Optimizer):
    """m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;
    w ← w − lr m̂ / (√v̂ + ε) with m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)."""

    slots = ("m", "v")

    def _update(self, key: str, w: np.ndarray, g: np.ndarray) -> None:
        c = self.config
        t = self.step_count
        kind = w.dtype.type
        m = self.state[f"{key}/m"]
        v = self.state[f"{key}/v"]
        m *= kind(c.beta1)
        m += kind(1 - c.beta1) * g
        v *= kind(c.beta2)
        v += kind(1 - c.beta2) * (g * g)
        # Bias corrections folded into the step size, as in the Adam paper's section 2.
        step = kind(self.lr * np.sqrt(1 - c.beta2**t) / (1 - c.beta1**t))
        eps = kind(c.eps * np.sqrt(1 - c.beta2**t))
        w -= step * m / (np.sqrt(v) + eps)


def make_optimizer(config: OptimizerConfig, params: Params) -> Optimizer:
    """The optimizer ``config`` names, with fresh state for ``params``."""
    return SGD(config, params) if config.type == "sgd" else Adam(config, params)
