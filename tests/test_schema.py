"""`nnplug schema` and the loader agree: an editor validating against the schema refuses, field
by field, what `nnplug validate` refuses, and never refuses a file nnplug accepts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import nnplug
from nnplug.config import model_json_schema, parse_model

REGISTRY = nnplug.load_registry()
VALIDATOR = jsonschema.Draft202012Validator(model_json_schema(REGISTRY))
EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))

RESIDUAL = {
    "input": [2, 6, 6],
    "seed": 3,
    "layers": [
        {"type": "conv2d", "name": "stem", "filters": 2, "kernel_size": 3, "padding": "same"},
        {"type": "relu", "name": "act"},
        {"type": "add", "name": "sum", "inputs": ["stem", "act"]},
        {"type": "concat", "name": "both", "inputs": ["sum", "stem"]},
        {"type": "maxpool2d", "pool_size": 2, "padding": 1},
        {"type": "flatten"},
        {"type": "dense", "name": "logits", "units": 3},
    ],
    "loss": {"type": "softmax_cross_entropy", "inputs": ["logits"]},
    "data": {"source": "npz", "path": "train.npz", "validation": 0.1},
    "train": {"epochs": 2, "batch_size": 4, "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9,
                                                         "nesterov": True}},
}


def loader_accepts(document: Any) -> bool:
    try:
        parse_model(document, REGISTRY)
    except nnplug.ConfigError:
        return False
    return True


def with_change(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """RESIDUAL with the key or index at ``path`` set to ``value`` (deleted if ``value`` is ...)."""
    document = copy.deepcopy(RESIDUAL)
    *parents, last = path
    holder: Any = document
    for key in parents:
        holder = holder[key]
    if value is ...:
        del holder[last]
    else:
        holder[last] = value
    return document


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_and_a_residual_graph_validate_against_the_schema(example: Path) -> None:
    VALIDATOR.validate(yaml.safe_load(example.read_text()))
    VALIDATOR.validate(RESIDUAL)
    assert loader_accepts(RESIDUAL)


@pytest.mark.parametrize(("path", "value"), [
    (("layers", 6, "type"), ...),  # a node without its type
    (("layers", 2, "inputs"), ["stem"]),  # add takes two inputs
    (("layers", 2, "inputs"), ...),  # ... which it must name
    (("layers", 2, "inputs"), None),  # ... and null reads the one node before
    (("layers", 3, "inputs"), ["sum", "stem", "act"]),  # concat takes two
    (("layers", 1, "inputs"), ["stem", "stem"]),  # relu takes one
    (("loss", "inputs"), ["logits", "sum"]),  # the loss reads one node
    (("loss", "type"), ...),
    (("seed",), 2**63),
    (("input",), []),  # one example has at least one axis
    (("input",), [2, 0, 6]),  # ... each of at least one element
    (("layers",), []),
    (("name",), "next\u0085line"),
    (("name",), "line\u2028separator"),
    (("train", "optimizer"), {"type": "sgd", "beta1": 0.5}),
    (("train", "optimizer"), {"type": "adam", "momentum": 0.5}),
    (("train", "optimizer"), {"momentum": 0.5}),  # adam by default
    (("train", "optimizer"), {"type": "sgd", "nesterov": True}),  # without momentum
    (("train", "optimizer"), {"type": "sgd", "nesterov": True, "momentum": 0.0}),
    (("data",), {"source": "npz"}),
    (("data",), {"source": "npz", "path": None}),
    (("data",), {"source": "digits", "path": "x.npz"}),
])
def test_the_schema_refuses_what_the_loader_refuses(path: tuple[Any, ...], value: Any) -> None:
    document = with_change(path, value)
    assert not loader_accepts(document)
    assert not VALIDATOR.is_valid(document), f"the schema accepts {path} = {value!r}"


@pytest.mark.parametrize("name", ["نیم\u200cفاصله", "👩\u200d💻 team", "no\xa0break", "private\ue000", "plain"])
def test_a_name_of_ordinary_text_is_accepted_by_the_loader_and_the_schema(name: str) -> None:
    document = with_change(("name",), name)
    assert loader_accepts(document) and VALIDATOR.is_valid(document)


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**64), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["same", "valid", "npz", "digits", "sgd", "adam", "relu", "stem", "sum", "x.npz", ""]),
    st.lists(st.sampled_from(["stem", "act", "sum", "both", "logits"]), max_size=3),
    st.lists(st.integers(0, 4), max_size=3),
)
_paths = st.sampled_from([
    ("seed",), ("name",), ("input",), ("layers", 0, "filters"), ("layers", 0, "kernel_size"),
    ("layers", 0, "padding"), ("layers", 0, "stride"), ("layers", 1, "inputs"), ("layers", 2, "inputs"),
    ("layers", 3, "inputs"), ("layers", 4, "pool_size"), ("layers", 4, "stride"), ("layers", 4, "padding"),
    ("layers", 6, "units"), ("layers", 6, "type"), ("layers", 6, "bias"), ("loss", "inputs"), ("loss", "type"),
    ("data", "source"), ("data", "path"), ("data", "validation"), ("train", "epochs"),
    ("train", "optimizer", "type"), ("train", "optimizer", "momentum"), ("train", "optimizer", "nesterov"),
    ("train", "optimizer", "beta1"), ("train", "optimizer", "lr"),
])


@given(st.lists(st.tuples(_paths, st.one_of(_values, st.just(...))), min_size=1, max_size=3))
def test_a_file_the_loader_accepts_the_schema_accepts(changes: list[tuple[tuple[Any, ...], Any]]) -> None:
    document = copy.deepcopy(RESIDUAL)
    for path, value in changes:
        *parents, last = path
        holder: Any = document
        for key in parents:
            holder = holder.get(key) if isinstance(holder, dict) else holder[key]
        if value is ... and last in holder:
            del holder[last]
        elif value is not ...:
            holder[last] = value
    if loader_accepts(document):
        assert VALIDATOR.is_valid(document), next(VALIDATOR.iter_errors(document)).message


def test_schema_with_autoload_off_and_nothing_named_says_why_nothing_is_registered(monkeypatch, capsys) -> None:
    from nnplug.cli import main

    monkeypatch.setenv("NNPLUG_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert main(["schema"]) == 2
    assert "NNPLUG_DISABLE_PLUGIN_AUTOLOAD='1' is set" in capsys.readouterr().err


def _defaults(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """(path, subschema) of every subschema of ``node`` that states a ``default``."""
    found = [(path, node)] if isinstance(node, dict) and "default" in node else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found += _defaults(child, (*path, key))
    return found


def test_every_default_the_schema_states_is_valid_under_its_own_subschema() -> None:
    # An editor offers a stated default as the value to write: one its own schema refuses would
    # put an invalid section in the file (train.optimizer's default once listed adam with sgd's
    # momentum and nesterov, refused by the schema and by nnplug alike)
    schema = model_json_schema(REGISTRY)
    for path, subschema in _defaults(schema):
        alone = {**{k: v for k, v in subschema.items() if k != "default"}, "$defs": schema["$defs"]}
        errors = [e.message for e in jsonschema.Draft202012Validator(alone).iter_errors(subschema["default"])]
        assert not errors, f"{'/'.join(map(str, path))}: default {subschema['default']!r}: {errors}"


def test_the_optimizer_default_the_schema_states_is_accepted_by_the_loader() -> None:
    stated = model_json_schema(REGISTRY)["$defs"]["TrainConfig"]["properties"]["optimizer"]["default"]
    assert loader_accepts(with_change(("train", "optimizer"), stated))


@pytest.mark.parametrize("reserved", ["input", "loss"])
def test_the_schema_refuses_a_node_named_as_the_model_input_or_its_loss(reserved: str) -> None:
    document = with_change(("layers", 1, "name"), reserved)
    assert not loader_accepts(document)
    assert not VALIDATOR.is_valid(document), f"the schema accepts a node named {reserved!r}"


def test_the_schema_of_a_registry_with_layers_but_no_loss_says_none_is_registered() -> None:
    relu = REGISTRY.get("relu")

    class LayersOnly:
        @nnplug.hookimpl
        def nnplug_register_layers(self) -> list[type]:
            return [relu]

    with pytest.raises(nnplug.ConfigError, match="no layer or loss types are registered"):
        model_json_schema(nnplug.Registry(plugins=[LayersOnly()], autoload=False))
