"""The graph executor: ``Model`` builds a spec (see ``nnplug.build``), initialises the
parameters, and runs forward and backward.

``Model`` owns the parameters as ``params[node][name]``. Layers are called with the
parameters and hand caches back; the executor checks every array a plugin returns (shape,
dtype) so a misbehaving plugin is named at the node where it went wrong.

Every array a plugin is handed is read-only: the model input and the params as views
(:mod:`nnplug.arrays`), a node's output and a summed ``dy`` in place, once the executor owns
them (a flag, ~0.2 µs, where a view costs ~1 µs). A plugin writing into what it was given
then fails at the write, naming its node, instead of corrupting the numbers of every other
node that reads the same array. What the caller is handed back is writable again.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nnplug._returns import checked_gradient, checked_param_grads, loss_value, pair
from nnplug.arrays import loss_target, model_input, model_params, read_only, read_only_params
from nnplug.build import (
    Node,
    build_loss,
    build_nodes,
    check_activations,
    check_budget,
    check_running_total,
    checked_params,
    count_parameters,
    plugin_label,
    unused_nodes,
)
from nnplug.config import INPUT_NAME, ModelSpec, parse_model
from nnplug.errors import ConfigError, NnplugError, NumericalError, PluginError, exception_text
from nnplug.layer import Layer, Loss, Shape
from nnplug.registry import Registry, load_registry
from nnplug.summary import summary_rows, summary_table

Params = dict[str, dict[str, np.ndarray]]


def _plugin_call(node: Node, method: str, *args: Any, **kwargs: Any) -> Any:
    """``node.layer.<method>(...)``; whatever it raises comes back naming the node and plugin."""
    try:
        return getattr(node.layer, method)(*args, **kwargs)
    except NnplugError as exc:
        raise type(exc)(f"{node.describe()}: {exc}") from exc
    except Exception as exc:
        hint = ("; the contract forbids editing inputs, params or dy: return new arrays"
                if isinstance(exc, ValueError) and "read-only" in str(exc) else "")
        raise PluginError(f"{node.describe()}: {method} raised {exception_text(exc)}{hint}") from exc


def _thawed(array: np.ndarray) -> np.ndarray:
    """An array handed back to the caller, theirs to edit: writable again where it owns its
    memory, else a copy (it may view the caller's own input, or another node's output)."""
    if array.base is not None:
        return array.copy()
    array.flags.writeable = True
    return array


def _registry_or_default(registry: Any) -> Registry:
    if registry is None:
        return load_registry()
    if not isinstance(registry, Registry):
        raise ConfigError(f"registry: expected an nnplug.Registry (nnplug.load_registry(...)), "
                          f"got {type(registry).__name__} {registry!r}")
    return registry


class Model:
    """A built, runnable model graph.

    Use :meth:`from_file` or :meth:`from_config`; ``params`` is ``{node: {name: array}}``.
    """

    def __init__(self, spec: ModelSpec, registry: Registry, *, init: bool = True) -> None:
        self.spec = spec
        self.registry = registry
        self.dtype = np.dtype(spec.dtype)
        self.input_shape: Shape = spec.input_shape
        self.nodes: list[Node] = build_nodes(spec, registry)
        self.loss_input = spec.loss.input
        self.loss_plugin = plugin_label(registry, spec.loss.config.type)
        self.loss: Loss = build_loss(spec.loss, self.loss_plugin, self.node(self.loss_input).out_shape)
        #: nodes the loss does not depend on: initialised, but never run nor trained
        self.unused: tuple[str, ...] = unused_nodes(self.nodes, self.loss_input)
        self._run_nodes = [n for n in self.nodes if n.name not in self.unused]
        self._node_names = {n.name for n in self.nodes}
        self._param_views: dict[str, tuple[tuple[tuple[str, np.ndarray], ...], dict[str, np.ndarray]]] = {}
        self._declared = check_budget(self.nodes)  # {node: {param: shape}} where the layers say
        for node in self.nodes:  # a layer keeping the base init_params has none, declared or not:
            # so params handed to it (a relu given {'w': ...}) are refused, not silently ignored
            if self._declared.get(node.name) is None and type(node.layer).init_params is Layer.init_params:
                self._declared[node.name] = {}
        self._counts: dict[str, int] | None = None  # parameter_counts() of a model not initialised
        check_activations(self.nodes)
        self.params: Params = self.init_params(spec.seed) if init else {}

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ModelSpec, registry: Registry | None = None) -> Model:
        """Build from a model description given as a mapping (or an already parsed spec)."""
        registry = _registry_or_default(registry)
        spec = config if isinstance(config, ModelSpec) else parse_model(config, registry)
        return cls(spec, registry)

    @classmethod
    def from_file(cls, path: str | Path, registry: Registry | None = None) -> Model:
        """Build from a YAML, JSON or TOML model file."""
        from nnplug.modelfile import build_model

        if not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"from_file: expected a path to a model file, got {type(path).__name__} {path!r}")
        return build_model(path, _registry_or_default(registry))

    @classmethod
    def from_run(cls, run_dir: str | Path, registry: Registry | None = None) -> Model:
        """The trained model of a run directory (what ``nnplug train`` saves): its model file
        with the last checkpoint's weights, both verified against the manifest's checksums."""
        from nnplug.checkpoint import load_checkpoint

        if not isinstance(run_dir, (str, os.PathLike)):
            raise ConfigError(f"from_run: expected a path to a run directory, got {type(run_dir).__name__} {run_dir!r}")
        return load_checkpoint(run_dir, _registry_or_default(registry), optimizer=False).model

    def init_params(self, seed: int) -> Params:
        """Fresh parameters for every node, each drawn from a generator derived from ``seed``
        and the node's name (so adding a node leaves the others' initial weights unchanged)."""
        params: Params = {}
        total = 0
        for node in self.nodes:
            params[node.name] = self._draw(node, seed)
            total += sum(a.size for a in params[node.name].values())
            check_running_total(node, total)
        return params

    def _draw(self, node: Node, seed: int) -> dict[str, np.ndarray]:
        """One node's parameters from ``seed``, checked and cast into the model's dtype."""
        key = zlib.crc32(node.name.encode())
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))
        try:
            drawn = node.layer.init_params(node.layer_in_shape(), rng)
        except NnplugError:
            raise
        except Exception as exc:
            raise PluginError(f"{node.located}: init_params raised {exception_text(exc)}") from exc
        return checked_params(node, drawn, self._declared.get(node.name), self.dtype)

    # -- running -------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r}; nodes: {', '.join(n.name for n in self.nodes)}")

    def _cast_input(self, x: Any) -> np.ndarray:
        return model_input(x, self.input_shape, self.dtype)

    def _run_params(self, params: Params | None) -> Params:
        """``params`` (default ``self.params``) checked and cast: :func:`nnplug.arrays.model_params`."""
        return model_params(self.params if params is None else params, self.nodes, self._node_names,
                            self._declared, self.dtype)

    def _call_forward(self, node: Node, params: Params, values: Mapping[str, Any],
                      training: bool, batch: int) -> tuple[np.ndarray, Any]:
        x = node.layer_input(values)  # read-only (module docstring)
        result = _plugin_call(node, "forward", self._frozen_params(node, params) if params.get(node.name) else {},
                              x, training=training)
        if type(result) is not tuple or len(result) != 2:  # (inlined: this runs per node and step)
            pair(node.describe, "forward", result, "(y, cache)")
        y, cache = result
        expected = (batch, *node.out_shape)
        if not isinstance(y, np.ndarray) or y.shape != expected:
            got = y.shape if isinstance(y, np.ndarray) else type(y).__name__
            raise PluginError(f"{node.describe()}: forward returned {got}, expected {expected} "
                              f"(output_shape says {node.out_shape})")
        if y.dtype != self.dtype:
            raise PluginError(f"{node.describe()}: forward returned dtype {y.dtype} in a {self.dtype} model")
        y.flags.writeable = False  # the graph's now (module docstring)
        return y, cache

    def _frozen_params(self, node: Node, params: Params) -> dict[str, np.ndarray]:
        """A fresh dict of read-only views of the node's params (see :mod:`nnplug.arrays`); the
        views are made again only when the arrays change, not on every step."""
        own = params.get(node.name)
        if not own:
            return {}
        cached = self._param_views.get(node.name)
        if cached is None or len(cached[0]) != len(own) or not all(own.get(k) is a for k, a in cached[0]):
            cached = self._param_views[node.name] = tuple(own.items()), read_only_params(own)  # by name
        return dict(cached[1])

    def forward(self, x: Any, params: Params | None = None) -> np.ndarray:
        """Inference: the output of the loss's input node (no caches kept)."""
        params = self._run_params(params)
        x = read_only(self._cast_input(x))  # a view: the caller's array stays theirs
        values: dict[str, Any] = {INPUT_NAME: x}
        remaining = self._consumer_counts()
        for node in self._run_nodes:
            values[node.name], _ = self._call_forward(node, params, values, False, len(x))
            for name in node.inputs:  # free what no later node needs
                remaining[name] -= 1
                if remaining[name] == 0 and name != self.loss_input:
                    del values[name]
        return _thawed(values[self.loss_input])

    def _consumer_counts(self) -> dict[str, int]:
        counts = {INPUT_NAME: 0, **{n.name: 0 for n in self._run_nodes}}
        for node in self._run_nodes:
            for name in node.inputs:
                counts[name] += 1
        return counts

    def loss_and_grads(self, x: Any, target: Any, params: Params | None = None) -> tuple[float, Params]:
        """Mean loss over the batch and its gradient for every parameter, as ``params``.

        The gradient with respect to ``x`` is not computed: a layer reading only the input
        gives its parameter gradients alone (:meth:`nnplug.Layer.param_grads`)."""
        loss, grads, _ = self._loss_and_grads(x, target, params, input_grad=False)
        return loss, grads

    def loss_and_all_grads(self, x: Any, target: Any, params: Params | None = None
                           ) -> tuple[float, Params, np.ndarray]:
        """As :meth:`loss_and_grads`, plus the gradient with respect to the input ``x``."""
        return self._loss_and_grads(x, target, params, input_grad=True)

    def _loss_and_grads(self, x: Any, target: Any, params: Params | None, *, input_grad: bool
                        ) -> tuple[float, Params, np.ndarray]:
        params = self._run_params(params)
        x = read_only(self._cast_input(x))  # a view: the caller's array stays theirs
        values: dict[str, Any] = {INPUT_NAME: x}
        caches: dict[str, Any] = {}
        for node in self._run_nodes:
            values[node.name], caches[node.name] = self._call_forward(node, params, values, True, len(x))
        pred = values[self.loss_input]
        loss, loss_cache = self._loss_forward(pred, target)
        if not np.isfinite(loss):
            raise NumericalError(self._first_non_finite(values, target, f"the loss is {loss}"))
        del values
        dpred = self._loss_backward(loss_cache, pred)
        grads_out: dict[str, np.ndarray] = {self.loss_input: dpred}
        owned: set[str] = set()
        param_grads: Params = {}
        for node in reversed(self.nodes):
            if node.name not in grads_out:  # feeds nothing the loss depends on
                param_grads[node.name] = {k: np.zeros_like(v) for k, v in params.get(node.name, {}).items()}
                continue
            dy = grads_out.pop(node.name)
            dy.flags.writeable = False  # every contribution is summed by now (module docstring)
            if not input_grad and all(source == INPUT_NAME for source in node.inputs):
                param_grads[node.name] = self._call_param_grads(node, params, caches.pop(node.name), dy)
                continue
            dxs, grads = self._call_backward(node, params, caches.pop(node.name), dy)
            param_grads[node.name] = grads
            for source, dx in zip(node.inputs, dxs):
                if source not in grads_out:
                    grads_out[source] = dx
                elif source in owned:
                    grads_out[source] += dx
                else:  # never add into an array a layer handed back: it may alias its cache
                    grads_out[source] = grads_out[source] + dx
                    owned.add(source)
        dx_input = _thawed(grads_out.get(INPUT_NAME, np.zeros_like(x)))
        return float(loss), {n.name: param_grads[n.name] for n in self.nodes}, dx_input

    def _loss_forward(self, pred: np.ndarray, target: Any) -> tuple[float, Any]:
        where = f"loss ({self.loss.type_name()}, {self.loss_plugin})"
        handed = loss_target(target, pred.dtype)
        try:
            result = self.loss.forward(pred, handed)
        except NnplugError as exc:
            # the loss names the dtype it received: say where it came from, or a float64 target
            # refused as "got dtype float32" names a dtype the caller never used
            cast = (f" (the target was given as {target.dtype} and cast to the model's {pred.dtype})"
                    if handed is not target else "")
            raise type(exc)(f"{where}: {exc}{cast}") from exc
        except Exception as exc:
            raise PluginError(f"{where}: forward raised {exception_text(exc)}") from exc
        value, cache = pair(where, "forward", result, "(value, cache)")
        return loss_value(where, value), cache

    def _loss_backward(self, cache: Any, pred: np.ndarray) -> np.ndarray:
        where = f"loss ({self.loss.type_name()}, {self.loss_plugin})"
        try:
            dpred = self.loss.backward(cache)
        except Exception as exc:
            raise PluginError(f"{where}: backward raised {exception_text(exc)}") from exc
        if not isinstance(dpred, np.ndarray) or dpred.shape != pred.shape or dpred.dtype != pred.dtype:
            got = (dpred.shape, dpred.dtype) if isinstance(dpred, np.ndarray) else type(dpred).__name__
            raise PluginError(f"{where}: backward returned {got}, expected {(pred.shape, pred.dtype)}")
        return dpred

    def _call_backward(self, node: Node, params: Params, cache: Any, dy: np.ndarray
                       ) -> tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        own = params.get(node.name, {})
        result = _plugin_call(node, "backward", self._frozen_params(node, params) if own else {}, cache, dy)
        if type(result) is not tuple or len(result) != 2:  # (inlined: this runs per node and step)
            pair(node.describe, "backward", result, "(dx, {name: gradient})")
        dx, grads = result
        if node.layer.n_inputs == 1:
            dxs = (dx,)
        elif isinstance(dx, (tuple, list)):
            dxs = tuple(dx)
        else:  # one array for several inputs: not to be split row by row
            raise PluginError(f"{node.describe()}: backward returned {type(dx).__name__} as dx, expected a "
                              f"tuple of {node.layer.n_inputs} input gradients")
        batch = dy.shape[0]
        if len(dxs) != len(node.inputs):
            raise PluginError(f"{node.describe()}: backward returned {len(dxs)} input gradients, "
                              f"expected {len(node.inputs)}")
        for k, (g, shape) in enumerate(zip(dxs, node.in_shapes)):
            checked_gradient(node.describe, "backward", f"input gradient {k}", g, (batch, *shape), self.dtype)
        return dxs, checked_param_grads(node.describe, "backward", grads, own, self.dtype)

    def _call_param_grads(self, node: Node, params: Params, cache: Any, dy: np.ndarray) -> dict[str, np.ndarray]:
        """The parameter gradients of a layer whose input gradient nobody needs."""
        own = params.get(node.name, {})
        if not own:
            return {}
        grads = _plugin_call(node, "param_grads", self._frozen_params(node, params), cache, dy)
        return checked_param_grads(node.describe, "param_grads", grads, own, self.dtype)

    def _first_non_finite(self, values: Mapping[str, Any], target: Any, what: str) -> str:
        """Where a non-finite loss came from: the input, the target, a node, or the loss."""
        if not np.isfinite(values[INPUT_NAME]).all():
            return f"{what}: the model input holds NaN or infinite values"
        target_array = np.asarray(target)
        if target_array.dtype.kind == "f" and not np.isfinite(target_array).all():
            return f"{what}: the target holds NaN or infinite values"
        for node in self.nodes:
            value = values.get(node.name)
            if isinstance(value, np.ndarray) and not np.isfinite(value).all():
                return f"{what}: the first non-finite output is at {node.describe()}"
        return f"{what}: every node's output is finite, so the loss ({self.loss.type_name()}) overflowed"

    # -- inspection ----------------------------------------------------------------------

    def astype(self, dtype: str | np.dtype) -> Model:
        """A copy of this model (same graph, same weights cast) in another dtype."""
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
        if name not in ("float32", "float64"):  # an int model would truncate its weights to zeros
            raise ConfigError(f"astype: a model is float32 or float64, got {name}")
        spec = ModelSpec(**{**self.spec.__dict__, "dtype": name})
        other = Model(spec, self.registry, init=False)
        other.params = {n: {k: v.astype(other.dtype) for k, v in p.items()} for n, p in self.params.items()}
        return other

    def parameter_counts(self) -> dict[str, int]:
        """Each node's parameter count: of its weights once drawn, else from the shapes its
        layer declares (``param_shapes``), drawing only the nodes of layers that declare none
        and checking the budget as :meth:`init_params` does. ``Model(..., init=False)``
        is thus checked and summarised without allocating declared weights."""
        if self.params:
            return {n.name: sum(int(a.size) for a in self.params.get(n.name, {}).values()) for n in self.nodes}
        if self._counts is None:
            self._counts = count_parameters(self.nodes, self._declared, lambda node: self._draw(node, self.spec.seed))
        return dict(self._counts)

    def parameter_count(self) -> int:
        return sum(self.parameter_counts().values())

    def summary_rows(self) -> list[tuple[str, str, str, str, int]]:
        """(node, type, inputs, output shape, parameter count) per node, in execution order."""
        return summary_rows(self)

    def summary(self) -> str:
        """A plain-text table: node, type, inputs, output shape, parameters, and the total
        (and the nodes the loss does not depend on, if any)."""
        return summary_table(self)

    def __getstate__(self) -> dict[str, Any]:
        """For copy.deepcopy and pickle: without the cached read-only views of the params, which
        a copy would turn into arrays of their own, so that the copy's forward passes ignored
        every in-place edit of its params (the views are made again on first use)."""
        return {**self.__dict__, "_param_views": {}}

    def __repr__(self) -> str:
        return f"Model({self.spec.name!r}, {len(self.nodes)} nodes, {self.parameter_count():,} params, {self.dtype})"
