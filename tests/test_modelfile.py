"""Model files: formats, line numbers, YAML traps, the malformed corpus, the JSON Schema."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import nnplug
from nnplug import modelfile
from nnplug.cli import main
from nnplug.config import model_json_schema
from nnplug.modelfile import MAX_NODES, build_model, load_model_file, read_document

CORPUS = Path(__file__).parent / "data" / "malformed"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())
EXAMPLES = Path(__file__).parent.parent / "examples"

MLP = {
    "name": "tiny",
    "input": [1, 8, 8],
    "layers": [{"type": "flatten"}, {"type": "dense", "name": "hidden", "units": 8},
               {"type": "relu"}, {"type": "dense", "name": "logits", "units": 10}],
    "loss": {"type": "softmax_cross_entropy"},
}


@pytest.fixture(scope="module")
def registry() -> nnplug.Registry:
    return nnplug.load_registry()


def test_corpus_holds_at_least_30_files_each_with_an_expectation() -> None:
    files = sorted(p.name for p in CORPUS.iterdir() if p.name != "expected.yaml")
    assert len(files) >= 30
    assert sorted(EXPECTED) == files


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_file_exits_2_with_a_message_naming_what_and_where(
    name: str, registry: nnplug.Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = EXPECTED[name]
    expect = entry["expect"] if isinstance(entry, dict) else entry
    for needed in entry.get("requires", []) if isinstance(entry, dict) else []:
        if needed not in registry:
            pytest.skip(f"layer type {needed} is not installed")
    assert main(["validate", str(CORPUS / name)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert captured.err.startswith("nnplug: error: ")
    for substring in expect:
        assert substring in captured.err, f"{substring!r} not in:\n{captured.err}"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_same_model_reads_alike_from_yaml_json_and_toml(tmp_path: Path, registry: nnplug.Registry) -> None:
    toml = """name = "tiny"
input = [1, 8, 8]
layers = [{type = "flatten"}, {type = "dense", name = "hidden", units = 8}, {type = "relu"},
          {type = "dense", name = "logits", units = 10}]
loss = {type = "softmax_cross_entropy"}
"""
    paths = [_write(tmp_path, "m.yaml", yaml.safe_dump(MLP)), _write(tmp_path, "m.json", json.dumps(MLP)),
             _write(tmp_path, "m.toml", toml), _write(tmp_path, "m.YML", yaml.safe_dump(MLP))]
    models = [build_model(p, registry) for p in paths]
    assert len({m.summary() for m in models}) == 1
    for m in models[1:]:
        for node, group in models[0].params.items():
            for k, v in group.items():
                np.testing.assert_array_equal(m.params[node][k], v)


def test_yaml_problems_carry_the_line_of_their_node(tmp_path: Path, registry: nnplug.Registry) -> None:
    text = "input: [1, 8, 8]\nlayers:\n  - {type: flatten}\n\n\n  - {type: dense, units: -1}\n" \
           "  - {type: dense, unitz: 3}\nloss: {type: softmax_cross_entropy}\n"
    with pytest.raises(nnplug.ConfigError) as info:
        load_model_file(_write(tmp_path, "m.yaml", text), registry)
    problems = info.value.problems
    assert len(problems) == 3  # every problem at once
    assert any("layers[1] (dense) -> units" in p and p.endswith("(line 6)") for p in problems)
    assert any("layers[2] (dense) -> unitz" in p and p.endswith("(line 7)") for p in problems)


def test_block_style_yaml_problems_carry_the_line_of_their_field(tmp_path: Path, registry: nnplug.Registry) -> None:
    # they carried the line of the node (or the section), lines above the key at fault
    text = ("input: [1, 8, 8]\nlayers:\n  - type: conv2d\n    filters: 2\n    kernel_size: 0\n"
            "  - type: flatten\n  - type: dense\n    unit: 10\nloss:\n  type: softmax_cross_entropy\n"
            "train:\n  optimizer:\n    type: adam\n    lr: -1\n")
    with pytest.raises(nnplug.ConfigError) as info:
        load_model_file(_write(tmp_path, "m.yaml", text), registry)
    ends = {p.split(": ", 2)[1].split(":")[0]: p.rsplit(" ", 2)[-1] for p in info.value.problems}
    assert ends == {"layers[0] (conv2d) -> kernel_size": "5)", "layers[2] (dense) -> unit": "8)",
                    "layers[2] (dense) -> units": "7)",  # missing: the node's line
                    "train -> optimizer.lr": "14)"}


def test_anchors_within_the_size_limit_are_read(tmp_path: Path, registry: nnplug.Registry) -> None:
    text = ("input: [1, 8, 8]\nlayers:\n  - {type: flatten}\n  - &h {type: dense, units: 8}\n"
            "  - *h\n  - {type: dense, units: 10}\nloss: {type: softmax_cross_entropy}\n")
    model = build_model(_write(tmp_path, "m.yaml", text), registry)
    assert [n.out_shape for n in model.nodes] == [(64,), (8,), (8,), (10,)]


def test_alias_expansion_is_bounded_before_construction(tmp_path: Path) -> None:
    # 10**5 leaves would pass a byte limit easily: it is the expanded node count that counts.
    lines = ["a: &a [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    for prev, name in zip("abcd", "bcde"):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(nnplug.ConfigError, match=f"{MAX_NODES:,} nodes"):
        read_document(_write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n"))


def test_yaml_python_tags_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = f"input: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(nnplug.ConfigError, match="python/object/apply"):
        read_document(_write(tmp_path, "m.yaml", text))
    assert not marker.exists()


def test_deeply_nested_document_is_a_config_error(tmp_path: Path) -> None:
    for name, text in (("deep.json", "[" * 100_000 + "]" * 100_000),
                       ("deep.yaml", "[" * 100_000 + "]" * 100_000),
                       ("deep.toml", "x = " + "[" * 100_000 + "]" * 100_000)):
        with pytest.raises(nnplug.ConfigError, match=r"nested (too deeply|more than 64 levels)"):
            read_document(_write(tmp_path, name, text))


def test_missing_file_and_directory_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(nnplug.ConfigError, match="no such model file"):
        read_document(tmp_path / "absent.yaml")
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(nnplug.ConfigError, match="is a directory"):
        read_document(tmp_path / "d.yaml")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(b"input: [1, 8, 8]\nname: \xff\xfe\n")
    with pytest.raises(nnplug.ConfigError, match="not UTF-8"):
        read_document(path)


def test_yaml_reads_an_exponent_without_a_dot_as_a_number(tmp_path: Path, registry: nnplug.Registry) -> None:
    # YAML 1.1 (PyYAML) would read 1e-3 as the string '1e-3' and the config would refuse it
    text = ("input: [4]\nlayers:\n  - {type: dense, units: 3}\nloss: {type: softmax_cross_entropy}\n"
            "train: {optimizer: {type: sgd, lr: 1e-3}, epochs: 1}\n"
            "list: [2E+1, -5e-1, 1_0e1, 1.5e2, 12, 1e, .5, 1:30.0, 1_0.5]\n")
    document, _ = read_document(_write(tmp_path, "m.yaml", text))
    assert document["train"]["optimizer"]["lr"] == 0.001
    # ... and as YAML 1.2 reads them: no underscores, no sexagesimal 1:30.0 = 90.0
    assert document["list"] == [20.0, -0.5, "1_0e1", 150.0, 12, "1e", 0.5, "1:30.0", "1_0.5"]
    spec = load_model_file(_write(tmp_path, "n.yaml", text.replace("list:", "# list:")), registry)
    assert spec.train is not None and spec.train.optimizer.learning_rate == 0.001


def test_yaml_reads_integers_as_yaml_1_2_does_not_as_octal_or_sexagesimal(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads 010 as 8, 1:30 as 90, 1_0 as 10, 0b100 as 4 and 08 as a string
    text = "list: [010, 08, 0o17, 0x1F, -12, +7, 1:30, 1_0, 0b100, 0o8, 1e3, 2.5, 0777]\n"
    document, _ = read_document(_write(tmp_path, "m.yaml", text))
    assert document["list"] == [10, 8, 15, 31, -12, 7, "1:30", "1_0", "0b100", "0o8", 1000.0, 2.5, 777]


def test_yaml_integers_yaml_1_2_does_not_read_are_refused_naming_their_field(
    tmp_path: Path, registry: nnplug.Registry
) -> None:
    text = ("input: [1, 8, 8]\nlayers:\n  - {type: flatten}\n  - {type: dense, units: 1:30}\n"
            "  - {type: dense, units: 010}\nloss: {type: softmax_cross_entropy}\n"
            "train: {epochs: 1_0, batch_size: 0b100}\n")
    with pytest.raises(nnplug.ConfigError) as info:
        load_model_file(_write(tmp_path, "m.yaml", text), registry)
    assert info.value.problems == [
        f"{tmp_path / 'm.yaml'}: layers[1] (dense) -> units: Input should be a valid integer (got '1:30') (line 4)",
        f"{tmp_path / 'm.yaml'}: train -> epochs: Input should be a valid integer (got '1_0') (line 7)",
        f"{tmp_path / 'm.yaml'}: train -> batch_size: Input should be a valid integer (got '0b100') (line 7)",
    ]
    spec = load_model_file(_write(tmp_path, "n.yaml", text.replace("1:30", "4").replace("train:", "# ")), registry)
    assert spec.nodes[2].config.units == 10  # type: ignore[attr-defined]


def test_an_explicit_yaml_int_tag_follows_yaml_1_2_too(tmp_path: Path) -> None:
    document, _ = read_document(_write(tmp_path, "m.yaml", 'a: !!int "010"\nb: !!int "0x10"\n'))
    assert document == {"a": 10, "b": 16}
    with pytest.raises(nnplug.ConfigError, match=r"line 1, column 4\): '1_0' is not an integer"):
        read_document(_write(tmp_path, "n.yaml", 'a: !!int "1_0"\n'))
    document, _ = read_document(_write(tmp_path, "f.yaml", "a: !!float 3\nb: !!float .5\nc: -.Inf\n"))
    assert document == {"a": 3.0, "b": 0.5, "c": float("-inf")}
    with pytest.raises(nnplug.ConfigError, match=r"'1:30.0' is not a float"):  # (YAML 1.1: 90.0)
        read_document(_write(tmp_path, "g.yaml", "a: !!float 1:30.0\n"))


NAME_RULE = "name: expected a non-empty string of at most 128 characters without control characters"


@pytest.mark.parametrize(("section", "value", "message"), [
    ("name", "a\u0000b", NAME_RULE),
    ("name", "line\nbreak", NAME_RULE),
    ("name", "next\u0085line", NAME_RULE),
    ("name", "half\ud800pair", NAME_RULE),
    ("seed", 2**63, r"seed: expected an int from 0 to 2\*\*63 - 1, got 9223372036854775808"),
    ("name", "", "name: expected a non-empty string"),
    ("name", "x" * 129, "name: expected a non-empty string"),
    ("data", {"source": "npz", "path": "x\u0000.npz"}, "data -> path: String should match pattern"),
])
def test_a_name_or_path_the_file_system_cannot_take_or_a_seed_numpy_cannot_is_a_config_error(
    tmp_path: Path, registry: nnplug.Registry, section: str, value: object, message: str,
) -> None:
    path = _write(tmp_path, "m.json", json.dumps({**MLP, section: value}))
    with pytest.raises(nnplug.ConfigError, match=message):
        load_model_file(path, registry)


def test_a_yaml_date_or_set_and_a_toml_date_are_refused_naming_their_field(
    tmp_path: Path, registry: nnplug.Registry
) -> None:
    text = ("input: [4]\nlayers:\n  - {type: dense, units: 2, name: 2024-01-01}\n"
            "  - {type: dense, units: 3, bias: !!set {a}}\nloss: {type: mse}\n")
    with pytest.raises(nnplug.ConfigError) as info:
        load_model_file(_write(tmp_path, "m.yaml", text), registry)
    assert "layers[0] (dense) -> name: a date is not a configuration value" in str(info.value)
    assert "layers[1] (dense) -> bias: a set is not a configuration value" in str(info.value)
    toml = 'input = [4]\n[[layers]]\ntype = "dense"\nunits = 2\n[loss]\ntype = "mse"\n[train]\nepochs = 1979-05-27\n'
    with pytest.raises(nnplug.ConfigError, match="train -> epochs: a date is not a configuration value"):
        load_model_file(_write(tmp_path, "m.toml", toml), registry)


def test_a_duplicate_json_key_is_named_with_the_path_of_its_object(tmp_path: Path) -> None:
    text = ('{"input": [4], "layers": [{"type": "relu"}, {"type": "dense", "units": 2, "units": 3, "bias": true, '
            '"bias": false}], "loss": {}}')
    with pytest.raises(nnplug.ConfigError, match=r"m.json: layers\[1\]: duplicate key 'units'"):
        read_document(_write(tmp_path, "m.json", text))


def test_thousands_of_unknown_fields_in_a_node_are_listed_up_to_a_bound(
    tmp_path: Path, registry: nnplug.Registry
) -> None:
    node = {"type": "dense", "units": 2} | {f"k{i}": i for i in range(5000)}
    path = _write(tmp_path, "m.json", json.dumps({**MLP, "layers": [node]}))
    with pytest.raises(nnplug.ConfigError) as info:
        load_model_file(path, registry)
    lines = str(info.value).splitlines()
    assert len(lines) == 21 and "k0: unknown field" in lines[0]
    assert lines[-1].endswith("layers[0] (dense): and 4,980 more invalid field(s) not listed")


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".toml"])
def test_a_byte_order_mark_is_dropped_in_every_format(tmp_path: Path, suffix: str) -> None:
    text = {".yaml": "input: [4]\n", ".json": '{"input": [4]}', ".toml": "input = [4]\n"}[suffix]
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_document(path)[0] == {"input": [4]}


def test_a_default_name_taken_by_a_named_node_says_which_and_how_to_fix_it(
    tmp_path: Path, registry: nnplug.Registry
) -> None:
    text = json.dumps({**MLP, "layers": [{"type": "flatten", "name": "dense_1"}, {"type": "dense", "units": 10}]})
    with pytest.raises(nnplug.ConfigError) as info:
        load_model_file(_write(tmp_path, "m.json", text), registry)
    assert "layers[1] (dense): its default name 'dense_1' is already used by layers[0]; give one of them " \
           "another name" in str(info.value)


def test_a_device_or_a_pipe_is_refused_without_being_read(tmp_path: Path) -> None:
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")  # endless: its size reads 0
    os.mkfifo(tmp_path / "pipe.yaml")  # opening it would wait for a writer
    for name in ("zero.yaml", "pipe.yaml"):
        with pytest.raises(nnplug.ConfigError, match="not a regular file"):
            read_document(tmp_path / name)


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modelfile, "MAX_FILE_BYTES", 100)
    path = _write(tmp_path, "m.json", "{" + " " * 120 + "}")
    with pytest.raises(nnplug.ConfigError, match="more than the 100 bytes a model file may hold"):
        read_document(path)
    read_document(_write(tmp_path, "n.json", "{" + " " * 98 + "}"))  # 100 bytes: read


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate(example: Path, registry: nnplug.Registry) -> None:
    spec = load_model_file(example, registry)
    missing = [n.cls for n in spec.nodes if n.config.type not in registry]
    assert not missing
    assert spec.data is not None and spec.train is not None
    build_model(example, registry)


def test_schema_is_a_discriminated_union_of_the_registered_types(registry: nnplug.Registry) -> None:
    schema = model_json_schema(registry)
    json.dumps(schema)  # plain JSON
    items = schema["properties"]["layers"]["items"]
    mapping = items["discriminator"]["mapping"]
    assert set(mapping) == set(registry.layer_types())
    assert {"data", "train", "input", "layers", "loss"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    dense = schema["$defs"][mapping["dense"].split("/")[-1]]
    assert "units" in dense["required"] and dense["additionalProperties"] is False


class _SwishConfig(nnplug.LayerConfig):
    type: Literal["test_swish"] = "test_swish"
    beta: float = 1.0


class _Swish(nnplug.Layer):
    Config = _SwishConfig

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape


class _SwishPlugin:
    @nnplug.hookimpl
    def nnplug_register_layers(self) -> list[type]:
        return [_Swish]


def test_a_third_party_layer_appears_in_the_schema_once_installed() -> None:
    registry = nnplug.Registry(plugins=[_SwishPlugin()])
    schema = model_json_schema(registry)
    mapping = schema["properties"]["layers"]["items"]["discriminator"]["mapping"]
    assert "test_swish" in mapping
    assert "test_swish" not in json.dumps(model_json_schema(nnplug.load_registry()))


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                     st.text(max_size=8), st.sampled_from(["dense", "relu", "flatten", "add", "conv2d", "same"]))
_documents = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["type", "units", "inputs", "name", "layers", "loss", "input", "filters", "kernel_size", "x"]),
        inner, max_size=4)), max_leaves=20)


@given(layers=st.lists(st.one_of(_documents, st.fixed_dictionaries(
    {"type": st.sampled_from(["dense", "relu", "flatten", "add", "conv2d", "maxpool2d"])},
    optional={"units": _scalars, "filters": _scalars, "kernel_size": _scalars, "inputs": _documents})),
    max_size=5), top=_documents, fmt=st.sampled_from(["yaml", "json"]))
def test_random_documents_give_a_model_or_a_clean_error(
    registry: nnplug.Registry, layers: list[object], top: object, fmt: str
) -> None:
    document = {"input": [1, 8, 8], "layers": layers, "loss": {"type": "softmax_cross_entropy"}}
    if isinstance(top, dict):
        document.update(top)
    try:
        text = yaml.safe_dump(document) if fmt == "yaml" else json.dumps(document)
    except (ValueError, yaml.YAMLError):
        return
    with tempfile.TemporaryDirectory() as tmp:  # a fresh file per example
        path = Path(tmp) / f"fuzz.{fmt}"
        path.write_text(text)
        try:
            build_model(path, registry)
        except (nnplug.ConfigError, nnplug.ShapeError) as exc:
            assert str(exc).strip()
