"""Building a model graph: topological order, shape inference, the parameter budget and
the parameter counts.

Everything here but :func:`checked_params` runs before a single weight is allocated, so a
model can be checked and summarised cheaply; only a layer that declares no ``param_shapes``
is drawn to be counted.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnplug.config import INPUT_NAME, LossSpec, ModelSpec, NodeSpec
from nnplug.errors import ConfigError, NnplugError, PluginError, ShapeError, exception_text
from nnplug.layer import Layer, Loss, Shape, as_output_shape
from nnplug.registry import Registry

MAX_PARAMETERS = 200_000_000  # a budget checked before any weight is allocated
MAX_ACTIVATION = 2**31  # values in one example's output of a node (8 GiB in float32)


@dataclass
class Node:
    """A built node: its layer, where its inputs come from, and the shapes it maps."""

    name: str
    layer: Layer
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    where: str
    plugin: str

    @property
    def type(self) -> str:
        return self.layer.type_name()

    def layer_input(self, values: Mapping[str, Any]) -> Any:
        """The single array, or the tuple of arrays, this node's layer takes."""
        arrays = tuple(values[name] for name in self.inputs)
        return arrays if self.layer.n_inputs > 1 else arrays[0]

    def layer_in_shape(self) -> Any:
        return self.in_shapes if self.layer.n_inputs > 1 else self.in_shapes[0]

    def describe(self) -> str:
        """How run-time messages name the node: ``node 'conv1' (conv2d, plugin nnplug)``."""
        return f"node {self.name!r} ({self.type}, {self.plugin})"

    @property
    def located(self) -> str:
        """How build-time messages name the node, by its place in the model file."""
        return located(self.where, self.plugin)


def located(where: str, plugin: str) -> str:
    """``layers[2] 'conv1' (conv2d)`` and ``plugin X`` -> ``layers[2] 'conv1' (conv2d, plugin X)``."""
    return f"{where[:-1]}, {plugin})" if where.endswith(")") else f"{where} ({plugin})"


def topological_order(spec: ModelSpec) -> list[NodeSpec]:
    """The nodes in file order, except that a node comes after every node it reads: Kahn's
    algorithm always placing the earliest ready node of the file, so a file already in order
    keeps it. A cycle is refused naming the nodes on it. O((nodes + edges) log nodes)."""
    position = {n.name: k for k, n in enumerate(spec.nodes)}
    waiting = [sum(i != INPUT_NAME for i in n.inputs) for n in spec.nodes]  # unmet inputs
    readers: dict[str, list[int]] = {}
    for k, node in enumerate(spec.nodes):
        for i in node.inputs:
            if i != INPUT_NAME:
                readers.setdefault(i, []).append(k)
    ready = [k for k, unmet in enumerate(waiting) if unmet == 0]
    heapq.heapify(ready)
    order: list[NodeSpec] = []
    while ready:
        node = spec.nodes[heapq.heappop(ready)]
        order.append(node)
        for reader in readers.get(node.name, ()):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    if len(order) < len(spec.nodes):
        placed = {n.name for n in order}
        by_name = {n.name: n for n in spec.nodes}
        cycle = _find_cycle([n for n in spec.nodes if n.name not in placed], by_name)
        first = min(cycle, key=position.__getitem__)
        start = cycle.index(first)
        loop = [*cycle[start:-1], *cycle[:start], first]  # from the earliest node in the file
        shown = loop if len(loop) <= 12 else [*loop[:6], f"... {len(loop) - 11} more ...", *loop[-5:]]
        raise ConfigError(f"{by_name[first].where}: is on a cycle of inputs: {' -> '.join(shown)} "
                          "(each feeds the next); a node must not depend on its own output")
    return order


def _find_cycle(pending: list[NodeSpec], by_name: dict[str, NodeSpec]) -> list[str]:
    """A cycle among ``pending`` (nodes each waiting on another pending node), in the
    direction data flows, its first node repeated at the end."""
    names = {p.name for p in pending}
    path: list[str] = []
    current = pending[0].name
    while current not in path:
        path.append(current)
        current = next(i for i in by_name[current].inputs if i in names)  # walks against the flow
    return [*path[path.index(current):], current][::-1]


def plugin_label(registry: Registry, type_name: str) -> str:
    info = registry.plugin_of(type_name)
    return f"plugin {info.name!r}" if info.distribution == "-" else f"plugin {info.distribution}"


def build_loss(loss_spec: LossSpec, plugin: str, pred_shape: Shape) -> Loss:
    """The loss, created and asked whether it takes ``pred_shape``; a loss plugin that breaks
    (raises anything but a ShapeError) is named like a layer's, not left as a traceback."""
    try:
        loss = loss_spec.cls(loss_spec.config)
    except NnplugError:
        raise
    except Exception as exc:
        raise PluginError(f"{located(loss_spec.where, plugin)}: creating the loss raised "
                          f"{exception_text(exc)}") from exc
    try:
        loss.check_pred_shape(pred_shape)
    except ShapeError as exc:
        raise ShapeError(f"{loss_spec.where}: {exc} (input from node {loss_spec.input!r})") from None
    except NnplugError:
        raise
    except Exception as exc:
        raise PluginError(f"{located(loss_spec.where, plugin)}: check_pred_shape raised {exception_text(exc)}; "
                          f"received {pred_shape} from {loss_spec.input!r}") from exc
    return loss


def build_nodes(spec: ModelSpec, registry: Registry) -> list[Node]:
    """Layers in topological order with every input and output shape inferred, before any
    weight exists; a shape that does not fit names the node and where its input came from.
    Every node whose inputs have shapes is tried, so a file's shape errors (one per branch)
    are reported at once, one line each."""
    shapes: dict[str, Shape] = {INPUT_NAME: spec.input_shape}
    nodes: list[Node] = []
    misfits: list[str] = []
    try:
        _infer(topological_order(spec), registry, shapes, nodes, misfits)
    except NnplugError as exc:  # a plugin that broke: reported after the misfits found before it
        if not misfits:
            raise
        raise type(exc)("\n".join([*misfits, str(exc)])) from exc
    if misfits:
        raise ShapeError("\n".join(misfits))
    return nodes


def _infer(order: list[NodeSpec], registry: Registry, shapes: dict[str, Shape], nodes: list[Node],
           misfits: list[str]) -> None:
    """:func:`build_nodes`' loop: appends each node that fits to ``nodes`` (its shape to
    ``shapes``) and each that does not to ``misfits``; a plugin that breaks raises."""
    for node_spec in order:
        if any(i not in shapes for i in node_spec.inputs):
            continue  # reads a node that did not fit: its own shape is unknown, not wrong
        plugin = plugin_label(registry, node_spec.config.type)
        try:
            layer = node_spec.cls(node_spec.config)
        except NnplugError:
            raise
        except Exception as exc:  # a plugin's __init__ that breaks: name it, not a traceback
            raise PluginError(f"{located(node_spec.where, plugin)}: creating the layer raised "
                              f"{exception_text(exc)}") from exc
        in_shapes = tuple(shapes[i] for i in node_spec.inputs)
        in_shape: Any = in_shapes if layer.n_inputs > 1 else in_shapes[0]
        received = ", ".join(f"{s} from {i!r}" for s, i in zip(in_shapes, node_spec.inputs))
        try:
            out = layer.output_shape(in_shape)
        except ShapeError as exc:
            # where the input came from (and its shape, unless the layer's message said it);
            # several inputs are each paired with their shape
            origin = f"inputs: {received}" if len(in_shapes) > 1 else f"received {received}"
            if len(in_shapes) == 1 and str(in_shapes[0]) in str(exc):
                origin = f"input from {node_spec.inputs[0]!r}"
            misfits.append(f"{node_spec.where}: {exc}; {origin}")
            continue
        except NnplugError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{located(node_spec.where, plugin)}: output_shape raised "
                f"{exception_text(exc)}; received {received}"
            ) from exc
        shape = as_output_shape(out)  # a list is taken as the tuple it means
        if shape is None:
            raise ShapeError(
                f"{located(node_spec.where, plugin)}: output_shape returned {out!r} for {received}; "
                "expected a non-empty tuple of positive ints"
            )
        shapes[node_spec.name] = shape
        nodes.append(Node(node_spec.name, layer, node_spec.inputs, in_shapes,
                          shapes[node_spec.name], node_spec.where, plugin))

def unused_nodes(nodes: list[Node], loss_input: str) -> tuple[str, ...]:
    """The nodes the loss does not depend on (no path from them to the loss's input node), in
    order: the model never runs nor trains them."""
    inputs_of = {n.name: n.inputs for n in nodes}
    needed, stack = {loss_input}, [loss_input]
    while stack:
        for source in inputs_of.get(stack.pop(), ()):
            if source not in needed:
                needed.add(source)
                stack.append(source)
    return tuple(n.name for n in nodes if n.name not in needed)


def check_budget(nodes: list[Node]) -> dict[str, dict[str, Shape] | None]:
    """Refuse a model whose parameters (counted from ``param_shapes``) exceed the budget;
    returns each node's declared parameter shapes (``None`` where the layer does not say).

    A layer that does not declare ``param_shapes`` counts as none here; its parameters are
    counted as ``init_params`` returns them (:func:`check_running_total`)."""
    total, largest, where, undeclared = 0, 0, "", 0
    declared: dict[str, dict[str, Shape] | None] = {}
    upstream: list[Node] = []  # the nodes before the first whose own parameters pass the budget
    passed_budget = False
    for node in nodes:
        try:
            shapes = node.layer.param_shapes(node.layer_in_shape())
            # exact Python ints: int64 products wrap past 2**63 and would let a huge layer through
            count = sum(math.prod(int(d) for d in s) for s in shapes.values()) if shapes else 0
            declared[node.name] = None if shapes is None else {
                str(k): tuple(int(d) for d in s) for k, s in shapes.items()}
        except Exception as exc:
            raise PluginError(f"{node.located}: param_shapes raised {exception_text(exc)}") from exc
        # A layer keeping the base init_params has no parameters: known without param_shapes.
        undeclared += shapes is None and type(node.layer).init_params is not Layer.init_params
        if shapes:
            total += count
            if count > largest:
                largest, where = count, node.where
        passed_budget = passed_budget or count > MAX_PARAMETERS
        if not passed_budget:
            upstream.append(node)
    if total > MAX_PARAMETERS:
        # A node with few parameters but a huge output (a padding of 10**5) swells the node
        # after it: blame that output, not the dense layer that reads it.
        check_activations(upstream)
        at_least = f"at least {total:,} parameters ({undeclared} node(s) declare no param_shapes)" \
            if undeclared else f"{total:,} parameters"
        raise ShapeError(
            f"{where}: the model would have {at_least}, more than the budget of "
            f"{MAX_PARAMETERS:,} ({largest:,} in this node); reduce the sizes in this node's config"
        )
    return declared


def check_activations(nodes: list[Node]) -> None:
    """Refuse a node whose output for one example passes :data:`MAX_ACTIVATION` values (a
    padding of 10**6 builds outputs of terabytes with a handful of parameters)."""
    for node in nodes:
        per_example = math.prod(node.out_shape)
        if per_example > MAX_ACTIVATION:
            raise ShapeError(f"{node.where}: its output {node.out_shape} holds {per_example:,} values per "
                             f"example, more than {MAX_ACTIVATION:,}; reduce its padding, size or filters")


def check_running_total(node: Node, total: int) -> None:
    """Called after each node's ``init_params`` with the parameters drawn so far: the budget
    for layers whose ``param_shapes`` could not say in advance."""
    if total > MAX_PARAMETERS:
        raise ShapeError(
            f"{node.where}: the model has {total:,} parameters once this node's init_params has "
            f"run, more than the budget of {MAX_PARAMETERS:,}; reduce its size (declaring "
            "param_shapes in the plugin lets this be refused before any weight is drawn)"
        )


def count_parameters(nodes: list[Node], declared: Mapping[str, dict[str, Shape] | None],
                     draw: Callable[[Node], Mapping[str, np.ndarray]]) -> dict[str, int]:
    """Each node's parameter count from its declared shapes (:func:`check_budget`), without
    allocating them; a node whose layer declares no ``param_shapes`` (but draws some in
    ``init_params``) is drawn with ``draw`` to be counted, and the running total checked
    against the budget as ``init_params`` checks it."""
    counts: dict[str, int] = {}
    total = 0
    for node in nodes:
        shapes = declared.get(node.name)
        if shapes is not None:
            count = sum(math.prod(s) for s in shapes.values())
        elif type(node.layer).init_params is Layer.init_params:  # the base: no parameters
            count = 0
        else:
            count = sum(int(a.size) for a in draw(node).values())
        counts[node.name] = count
        total += count
        check_running_total(node, total)
    return counts


def checked_params(node: Node, drawn: Any, expected: dict[str, Shape] | None,
                   dtype: np.dtype) -> dict[str, np.ndarray]:
    """What a node's ``init_params`` returned, cast once into the model's ``dtype``; a plugin
    returning something else than ``param_shapes`` declared, or non-finite values, is named."""
    if not isinstance(drawn, Mapping):
        raise PluginError(f"{node.located}: init_params returned {type(drawn).__name__}, expected a dict")
    out = {}
    for name, value in drawn.items():
        if not isinstance(name, str) or "/" in name or not name:
            raise PluginError(f"{node.located}: parameter name {name!r} is not a plain name")
        try:
            array = np.array(value, dtype=dtype)  # the one cast, into the model's dtype
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{node.located}: init_params gave {name} a value that is not "
                              f"an array of numbers ({exception_text(exc)})") from exc
        if expected is not None and name in expected and array.shape != tuple(expected[name]):
            raise PluginError(f"{node.located}: init_params gave {name} the shape "
                              f"{array.shape}, but param_shapes says {tuple(expected[name])}")
        if not np.isfinite(array).all():  # training would stop at the first batch, blaming the data
            raise PluginError(f"{node.located}: init_params drew non-finite values for {name}")
        out[name] = array
    if expected is not None and set(out) != set(expected):
        raise PluginError(f"{node.located}: init_params returned {sorted(out)}, but param_shapes "
                          f"declares {sorted(expected)}")
    return out
