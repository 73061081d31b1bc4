"""Reading model files: YAML, JSON or TOML by extension, then ``nnplug.config.parse_model``.

YAML is read with PyYAML's safe loader only (no tags that construct Python objects). A
subclass records the line of every node so each problem names its line, refuses duplicate
keys, and refuses anchors/aliases that would expand the document past ``MAX_NODES``.
"""

from __future__ import annotations

import json
import re
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nnplug.config import ModelSpec, parse_model
from nnplug.errors import ConfigError, PluginError, ShapeError
from nnplug.registry import Registry

if TYPE_CHECKING:
    from nnplug.graph import Model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

MAX_FILE_BYTES = 10_000_000
#: Nodes of the document once aliases are expanded; a model file has a few hundred.
MAX_NODES = 100_000
#: Flow nesting ([ ], { }) a YAML model file may use.
MAX_DEPTH = 64
FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml"}

Path_ = tuple[str, ...]


class LineLoader(yaml.SafeLoader):
    """A SafeLoader that maps each node's path to its line and checks the node graph."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.lines: dict[Path_, int] = {}
        self.problems: list[str] = []

    # PyYAML's scanner slows quadratically with the depth of [ ] and { } nesting, so deep
    # nesting is refused while scanning, long before a document could be built.
    def fetch_flow_sequence_start(self) -> None:
        self._check_depth()
        super().fetch_flow_sequence_start()

    def fetch_flow_mapping_start(self) -> None:
        self._check_depth()
        super().fetch_flow_mapping_start()

    def _check_depth(self) -> None:
        if self.flow_level >= MAX_DEPTH:
            line = self.get_mark().line + 1
            raise ConfigError(f"{self.source}: nested more than {MAX_DEPTH} levels deep (line {line}); "
                              "too deep to be a model file")

    def walk(self, root: yaml.Node) -> None:
        """Record lines, find duplicate keys, and bound the size after alias expansion.

        Iterative, so deep nesting cannot exhaust the stack; every visit of a node reached
        through an alias counts, which is what a consumer of the data would pay.
        """
        # where: the path as every other message writes it (layers[1] -> kernel_size), as JSON's too
        stack: list[tuple[yaml.Node, Path_, tuple[int, ...], str]] = [(root, (), (), "")]
        visits = 0
        while stack:
            node, path, ancestors, where = stack.pop()
            visits += 1
            if visits > MAX_NODES:
                raise ConfigError(
                    f"{self.source}: the document expands past {MAX_NODES:,} nodes "
                    "(anchors and aliases repeated too often?); refusing to read it"
                )
            if id(node) in ancestors:
                raise ConfigError(f"{self.source}: an alias refers to a node containing it "
                                  f"(line {node.start_mark.line + 1}); recursive documents are refused")
            self.lines.setdefault(path, node.start_mark.line + 1)
            inner = (*ancestors, id(node))
            if isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    stack.append((item, (*path, str(i)), inner, f"{where}[{i}]"))
            elif isinstance(node, yaml.MappingNode):
                seen: dict[str, int] = {}
                for key, value in node.value:
                    line = key.start_mark.line + 1
                    if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                        if key.value in seen:
                            self.problems.append(
                                f"duplicate key {key.value!r} in {where or 'the top level'} (line {line}); "
                                f"first given on line {seen[key.value]}"
                            )
                        seen.setdefault(key.value, line)
                        self.lines.setdefault((*path, key.value), line)
                    name = str(getattr(key, "value", "?"))
                    stack.append((value, (*path, name), inner, f"{where} -> {name}" if where else name))

    def locate(self, path: tuple[Any, ...]) -> int | None:
        return self.lines.get(tuple(str(p) for p in path)) if path else None


# YAML 1.1, which PyYAML implements, differs from YAML 1.2 and JSON on numbers: 1e-3 is a
# string (floats need a dot), 010 is octal 8 and 08 a string, 1:30 is sexagesimal 90 (and
# 1:30.0 is 90.0), 1_0 is 10 and 0b100 is 4. Model files read numbers by the YAML 1.2 core
# schema instead: decimal, 0o octal and 0x hex integers; floats with a dot or an exponent (and
# .inf, .nan, which validation refuses); anything else stays a string, which validation then
# refuses naming its field.
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_YAML12_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_YAML12_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*|[0-9]+)(?:[eE][-+]?[0-9]+)?"
                           r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in LineLoader.yaml_implicit_resolvers.items()
}
# The integer rule first: the float rule also matches a plain 12 (YAML 1.2 tries int first).
LineLoader.add_implicit_resolver(_INT_TAG, _YAML12_INT, list("-+0123456789"))
LineLoader.add_implicit_resolver(_FLOAT_TAG, _YAML12_FLOAT, list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """A YAML 1.2 core-schema integer (also for an explicit ``!!int``, which YAML 1.1 rules
    would read as octal, sexagesimal or with underscores)."""
    value = str(loader.construct_scalar(node))
    if not _YAML12_INT.match(value):
        raise yaml.constructor.ConstructorError(
            None, None, f"{value!r} is not an integer (decimal, 0o octal or 0x hex)", node.start_mark)
    if value.startswith(("0o", "0x")):
        return int(value[2:], 8 if value[1] == "o" else 16)
    return int(value)  # decimal: a leading zero is a digit, as in YAML 1.2 and JSON


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    """A YAML 1.2 core-schema float, also for an explicit ``!!float`` (no underscores, no
    sexagesimal)."""
    value = str(loader.construct_scalar(node))
    if _YAML12_INT.match(value) and not value.startswith(("0o", "0x")):
        return float(value)  # !!float 3
    if not _YAML12_FLOAT.match(value):
        raise yaml.constructor.ConstructorError(None, None, f"{value!r} is not a float", node.start_mark)
    return float(value.replace(".", "", 1) if value.lower().lstrip("+-") in (".inf", ".nan") else value)


LineLoader.add_constructor(_INT_TAG, _construct_int)
LineLoader.add_constructor(_FLOAT_TAG, _construct_float)


def _load_yaml(text: str, source: str) -> tuple[Any, LineLoader]:
    try:
        loader = LineLoader(text, source)
    except yaml.reader.ReaderError as exc:  # the reader refuses control characters at once
        # position indexes the text; line and column, as every other YAML error gives them
        before = text[:exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        raise ConfigError(f"{source}: invalid YAML: {exc.reason} (character #x{exc.character:04x} "
                          f"at line {line}, column {column})") from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise ConfigError(f"{source}: the file is empty")
        loader.walk(root)
        if loader.problems:
            problems = [f"{source}: {p}" for p in loader.problems]
            raise ConfigError("\n".join(problems), problems)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{source}: YAML syntax error{at}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, loader


class _WithDuplicates(dict[str, Any]):
    """A JSON object that repeated a key: the hook cannot say where it is, the walk after can."""

    duplicate: str


def _note_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out and not isinstance(out, _WithDuplicates):  # the first repeated key is named
            marked = _WithDuplicates(out)
            marked.duplicate = key
            out = marked
        out[key] = value
    return out


def _first_duplicate(data: Any, path: str = "") -> str | None:
    """``path: duplicate key`` of the first object (in document order) that repeats a key."""
    if isinstance(data, dict):
        if isinstance(data, _WithDuplicates):
            return f"{path or 'top level'}: duplicate key {data.duplicate!r}"
        children: Any = ((f"{path} -> {k}" if path else str(k), v) for k, v in data.items())
    elif isinstance(data, list):
        children = ((f"{path}[{i}]", v) for i, v in enumerate(data))
    else:
        return None
    for where, value in children:
        found = _first_duplicate(value, where)
        if found:
            return found
    return None


def _check_depth(data: Any, source: str) -> None:
    """Refuse JSON or TOML data nested deeper than ``MAX_DEPTH``, as YAML is refused while scanning.

    Without this a value nested ~200 levels deep reaches pydantic's JSON parser, whose recursion
    limit then reads as "Invalid JSON ... at line 1 column C" of a text the user never wrote.
    Iterative, so it cannot exhaust the stack itself.
    """
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep; "
                                  "too deep to be a model file")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


def _load_json(text: str, source: str) -> Any:
    def no_constant(name: str) -> Any:
        raise ConfigError(f"{source}: {name} is not a JSON number; write a finite number")

    try:
        data = json.loads(text, object_pairs_hook=_note_duplicates, parse_constant=no_constant)
        duplicate = _first_duplicate(data)
        if duplicate:  # JSON would keep the last silently; the file means one of them
            raise ConfigError(f"{source}: {duplicate} (a key is given once per object)")
        return data
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: JSON syntax error (line {exc.lineno}, column {exc.colno}): "
                          f"{exc.msg}") from None
    except ConfigError as exc:
        message = str(exc) if str(exc).startswith(source) else f"{source}: {exc}"
        raise ConfigError(message) from None


def _load_toml(text: str, source: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line L, column C)" and, for a key given twice, not the key
        # ("Cannot overwrite a value"): the line itself names it
        at = re.search(r"at line (\d+)", str(exc))
        lines = text.split("\n")  # as tomllib counts lines (splitlines would split on U+2028 too)
        shown = lines[int(at[1]) - 1].strip() if at and 0 < int(at[1]) <= len(lines) else ""
        quoted = f": {shown[:80]!r}" if shown else ""
        raise ConfigError(f"{source}: TOML syntax error: {exc}{quoted}") from None


def read_document(path: str | Path) -> tuple[Any, Any]:
    """Read ``path`` into plain data; returns ``(data, locate)`` where ``locate`` maps a
    path inside the data to a line (YAML only; otherwise ``None``).

    Raises:
        ConfigError: unknown extension, missing or unreadable file, syntax error, duplicate
            keys, a document too large or too deeply nested.
    """
    path = Path(path)
    source = str(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"{source}: unknown model file extension {path.suffix!r}; "
                          f"expected one of {', '.join(FORMATS)}")
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) and not path.is_dir():  # a device would never end, a pipe block
            raise ConfigError(f"{source}: not a regular file (a device, pipe or socket)")
        raw = b""
        if info.st_size <= MAX_FILE_BYTES:
            with path.open("rb") as f:  # read(n) reserves n bytes: ask for the size, then any growth
                raw = f.read(info.st_size + 1)
                if len(raw) > info.st_size:
                    raw += f.read(MAX_FILE_BYTES + 1 - len(raw))
        if info.st_size > MAX_FILE_BYTES or len(raw) > MAX_FILE_BYTES:
            raise ConfigError(f"{source}: more than the {MAX_FILE_BYTES:,} bytes a model file may hold")
        text = raw.decode("utf-8-sig")  # a byte-order mark, as some editors write, is dropped
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such model file") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a directory, not a model file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read ({exc.strerror or exc})") from None
    try:
        if kind == "yaml":
            data, loader = _load_yaml(text, source)
            return data, loader.locate
        data = _load_json(text, source) if kind == "json" else _load_toml(text, source)
        _check_depth(data, source)
        return data, None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a model file") from None
    except ConfigError:
        raise
    except ValueError as exc:  # an integer past Python's 4300-digit limit, from any of the parsers
        raise ConfigError(f"{source}: a value cannot be read: {str(exc).split(';')[0]}") from None


def _load(path: str | Path, registry: Registry) -> tuple[ModelSpec, Any]:
    data, locate = read_document(path)
    try:
        return parse_model(data, registry, source=str(path), locate=locate), locate
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a model file") from None


def load_model_file(path: str | Path, registry: Registry) -> ModelSpec:
    """Read and validate a model file.

    Raises:
        ConfigError: every problem of the file, one line each, with its path in the file
            (``layers[2] (conv2d) -> kernel_size: ...``) and, for YAML, ``(line N)``.
    """
    return _load(path, registry)[0]


_NODE_WHERE = re.compile(r"^(?:layers\[(\d+)\]|(loss)\b)")


def build_model(path: str | Path, registry: Registry, *, init: bool = True, draw_up_to: int = 0) -> Model:
    """Read, validate and build a model file into a :class:`nnplug.Model`; with
    ``init=False`` no weight is drawn (but the model is counted and budget-checked, as
    :meth:`nnplug.Model.parameter_counts` does), enough to check and summarise it, unless
    the model has at most ``draw_up_to`` parameters (then drawing them is cheap).

    Raises:
        ConfigError: the file is invalid (see :func:`load_model_file`).
        ShapeError: a node does not fit the shape it receives; the message starts with the
            file and, for YAML, ends with the node's line.
    """
    spec, locate = _load(path, registry)
    return build_located(spec, registry, path, locate, init=init, draw_up_to=draw_up_to)


def build_located(spec: ModelSpec, registry: Registry, path: str | Path, locate: Any, *,
                  init: bool = True, draw_up_to: int = 0) -> Model:
    """Build a model parsed from the file ``path``: an error a node raises while the graph is
    built (a shape that does not fit, a plugin that broke) starts with the file and ends
    with the node's line where ``locate`` knows it."""
    from nnplug.graph import Model

    try:
        model = Model(spec, registry, init=init)
        # (not init: layers without param_shapes are drawn to be counted and budget-checked)
        if not init and model.parameter_count() <= draw_up_to:
            model.params = model.init_params(spec.seed)
        return model
    except (ShapeError, PluginError, ConfigError) as exc:  # a node that does not fit, a cycle, a plugin that broke
        # one line per problem (build_nodes reports every branch's misfit), each located
        lines = [_located_line(text, path, locate) for text in str(exc).split("\n")]
        if isinstance(exc, ConfigError):
            raise ConfigError("\n".join(lines), lines) from None
        raise type(exc)("\n".join(lines)) from None


def _located_line(message: str, path: str | Path, locate: Any) -> str:
    """``message`` starting with the file and, where it names a node ``locate`` knows, ending
    with that node's line."""
    match = _NODE_WHERE.match(message)
    line = None
    if match and locate is not None:
        line = locate(("layers", int(match[1])) if match[1] else ("loss",))
    return f"{path}: {message}" + (f" (line {line})" if line else "")
