"""Model descriptions: a mapping (from a YAML/JSON/TOML file or Python) -> ``ModelSpec``.

Validation runs in two steps per node: the ``type`` is looked up in the registry, then the
layer's own config model validates the node. Every problem of a description is collected
and reported at once, each line prefixed with its path (``layers[2] (conv2d) -> field``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from nnplug._config_errors import Locator, Problems, format_validation_error
from nnplug._suggest import nearest, unknown_node
from nnplug.data import DataConfig
from nnplug.errors import ConfigError
from nnplug.layer import Layer, LayerConfig, Loss, parse_config
from nnplug.registry import Registry
from nnplug.train import TrainConfig

INPUT_NAME = "input"
#: The loss's row in the summary and its name in messages: no node may take it.
LOSS_NAME = "loss"
TOP_LEVEL_KEYS = ("name", "input", "dtype", "seed", "layers", "loss", "data", "train")
MAX_NODES = 10_000
MAX_INPUT_ELEMENTS = 50_000_000

@dataclass(frozen=True)
class NodeSpec:
    """One validated layer node of a model description."""

    name: str
    cls: type[Layer]
    config: LayerConfig
    inputs: tuple[str, ...]
    where: str  # "layers[2] 'conv1' (conv2d)", how messages name it


@dataclass(frozen=True)
class LossSpec:
    cls: type[Loss]
    config: LayerConfig
    input: str
    where: str


@dataclass
class ModelSpec:
    """A validated model description; ``nnplug.Model`` builds one into a runnable graph."""

    input_shape: tuple[int, ...]
    dtype: Literal["float32", "float64"]
    seed: int
    nodes: list[NodeSpec]
    loss: LossSpec
    data: DataConfig | None = None
    train: TrainConfig | None = None
    name: str = "model"
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


#: What a model's name may not hold: control characters (C0, DEL, C1 such as U+0085), line and
#: paragraph separators, and lone surrogates. Everything else, joiners, no-break spaces and
#: private-use characters included, is text a name may carry.
_CONTROLS_AND_SEPARATORS = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
NAME_FORBIDDEN = re.compile(f"[{_CONTROLS_AND_SEPARATORS}\\ud800-\\udfff]")


def _section(
    model: type[BaseModel], value: Any, key: str, problems: Problems
) -> Any:
    if value is None:
        return None
    try:
        return parse_config(model, value, key)  # type: ignore[arg-type]
    except ConfigError as exc:
        for line in exc.problems:
            problems.add((key,), line)
    except ValidationError as exc:  # pragma: no cover - parse_config converts these
        for line in format_validation_error(exc, key, model):
            problems.add((key,), line)
    return None


_ABSENT: Any = object()  # a section the file does not have


def _input_shape(value: Any, problems: Problems) -> tuple[int, ...] | None:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) >= 1
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    )
    if not ok:
        problems.add(("input",), f"input: expected a list of positive ints such as [1, 8, 8], got {value!r}")
        return None
    total = 1
    for v in value:
        total *= v
    if total > MAX_INPUT_ELEMENTS:
        problems.add(("input",), f"input: {total} elements per example is more than {MAX_INPUT_ELEMENTS}")
        return None
    return tuple(value)


def parse_model(
    data: Any,
    registry: Registry,
    *,
    source: str | None = None,
    locate: Locator | None = None,
) -> ModelSpec:
    """Validate a model description and resolve its node types and inputs.

    Raises:
        ConfigError: with one line per problem found, all of them.
    """
    problems = Problems(locate)
    prefix = f"{source}: " if source else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix}a model description is a mapping, got {type(data).__name__}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            near = nearest(str(key), [k for k in TOP_LEVEL_KEYS if k not in data])  # not one already there
            hint = f"did you mean {near!r}? " if near else ""
            problems.add((key,), f"{key}: unknown section; {hint}expected one of {', '.join(TOP_LEVEL_KEYS)}")
    input_shape = _input_shape(data["input"], problems) if "input" in data else None
    if "input" not in data:
        problems.add((), "input: missing (the shape of one example, e.g. [1, 8, 8])")
    dtype = data.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in ("float32", "float64"):
        problems.add(("dtype",), f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        problems.add(("seed",), f"seed: expected an int from 0 to 2**63 - 1, got {seed!r}")
    name = data.get("name", "model")
    if not isinstance(name, str) or not name or len(name) > 128 or NAME_FORBIDDEN.search(name):
        problems.add(("name",), f"name: expected a non-empty string of at most 128 characters without "
                                f"control characters or line separators, got {name!r}")
    nodes, names = _parse_nodes(data.get("layers", _ABSENT), registry, problems)
    loss = _parse_loss(data.get("loss"), names, registry, problems, written="loss" in data)
    data_section = _section(DataConfig, data.get("data"), "data", problems)
    train_section = _section(TrainConfig, data.get("train"), "train", problems)
    found = problems.lines  # sorted on each read: read once
    if found or input_shape is None or loss is None or nodes is None:
        lines = found or ["the description is incomplete"]
        raise ConfigError(prefix + "\n".join(lines), [prefix + p for p in lines])
    return ModelSpec(
        input_shape=input_shape,
        dtype=dtype,
        seed=seed,
        nodes=nodes,
        loss=loss,
        data=data_section,
        train=train_section,
        name=name,
        source=source,
        raw=dict(data),
    )


def _type_of(raw: Any, path: str, kinds: list[str], registry: Registry, problems: Problems,
             loc: tuple[Any, ...]) -> str | None:
    if not isinstance(raw, Mapping):
        problems.add(loc, f"{path}: expected a mapping with a 'type', got {raw!r}")
        return None
    type_name = raw.get("type")
    if type_name is None:
        problems.add(loc, f"{path}: missing 'type'; available: {', '.join(sorted(kinds))}")
        return None
    if not isinstance(type_name, str) or type_name not in kinds:
        if isinstance(type_name, str) and type_name in registry:
            other = "a loss; put it under 'loss'" if type_name in registry.loss_types() else "a layer, not a loss"
            problems.add(loc, f"{path}: type {type_name!r} is {other}")
        else:
            problems.add(loc, f"{path}: {registry.unknown_type_message(str(type_name), kinds)}")
        return None
    return type_name


def _validated(config_cls: type[LayerConfig], raw: Any, where: str, loc: tuple[Any, ...],
               problems: Problems) -> LayerConfig | None:
    """The node validated by its layer's own config model, or ``None`` with its problems noted."""
    try:
        config: LayerConfig = parse_config(config_cls, raw, where)
    except ConfigError as exc:
        for line in exc.problems:
            problems.add(loc, line)
        return None
    return config


def _parse_nodes(raw_layers: Any, registry: Registry, problems: Problems
                 ) -> tuple[list[NodeSpec] | None, list[str]]:
    """The nodes (``None`` if any has a problem) and every node name that could be read. A node
    whose type or fields are wrong still lends its name and inputs to the checks of the
    others, so that one run reports every problem of the file."""
    if raw_layers is _ABSENT:  # not "got None": the file has no layers key at all
        problems.add((), "layers: missing (the list of nodes, e.g. [{type: flatten}, {type: dense, units: 10}])")
        return None, []
    if not isinstance(raw_layers, list) or not raw_layers:
        problems.add(("layers",), f"layers: expected a non-empty list of nodes, got {raw_layers!r}")
        return None, []
    if len(raw_layers) > MAX_NODES:
        problems.add(("layers",), f"layers: {len(raw_layers)} nodes is more than {MAX_NODES}")
        return None, []
    kinds = registry.layer_types()
    drafts: list[_Draft] = []
    seen: dict[str, str] = {INPUT_NAME: "the model input"}
    ok = True
    for i, raw in enumerate(raw_layers):
        path = f"layers[{i}]"
        type_name = _type_of(raw, path, kinds, registry, problems, ("layers", i))
        # _type_of admits layer types only, so the class is a Layer
        cls = cast("type[Layer] | None", registry.get(type_name) if type_name is not None else None)
        config = None if cls is None else _validated(cls.Config, raw, f"{path} ({type_name})", ("layers", i), problems)
        ok = ok and config is not None
        draft = _Draft.read(i, raw, cls, config)
        where = f"{path} ({type_name})" if type_name else path
        if draft.named and draft.name == LOSS_NAME:
            ok = False
            problems.add(("layers", i), f"{where} -> name: {LOSS_NAME!r} is reserved for the model's loss "
                                        "(its row in the summary); give the node another name")
        if draft.name not in seen:
            seen[draft.name] = path
        elif config is not None or draft.named:  # a broken node's stand-in name clashes with nothing
            ok = False
            problems.add(("layers", i), f"{where} -> name: {draft.name!r} is already used by {seen[draft.name]}"
                         if draft.named else f"{where}: its default name {draft.name!r} is already used by "
                                             f"{seen[draft.name]}; give one of them another name")
        drafts.append(draft)
    nodes = []
    previous = INPUT_NAME
    known, unknown = sorted(seen), 0  # a 10,000-node file may name many unknown inputs: bounded work
    for draft in drafts:
        inputs = draft.inputs if draft.inputs != () else (previous,)
        previous = draft.name
        if inputs is None:  # unreadable: its own validation has said why
            continue
        where = f"layers[{draft.index}] {draft.name!r} ({draft.type_name})"
        for ref in inputs:
            if ref not in seen:
                unknown += 1
                own = draft.name if seen[draft.name] == f"layers[{draft.index}]" else ""  # not a duplicate's
                problems.add(("layers", draft.index),
                             f"{where} -> inputs: {unknown_node(ref, own, known, unknown <= 20)}")
                ok = False
        if draft.cls is not None and len(inputs) != draft.cls.n_inputs:
            # without `inputs` a node reads the one before it: say so, or "got 1" puzzles
            got = (f"none listed, so only the node before it ({inputs[0]!r}); name them in inputs: [...]"
                   if draft.inputs == () else str(len(inputs)))
            problems.add(("layers", draft.index), f"{where} -> inputs: {draft.type_name} takes "
                                                  f"{draft.cls.n_inputs} input(s), got {got}")
            ok = False
        if draft.config is not None:
            nodes.append(NodeSpec(draft.name, draft.cls, draft.config, inputs, where))  # type: ignore[arg-type]
    return (nodes if ok else None), list(seen)[1:]


@dataclass(frozen=True)
class _Draft:
    """A node as far as it could be read: its config when valid, else what its raw mapping
    says of its name and inputs."""

    index: int
    name: str
    named: bool  # the file gave the name (not the default ``type_index``)
    type_name: str
    cls: type[Layer] | None
    config: LayerConfig | None
    inputs: tuple[str, ...] | None  # () the node before; None unreadable

    @classmethod
    def read(cls, i: int, raw: Any, layer: type[Layer] | None, config: LayerConfig | None) -> _Draft:
        fields = raw if isinstance(raw, Mapping) else {}
        type_name = str(fields.get("type", "node"))
        name: Any = config.name if config is not None else fields.get("name")
        listed: Any = config.inputs if config is not None else fields.get("inputs")
        inputs: tuple[str, ...] | None = ()
        if listed is not None:
            readable = isinstance(listed, (list, tuple)) and listed and all(isinstance(r, str) for r in listed)
            inputs = tuple(listed) if readable else None
        named = isinstance(name, str) and bool(name)
        return cls(i, name if named else f"{type_name}_{i}", named, type_name, layer, config, inputs)


def _parse_loss(raw: Any, names: list[str], registry: Registry, problems: Problems, *,
                written: bool = True) -> LossSpec | None:
    """The loss, its ``inputs`` checked against every node name that could be read."""
    if raw is None:
        what = "null, expected a mapping such as {type: mse}" if written else "missing"
        problems.add(("loss",) if written else (), f"loss: {what}; available: "
                     f"{', '.join(sorted(registry.loss_types()))}")
        return None
    type_name = _type_of(raw, "loss", registry.loss_types(), registry, problems, ("loss",))
    if type_name is None:
        return None
    where = f"loss ({type_name})"
    cls = registry.get(type_name)
    config = _validated(cls.Config, raw, where, ("loss",), problems)
    if config is None:
        return None
    if not names:
        return None
    if config.inputs is None:
        target = names[-1]
    elif len(config.inputs) != 1:
        problems.add(("loss",), f"{where} -> inputs: the loss reads one node, such as [{names[-1]}], "
                                f"got {list(config.inputs)}")
        return None
    elif config.inputs[0] not in names:
        # As a node's unknown input is told: the nearest name, and a list cut short (a model of
        # hundreds of nodes would otherwise print every name on one line).
        problems.add(("loss",), f"{where} -> inputs: {unknown_node(config.inputs[0], '', names, True)}")
        return None
    else:
        target = config.inputs[0]
    return LossSpec(cls, config, target, where)  # type: ignore[arg-type]


def model_json_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of model files for the types registered in ``registry``.

    ``layers`` items and ``loss`` are discriminated unions on ``type`` assembled from the
    registered config classes, so an installed third-party layer is part of the schema.
    """
    from pydantic import Field, TypeAdapter, create_model

    def union(classes: list[type[LayerConfig]]) -> Any:
        if len(classes) == 1:
            return classes[0]
        return Annotated[Union[tuple(classes)], Field(discriminator="type")]  # noqa: UP007

    layer_types, loss_types = sorted(registry.layer_types()), sorted(registry.loss_types())
    layers = [registry.get(t).Config for t in layer_types]
    losses = [registry.get(t).Config for t in loss_types]
    if not layers or not losses:
        # say why, as every other command does: autoload off is the likely cause, not a fault
        why = f" ({registry.not_autoloaded})" if registry.not_autoloaded else ""
        raise ConfigError(f"no layer or loss types are registered{why}; check `nnplug plugins`")
    # (type, default) per top-level key, built at run time: typed Any, since the unions are
    # assembled from the registry (and pydantic's stubs for create_model vary by version)
    list_of: Any = list  # list[...] of a union made at run time
    fields: dict[str, Any] = {
        "name": (str, Field("model", min_length=1, max_length=128, pattern=f"^[^{_CONTROLS_AND_SEPARATORS}]*$")),
        "input": (list[Annotated[int, Field(ge=1)]], Field(..., min_length=1,
                                                           description="one example's shape, no batch axis")),
        "dtype": (Literal["float32", "float64"], "float32"),
        "seed": (int, Field(0, ge=0, lt=2**63)),
        "layers": (list_of[union(layers)], Field(..., min_length=1)),
        "loss": (union(losses), ...),
        "data": (DataConfig | None, None),
        "train": (TrainConfig | None, None),
    }
    model = create_model("ModelFile", __config__=ConfigDict(extra="forbid", title="nnplug model file"), **fields)
    schema = TypeAdapter(model).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    arity = {t: cast(type[Layer], registry.get(t)).n_inputs for t in layer_types} | {t: 1 for t in loss_types}
    _pin_type_and_inputs(schema, schema["properties"]["layers"]["items"], layer_types, arity,
                         reserved=(INPUT_NAME, LOSS_NAME))
    _pin_type_and_inputs(schema, schema["properties"]["loss"], loss_types, arity)
    return schema


def _pin_type_and_inputs(schema: dict[str, Any], union: dict[str, Any], types: list[str],
                         arity: dict[str, int], *, reserved: tuple[str, ...] = ()) -> None:
    """Make each node schema of ``union`` say what the loader checks: ``type`` is required (its
    default only names the class; a node without one is refused), ``inputs`` names exactly
    as many nodes as the type takes (the loss: one; a type taking several must name them), and
    ``name`` is none of ``reserved`` (the model input's and the loss's names)."""
    refs = union["discriminator"]["mapping"] if "discriminator" in union else {types[0]: union["$ref"]}
    for type_name, ref in refs.items():
        node, n = schema["$defs"][ref.rsplit("/", 1)[-1]], arity[type_name]
        required = [r for r in node.get("required", []) if r not in ("type", "inputs")]
        inputs = node["properties"]["inputs"]
        names = next(option for option in inputs["anyOf"] if option.get("type") == "array")
        names["minItems"] = names["maxItems"] = n
        if n > 1:  # the default, the node before, is one input: too few
            node["properties"]["inputs"] = {**names, "title": inputs.get("title", "Inputs")}
        node["required"] = ["type", *(["inputs"] if n > 1 else []), *required]
        name = node["properties"].get("name", {})
        for option in name.get("anyOf", [name]) if reserved else []:  # (a plugin may retype name)
            if option.get("type") == "string":
                option["not"] = {"enum": list(reserved)}
