"""The layer and loss contract: ``LayerConfig``, ``Layer`` and ``Loss``.

A layer holds its validated configuration and nothing else. Parameters belong to the graph
and are passed in; whatever ``backward`` needs travels in the cache that ``forward``
returns. Shapes given to ``output_shape``/``init_params`` exclude the batch axis; arrays
given to ``forward``/``backward`` carry it first. :func:`contract_problem` says why a class
cannot be registered (the registry asks it of every class a plugin hands over).
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from nnplug._config_errors import format_validation_error, ignored_names, nested_models
from nnplug.errors import ConfigError, PluginError, exception_text

Shape = tuple[int, ...]
Params = dict[str, np.ndarray]

#: Node names key the weights file as ``node/param``, so they are plain identifiers.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"


class LayerConfig(BaseModel):
    """Base of every layer's and loss's configuration.

    Subclasses set ``type: Literal["name"] = "name"``. Configs are frozen, forbid unknown
    keys and validate strictly, as a JSON document would be: ``"3"`` is not 3, ``true`` is
    not 1, NaN and infinities are not numbers, and arrays fill tuples. That is how
    ``Layer(dict)``, :func:`parse_config` and model files validate; calling the class
    directly (``Conv2DConfig(kernel_size=(3, 3))``) is pydantic's strict Python mode, where a
    pair must be a tuple, not a list.

    ``name`` and ``inputs`` place the layer in a model graph; layers themselves ignore them.
    """

    model_config = ConfigDict(
        strict=True, frozen=True, extra="forbid", allow_inf_nan=False, validate_default=True
    )

    type: str
    name: str | None = Field(None, pattern=NAME_PATTERN, max_length=128)
    inputs: tuple[str, ...] | None = Field(None, min_length=1)

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs_listed(cls, value: Any) -> Any:
        if isinstance(value, str):  # pydantic would say only "Input should be a valid array"
            raise ValueError(f"expected a list of node names, such as [{value}], not a string")
        if isinstance(value, (list, tuple)) and not value:  # pydantic would say "Tuple ... (got ())"
            raise ValueError("expected at least one node name; leave inputs out to read the node before")
        return tuple(value) if isinstance(value, list) else value  # a JSON array, as strict mode takes it


@lru_cache(maxsize=1024)  # read on every error message and summary; classes do not change
def type_name_of(config_cls: type[LayerConfig]) -> str | None:
    """The registered type name of a config class: the single value of its ``type`` Literal."""
    field = config_cls.model_fields.get("type")
    if field is None:
        return None
    annotation = field.annotation
    if typing.get_origin(annotation) is not Literal:
        return None
    values = typing.get_args(annotation)
    if len(values) != 1 or not isinstance(values[0], str) or field.default != values[0]:
        return None
    return values[0]


def loosened_config(config_cls: type[BaseModel]) -> str | None:
    """Why ``config_cls`` (a plugin's Config) does not keep the contract's config rules, or
    None: unknown keys refused and configs frozen, in it and in any model nested in its
    fields (whose unknown keys pydantic would otherwise drop without a word)."""
    own = config_cls.model_config
    relaxed = [f"{key}={own.get(key)!r}" for key, want in (("extra", "forbid"), ("frozen", True))
               if own.get(key) != want]
    if relaxed:
        return (f"Config sets {', '.join(relaxed)}; a node's unknown keys are refused and configs are "
                "frozen: keep nnplug.LayerConfig's model_config")
    return _loosened_nested(config_cls, (), set())


def _loosened_nested(model: type[BaseModel], path: tuple[str, ...], seen: set[type]) -> str | None:
    """:func:`loosened_config` for the models nested in ``model``'s fields, at any depth."""
    for name, field in model.model_fields.items():
        for nested in nested_models(field.annotation):
            if nested in seen:
                continue
            seen.add(nested)
            settings = nested.model_config
            where = ".".join((*path, name))
            if settings.get("extra") != "forbid" or not settings.get("frozen"):
                return (f"Config field {where!r} holds {nested.__qualname__}, which must set "
                        "model_config = ConfigDict(extra='forbid', frozen=True): its unknown keys "
                        "would be dropped silently and the frozen config could be changed through it")
            deeper = _loosened_nested(nested, (*path, name), seen)
            if deeper:
                return deeper
    return None


def _broken_defaults(config_cls: type[LayerConfig], data: Mapping[str, Any], exc: ValidationError) -> list[str]:
    """The fields the node leaves out whose own defaults fail validation (the plugin's bug),
    also when validated beside nothing but the fields that must be given: a validator that
    reads another field fails on a default only because of the user's value there."""
    left_out = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"] and e["type"] != "missing"
                       and e["loc"][0] in config_cls.model_fields and e["loc"][0] not in data})
    if not left_out:
        return []
    required = {k: v for k, v in data.items() if k == "type" or (
        k in config_cls.model_fields and config_cls.model_fields[k].is_required())}
    try:
        config_cls.model_validate_json(json.dumps(required, default=_jsonable), strict=True)
    except ValidationError as alone:
        return sorted({str(e["loc"][0]) for e in alone.errors() if e["loc"] and e["loc"][0] in left_out})
    except (TypeError, ValueError):
        return []
    return []


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays become plain values; anything else is left for JSON to refuse."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not a configuration value")


def _not_a_config_value(data: Any, path: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(field path, why) of the first value JSON cannot carry into validation (a YAML date or
    set, a TOML datetime, text with a lone surrogate), or None when there is none."""
    if isinstance(data, str):
        if any("\ud800" <= ch <= "\udfff" for ch in data):
            return ".".join(path) or "(config)", f"text with a lone surrogate ({data!r}) is not valid text"
        return None
    if data is None or isinstance(data, (bool, int, float, np.generic, np.ndarray)):
        return None
    if isinstance(data, Mapping):
        for key, value in data.items():
            found = _not_a_config_value(key, (*path, "(key)")) if isinstance(key, (str, list, dict)) else None
            if not isinstance(key, (str, int, float, bool, type(None))):
                found = found or (".".join((*path, "(key)")), f"a {type(key).__name__} key ({key!r:.60}) is not "
                                                              "a field name")
            found = found or _not_a_config_value(value, (*path, str(key)))
            if found:
                return found
        return None
    if isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            found = _not_a_config_value(value, (*path, str(i)))
            if found:
                return found
        return None
    return ".".join(path) or "(config)", f"a {type(data).__name__} is not a configuration value ({data!r:.60})"


def parse_config(config_cls: type[LayerConfig], data: Mapping[str, Any], where: str = "") -> Any:
    """Validate ``data`` as ``config_cls`` the way a model file is validated (JSON semantics).

    Raises:
        ConfigError: listing every invalid field, prefixed with ``where``.
    """
    if isinstance(data, config_cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or config_cls.__name__}: expected a mapping, got {data!r}")
    odd = _not_a_config_value(data)
    if odd is not None:
        raise ConfigError(f"{where or config_cls.__name__} -> {odd[0]}: {odd[1]}")
    try:
        text = json.dumps(dict(data), default=_jsonable, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or config_cls.__name__}: {exc}") from None
    ignored = ignored_names(config_cls, data)  # refused here: JSON validation would drop them
    try:
        config = config_cls.model_validate_json(text, strict=True)  # models nested in fields too
    except ValidationError as exc:
        broken_defaults = _broken_defaults(config_cls, data, exc)
        if broken_defaults:
            raise PluginError(
                f"{where or config_cls.__name__}: {config_cls.__module__}.{config_cls.__qualname__}'s own default "
                f"for {', '.join(broken_defaults)} fails its validation (a bug in the plugin, not in the config "
                f"given): {'; '.join(format_validation_error(exc, ''))}") from None
        problems = format_validation_error(exc, where or config_cls.__name__, config_cls, given=list(data),
                                           also=ignored)
        raise ConfigError("\n".join(problems), problems) from None
    except Exception as exc:  # pydantic lets a validator's non-ValueError through: the plugin's bug
        raise PluginError(f"{where or config_cls.__name__}: validating it with {config_cls.__module__}."
                          f"{config_cls.__qualname__} raised {exception_text(exc)}") from exc
    if ignored:
        problems = format_validation_error(None, where or config_cls.__name__, config_cls, given=list(data),
                                           also=ignored)
        raise ConfigError("\n".join(problems), problems)
    return config


class _Configured:
    """What layers and losses share: a validated config and the registered type name."""

    Config: ClassVar[type[LayerConfig]]

    def __init__(self, config: LayerConfig | Mapping[str, Any] | None = None) -> None:
        if config is None:
            config = {}
        if isinstance(config, Mapping):
            config = parse_config(self.Config, {"type": self.type_name(), **config})
        if not isinstance(config, self.Config):
            raise ConfigError(
                f"{type(self).__name__} expects a {self.Config.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config

    @classmethod
    def type_name(cls) -> str:
        """The registered type name: the literal default of ``Config.type``."""
        name = type_name_of(cls.Config)
        if name is None:
            raise ConfigError(f"{cls.__name__}.Config.type is not a single string Literal")
        return name

    @classmethod
    def gradcheck_cases(cls) -> Any:
        """A hypothesis strategy of ``nnplug.testing.Case``; ``None`` when the class offers none."""
        return None

    def __repr__(self) -> str:
        fields = self.config.model_dump(exclude_defaults=True, exclude={"type"})
        inner = ", ".join(f"{k}={v!r}" for k, v in fields.items())
        return f"{type(self).__name__}({inner})"


class Layer(_Configured):
    """Base class of every layer plugin.

    The contract (see DESIGN.md):

    * ``output_shape(in_shape)`` is pure, allocates nothing and raises
      :class:`nnplug.ShapeError` when the input does not fit.
    * ``init_params(in_shape, rng)`` returns ``{name: array}`` drawn from ``rng``.
    * ``forward(params, x, *, training) -> (y, cache)`` and
      ``backward(params, cache, dy) -> (dx, {name: gradient})`` mutate neither their
      arguments nor ``self``; ``backward`` returns one gradient per parameter.
    * Arrays keep their input's dtype.
    * With ``n_inputs > 1``, shapes and arrays come as tuples and ``dx`` is a tuple.
    * Optional: ``param_shapes(in_shape)`` and ``param_grads(params, cache, dy)``.
    """

    n_inputs: ClassVar[int] = 1

    def output_shape(self, in_shape: Any) -> Shape:
        raise NotImplementedError

    def param_shapes(self, in_shape: Any) -> dict[str, Shape] | None:
        """Optional: the parameter shapes ``init_params`` will return, without allocating.

        Lets a model be summarised and budget-checked before any weight exists; ``None``
        (the default) means unknown.
        """
        return None

    def init_params(self, in_shape: Any, rng: np.random.Generator) -> Params:
        return {}

    def forward(self, params: Params, x: Any, *, training: bool) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def backward(self, params: Params, cache: Any, dy: np.ndarray) -> tuple[Any, Params]:
        raise NotImplementedError

    def param_grads(self, params: Params, cache: Any, dy: np.ndarray) -> Params:
        """Optional: ``backward``'s parameter gradients alone, without ∂L/∂x.

        The executor calls it for a layer that reads only the model input, whose gradient
        training never uses (PyTorch skips it the same way for an input that does not
        require grad). The default runs ``backward`` and drops ∂L/∂x; a layer overrides it
        where skipping ∂L/∂x saves work. The conformance harness checks that both agree.
        """
        return self.backward(params, cache, dy)[1]


class Loss(_Configured):
    """Base class of losses, which end a model graph.

    * ``forward(pred, target) -> (value, cache)``: ``value`` is the mean loss over the batch
      (the conformance harness checks that the batch given twice has the same value). A float
      target arrives in ``pred``'s dtype, as the model's inputs do; integer labels as given.
    * ``backward(cache) -> dpred``: the gradient of ``value`` with respect to ``pred``.
    * ``check_pred_shape(pred_shape)`` refuses a prediction shape (no batch axis) the loss
      cannot take, with a :class:`nnplug.ShapeError`.
    * ``example_target(pred_shape, rng)`` draws a valid target for predictions of shape
      ``pred_shape`` (batch axis included).
    * ``accuracy(pred, target)`` gives the fraction correct, or ``None`` if it has no meaning.
    """

    def check_pred_shape(self, pred_shape: Shape) -> None:
        return None

    def forward(self, pred: np.ndarray, target: Any) -> tuple[float, Any]:
        raise NotImplementedError

    def backward(self, cache: Any) -> np.ndarray:
        raise NotImplementedError

    def example_target(self, pred_shape: Shape, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def accuracy(self, pred: np.ndarray, target: np.ndarray) -> float | None:
        return None


def as_output_shape(out: Any) -> Shape | None:
    """What ``output_shape`` returned as the shape it means: a non-empty tuple (or list) of
    positive ints, numpy ints too; ``None`` for anything else (``()``, a zero or negative
    dimension, floats, bools), which no model takes. The executor and the conformance harness
    both ask it, so a layer that passes the harness builds."""
    if not (isinstance(out, (tuple, list)) and out and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) and d >= 1 for d in out
    )):
        return None
    return tuple(int(d) for d in out)


#: What a registered type name may be (an identifier; dots and dashes allowed after the first).
TYPE_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def contract_problem(cls: Any) -> str | None:
    """Why ``cls`` cannot be registered, or ``None`` when it keeps the layer contract."""
    if not isinstance(cls, type):
        return f"{cls!r} is not a class (expected a Layer or Loss subclass)"
    label = f"class {cls.__module__}.{cls.__qualname__}"
    if not issubclass(cls, (Layer, Loss)):
        return f"{label} is not a subclass of nnplug.Layer or nnplug.Loss"
    if issubclass(cls, Layer) and issubclass(cls, Loss):
        return f"{label} subclasses both nnplug.Layer and nnplug.Loss; a type is one or the other"

    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, LayerConfig)):
        return f"{label} has no Config subclassing nnplug.LayerConfig"
    name = type_name_of(config)
    if name is None:
        return f"{label}: Config.type must be Literal['name'] with that name as its default"
    if not TYPE_NAME_PATTERN.match(name):
        return f"{label}: type name {name!r} is not an identifier"
    loosened = loosened_config(config)
    if loosened:
        return f"{label}: {loosened}"
    for key in ("name", "inputs"):  # the graph's keys: a layer field of that name would hide them
        own, base = config.model_fields.get(key), LayerConfig.model_fields[key]
        if own is None or (own.annotation, own.default, own.metadata) != (base.annotation, base.default, base.metadata):
            return (f"{label}: Config redefines {key!r}, which every node uses to place the layer "
                    "in the graph; give the layer's own setting another name")
    if issubclass(cls, Layer):
        n_inputs = getattr(cls, "n_inputs", 1)
        if not isinstance(n_inputs, int) or isinstance(n_inputs, bool) or n_inputs < 1:
            return f"{label}: n_inputs must be a positive int, got {n_inputs!r}"
    return None
