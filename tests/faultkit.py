"""Faults shared by ``tests/test_faults.py`` and ``scripts/fault_figures.py``: broken plugins
installed as fake distributions, misbehaving layers, and random model documents.

Fake distribution names never contain ``-``: ``importlib.metadata`` names a ``*.dist-info``
folder by the text before its first ``-``, so ``a-b-1.0.dist-info`` and ``a-c-1.0.dist-info``
would count as one distribution named ``a``.
"""

from __future__ import annotations

import importlib
import json
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from fakedist import good_plugin_source, install_fake_dist
from hypothesis import strategies as st
from pydantic import create_model

import nnplug
from nnplug.modelfile import build_model


def class_name(type_name: str) -> str:
    return "".join(part.title() for part in type_name.split("_"))


def _hook_returning(source: str, cls: str, returned: str, extra: str = "") -> str:
    return source.replace(f"    return [{cls}]", extra + f"    return {returned}")


def plugin_fault_sources(type_name: str) -> dict[str, tuple[str, str]]:
    """Each kind of broken plugin, as ``kind -> (module source, phrase its error names)``.

    Every source defines a healthy layer class of ``type_name`` and then breaks one way, so
    a model file using that type meets the broken plugin, not a plain typo.
    """
    good = good_plugin_source(type_name)
    cls = class_name(type_name)
    stranger = "class Stranger:\n    pass\n"
    no_config = "class NoConfig(nnplug.Layer):\n    pass\n"
    loose = ("class LooseConfig(nnplug.LayerConfig):\n    type: str = 'loose'\n"
             "class Loose(nnplug.Layer):\n    Config = LooseConfig\n")
    return {
        "import_fails": (good + "raise ImportError('missing dependency frobnicate')\n", "frobnicate"),
        "exits_at_import": (good + "import sys\nsys.exit(3)\n", "SystemExit: 3"),
        "hook_raises": (_hook_returning(good, cls, "[]", "    raise RuntimeError('hook exploded')\n"),
                        "hook exploded"),
        "returns_none": (_hook_returning(good, cls, "None"), "returned None"),
        "returns_non_class": (_hook_returning(good, cls, f"[{cls}, 42]"), "42 is not a class"),
        "bad_hook_signature": (good.replace("def nnplug_register_layers():",
                                            "def nnplug_register_layers(unexpected_argument):"),
                               "unexpected_argument"),
        "forgot_hookimpl_marker": (good.replace("@nnplug.hookimpl\n", ""), "mark it with @nnplug.hookimpl"),
        "not_a_layer": (_hook_returning(good, cls, f"[{cls}, Stranger]") + stranger,
                        "not a subclass of nnplug.Layer"),
        "no_config": (_hook_returning(good, cls, f"[{cls}, NoConfig]") + no_config, "has no Config"),
        "type_not_literal": (_hook_returning(good, cls, f"[{cls}, Loose]") + loose, "Config.type must be Literal"),
    }


PLUGIN_FAULT_KINDS = tuple(plugin_fault_sources("x"))
POSITIONS = ("first", "middle", "last")


@dataclass
class PluginFault:
    """One broken distribution among healthy ones, installed under a site folder."""

    kind: str
    phrase: str
    dist: str
    version: str
    module: str
    type_name: str
    healthy_types: list[str]
    modules: list[str]


def install_plugin_fault(site: Path, kind: str, position: str = "middle") -> PluginFault:
    """Install a broken distribution and two healthy ones so that the broken one loads
    ``position`` (distributions load sorted by name); ``site`` must be on ``sys.path``."""
    tag = uuid.uuid4().hex[:8]
    letters = {"first": ("a", "m", "z"), "middle": ("m", "a", "z"), "last": ("z", "a", "m")}[position]
    type_name = f"faulty_{tag}"
    source, phrase = plugin_fault_sources(type_name)[kind]
    broken = PluginFault(kind, phrase, f"{letters[0]}broken_{kind}_{tag}", "3.1", f"broken_{tag}",
                         type_name, [], [f"broken_{tag}"])
    install_fake_dist(site, broken.dist, broken.module, source, version=broken.version)
    for letter in letters[1:]:
        module, healthy = f"good_{letter}_{tag}", f"healthy_{letter}_{tag}"
        install_fake_dist(site, f"{letter}good_{tag}", module, good_plugin_source(healthy))
        broken.healthy_types.append(healthy)
        broken.modules.append(module)
    importlib.invalidate_caches()
    return broken


def model_text(*layers: dict[str, Any], input_shape: tuple[int, ...] = (4,), **sections: Any) -> str:
    """A model file (YAML) of ``layers`` then a 2-unit dense layer and softmax-CE."""
    description = {"input": list(input_shape), "layers": [*layers, {"type": "dense", "units": 2}],
                   "loss": {"type": "softmax_cross_entropy"}, **sections}
    return yaml.safe_dump(description, sort_keys=False)


# -- layers that misbehave at run time -------------------------------------------------

_SCALER_INIT = "    def init_params(self, in_shape, rng):\n        return {'s': np.ones(in_shape)}\n"
_SCALER_FORWARD = "return params['s'] * x, x"
_SCALER_BACKWARD = "return params['s'] * dy, {'s': (dy * cache).sum(axis=0)}"

#: kind -> (replace, with) in the fake plugin's source, and the phrase the error must hold.
RUNTIME_FAULTS: dict[str, tuple[str, str, str]] = {
    "forward_raises": ("return 2 * x, None", "raise IndexError('oops')", "forward raised IndexError: oops"),
    "backward_raises": ("return 2 * dy, {}", "raise ZeroDivisionError('bad')", "backward raised ZeroDivisionError"),
    "backward_wrong_shape": ("return 2 * dy, {}", "return 2 * dy[:, :1], {}", "of shape (16, 1), expected (16, 16)"),
    "backward_wrong_dtype": ("return 2 * dy, {}", "return (2 * dy).astype(np.float64), {}",
                             "as float64 in a float32 model"),
    "forward_wrong_dtype": ("return 2 * x, None", "return (2 * x).astype(np.int64), None",
                            "dtype int64 in a float32 model"),
    "param_gradient_wrong_dtype": (_SCALER_BACKWARD, _SCALER_BACKWARD.replace(".sum(axis=0)",
                                   ".sum(axis=0).astype(np.float64)"), "gradient of s as float64"),
    "param_gradient_missing": (_SCALER_BACKWARD, "return params['s'] * dy, {}", "expected ['s']"),
}


_CONFIG_LINE = '    type: Literal["{type}"] = "{type}"\n'
_VALIDATOR = ("    k: int = 1\n    @__import__('pydantic').field_validator('k')\n    @classmethod\n"
              "    def check_k(cls, v):\n        raise RuntimeError('validator exploded')\n")

#: Faults met while a model is built (before any data): kind -> (replace, with, phrase).
BUILD_FAULTS: dict[str, tuple[str, str, str]] = {
    "config_validator_raises": (_CONFIG_LINE, _CONFIG_LINE + _VALIDATOR, "raised RuntimeError: validator exploded"),
    "init_raises": ("    def output_shape", "    def __init__(self, config):\n        raise KeyError('no init')\n"
                    "    def output_shape", "creating the layer raised KeyError"),
    "output_shape_raises": ("        return in_shape\n", "        return in_shape[5]\n",
                            "output_shape raised IndexError"),
    "param_shapes_not_ints": ("    def output_shape", "    def param_shapes(self, in_shape):\n"
                              "        return {'w': ('a', 2)}\n    def output_shape", "param_shapes raised"),
    "init_params_not_numbers": ("    def output_shape", "    def init_params(self, in_shape, rng):\n"
                                "        return {'w': 'abc'}\n    def output_shape",
                                "init_params gave w a value that is not an array of numbers"),
    # validate used to say "valid"; train then stopped at the first batch or blamed the user's params
    "init_params_draws_nan": ("    def output_shape", "    def init_params(self, in_shape, rng):\n"
                              "        return {'w': np.full(2, np.nan)}\n    def output_shape",
                              "init_params drew non-finite values for w"),
    "init_params_disagrees_with_param_shapes": (
        "    def output_shape", "    def param_shapes(self, in_shape):\n        return {'w': (2,)}\n"
        "    def init_params(self, in_shape, rng):\n        return {'w': np.ones(2), 'b': np.ones(2)}\n"
        "    def output_shape", "init_params returned ['b', 'w'], but param_shapes declares ['w']"),
}


def build_fault_source(kind: str, type_name: str) -> str:
    """A plugin module whose layer ``type_name`` breaks while a model is built."""
    old, new, _ = BUILD_FAULTS[kind]
    source = good_plugin_source(type_name)
    old, new = old.replace("{type}", type_name), new.replace("{type}", type_name)
    _check_injected(old, source)
    return source.replace(old, new)


def runtime_fault_source(kind: str, type_name: str) -> str:
    """A plugin module whose layer ``type_name`` misbehaves as ``kind`` says."""
    old, new, _ = RUNTIME_FAULTS[kind]
    source = good_plugin_source(type_name)
    if kind.startswith("param_"):  # a layer with a parameter, y = s * x
        source = (source.replace("return 2 * x, None", _SCALER_FORWARD)
                  .replace("return 2 * dy, {}", _SCALER_BACKWARD)
                  .replace("    def forward", _SCALER_INIT + "    def forward"))
    _check_injected(old, source)
    return source.replace(old, new)


def _check_injected(old: str, source: str) -> None:
    """The fault must really be injected. Not an ``assert``: this helper module is not
    rewritten by pytest, so ``python -O`` would drop the check."""
    if old not in source:
        raise AssertionError(f"the fault's target {old!r} is not in the plugin's source")


# -- random model documents ------------------------------------------------------------

LAYER_TYPES = ["dense", "relu", "flatten", "add", "concat", "conv2d", "maxpool2d", "avgpool2d", "sigmoid"]
KEYS = ["type", "units", "filters", "kernel_size", "stride", "padding", "inputs", "name", "layers", "loss",
        "input", "dtype", "seed", "train", "data", "x"]
HUGE = st.sampled_from([10**6, 10**9, 10**12, 2**63, 10**30, -(10**12)])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), HUGE,
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.sampled_from([*LAYER_TYPES, "same", "valid", "float32", "input", "softmax_cross_entropy"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)), max_leaves=24)
SIZES = st.one_of(st.integers(1, 6), HUGE, VALUES)
NODES = st.one_of(VALUES, st.fixed_dictionaries(
    {"type": st.sampled_from(LAYER_TYPES)},
    optional={"units": SIZES, "filters": SIZES, "kernel_size": SIZES, "stride": SIZES,
              "padding": st.one_of(st.sampled_from(["same", "valid"]), SIZES), "inputs": VALUES,
              "name": st.one_of(st.text(max_size=6), VALUES)}))
# Nodes that fit an input of (C, 8, 8) often enough that some documents build a model, with
# now and then a huge size that only the parameter budget stops.
SANE_NODES = st.one_of(
    st.builds(lambda u: {"type": "dense", "units": u}, st.one_of(st.integers(1, 6), HUGE)),
    st.builds(lambda f, k, p: {"type": "conv2d", "filters": f, "kernel_size": k, "padding": p},
              st.one_of(st.integers(1, 4), HUGE), st.integers(1, 3), st.sampled_from(["same", "valid", 0, 1])),
    st.builds(lambda k: {"type": "maxpool2d", "pool_size": k}, st.integers(1, 2)),
    st.sampled_from([{"type": "relu"}, {"type": "flatten"}, {"type": "sigmoid"}]),
)
INPUTS = st.one_of(st.just([1, 8, 8]), st.just([3, 8, 8]), st.just([1, 8, 8]),
                   st.lists(st.one_of(st.integers(-2, 9), HUGE), max_size=4), VALUES)


@st.composite
def documents(draw: st.DrawFn) -> tuple[Any, str]:
    """A random model document and a format (yaml or json): random layers (some repeated as
    the very same object, so YAML writes anchors and aliases), a random input shape, random
    top-level sections, optionally buried in deep nesting."""
    if draw(st.booleans()):  # chaos: any value anywhere
        layers = draw(st.lists(st.one_of(SANE_NODES, NODES), max_size=6))
        top = draw(VALUES)
    else:  # plausible: real layer types and sizes, some huge, no stray sections
        layers, top = draw(st.lists(SANE_NODES, min_size=1, max_size=6)), None
    if layers and draw(st.booleans()):
        layers += layers[: draw(st.integers(1, len(layers)))]  # shared objects -> &id/*id in YAML
    document: Any = {"input": draw(INPUTS), "layers": layers, "loss": {"type": "softmax_cross_entropy"}}
    if isinstance(top, dict):
        document.update(top)
    depth = draw(st.sampled_from([0, 0, 0, 0, 10, 60]))  # deeper: see test_modelfile
    for _ in range(depth):  # nesting past what any model file needs
        document = {"layers": [document]}
    return document, draw(st.sampled_from(["yaml", "json"]))


def dump(document: Any, fmt: str) -> str | None:
    """The document as text, or ``None`` when the format cannot hold it (NaN in JSON...)."""
    try:
        return yaml.safe_dump(document) if fmt == "yaml" else json.dumps(document, allow_nan=False)
    except (ValueError, yaml.YAMLError, RecursionError):
        return None


@dataclass
class Outcome:
    kind: str  # "model", "ConfigError" or "ShapeError"
    message: str
    seconds: float
    peak_bytes: int


def build_bounded(path: Path, registry: nnplug.Registry) -> Outcome:
    """Build ``path`` twice: timed, then with peak traced memory (numpy's allocations
    included) measured, since tracing slows the parsers many times over. Anything but a
    model or a ConfigError/ShapeError propagates."""

    def attempt() -> tuple[str, str]:
        try:
            build_model(path, registry)
        except (nnplug.ConfigError, nnplug.ShapeError) as exc:
            return type(exc).__name__, str(exc)
        return "model", ""

    started = time.perf_counter()
    kind, message = attempt()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    try:
        # not inside an assert: `python -O` would skip the traced build and measure 0 bytes
        again = attempt()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if again != (kind, message):  # the same file gives the same outcome
        raise AssertionError(f"building {path} twice gave {(kind, message)!r}, then {again!r}")
    return Outcome(kind, message, seconds, peak)


def non_finite_gradient_plugin(type_name: str, value: float, *, dx_too: bool) -> Any:
    """A plugin object registering ``type_name``: an identity layer holding one parameter ``s``
    whose backward returns ``value`` (NaN, inf) as the gradient of ``s``, and as every entry of
    dx too when ``dx_too`` (the nodes before it then get non-finite gradients as well)."""
    config = create_model(f"{class_name(type_name)}Config", __base__=nnplug.LayerConfig,
                          type=(Literal[type_name], type_name))

    class Layer(nnplug.Layer):
        Config = config

        def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
            return in_shape

        def init_params(self, in_shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
            return {"s": np.zeros(1)}

        def forward(self, params: dict[str, np.ndarray], x: np.ndarray, *, training: bool) -> tuple[np.ndarray, Any]:
            return x, None

        def backward(self, params: dict[str, np.ndarray], cache: Any, dy: np.ndarray) -> tuple[Any, Any]:
            return (np.full_like(dy, value) if dx_too else dy), {"s": np.full(1, value, dtype=dy.dtype)}

    class Plugin:
        @nnplug.hookimpl
        def nnplug_register_layers(self) -> list[type]:
            return [Layer]

    return Plugin()
