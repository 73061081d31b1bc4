"""How a config's validation errors are told: one line per field, with its path, what was
expected and what was received, and for a misspelled field the name it nearly spells; and
:class:`Problems`, which gathers a model description's lines with their paths and file lines."""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from nnplug import _suggest

#: Invalid fields listed per config before the rest are counted in one line (a node with
#: 300,000 unknown keys is one mistake, not a 300,000-line report).
MAX_FIELD_LINES = 20


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (``Sub``, ``Sub | None``, ``list[Sub]``, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in nested_models(arg)]


def input_names(model: type[BaseModel]) -> dict[str, str]:
    """``{key: field name}``: the keys a document gives ``model``'s fields by, which for a field
    with an alias is the alias (and its own name only where the model sets
    ``populate_by_name``/``validate_by_name``), for every other field its name."""
    settings = model.model_config
    by_name = bool(settings.get("populate_by_name") or settings.get("validate_by_name"))
    names: dict[str, str] = {}
    for name, field in model.model_fields.items():
        alias = field.validation_alias if field.validation_alias is not None else field.alias
        choices = getattr(alias, "choices", [alias])  # AliasChoices, or one alias (or None)
        keys = [c for c in choices if isinstance(c, str)]
        for key in keys if keys and alias is not None else [name]:
            names[key] = name
        if by_name or alias is None:
            names[name] = name
    return names


def ignored_names(model: type[BaseModel], data: Mapping[Any, Any], loc: tuple[str | int, ...] = ()
                  ) -> list[dict[str, Any]]:
    """The keys of ``data`` that name a field of ``model`` by its own name where the model reads
    it by its alias, at any depth, as pydantic's ``extra_forbidden`` errors. pydantic's JSON
    validation ignores such a key without a word even with ``extra="forbid"`` (its Python mode
    refuses it), so a model file writing ``slope: 0.5`` for a field aliased ``slope-factor``
    would train with the default."""
    names = input_names(model)
    found: list[dict[str, Any]] = []
    for key, value in data.items():
        if not isinstance(key, str):
            continue
        if key not in names:
            if key in model.model_fields:
                found.append({"type": "extra_forbidden", "loc": (*loc, key), "input": value})
            continue
        nested = nested_models(model.model_fields[names[key]].annotation)
        if len(nested) != 1:
            continue
        if isinstance(value, Mapping):  # a nested model, or a list of them
            items = [((*loc, key), value)]
        elif isinstance(value, (list, tuple)):
            items = [((*loc, key, i), v) for i, v in enumerate(value) if isinstance(v, Mapping)]
        else:
            continue
        for where, item in items:
            found.extend(ignored_names(nested[0], item, where))
    return found


#: What pydantic puts before the message of a validator's ValueError or AssertionError.
_PYDANTIC_PREFIX = re.compile(r"^(Value error|Assertion failed), ")


def _model_at(model: type[BaseModel] | None, parts: list[str]) -> type[BaseModel] | None:
    """The model found at ``parts`` (the keys a document uses, list indices skipped) inside
    ``model``; None when the path leads to no single model."""
    for part in parts:
        name = input_names(model).get(part) if model is not None else None
        field = model.model_fields.get(name) if model is not None and name is not None else None
        if field is None and not part.isdigit():
            return None
        if field is not None:
            nested = nested_models(field.annotation)
            model = nested[0] if len(nested) == 1 else None
    return model


def _misspellings(by_field: Mapping[str, tuple[list[str], Any]], model: type[BaseModel] | None,
                  given: Collection[str] = ()) -> dict[str, str]:
    """For each unknown field, what to tell of it (``did you mean 'units'?``, else the fields
    there are), and for each required field left out that one of them nearly spells, a
    pointer to it. Only the first few unknown fields are looked at: a node with thousands
    is not one misspelling."""
    hints: dict[str, str] = {}
    missing = {f for f, (msgs, _) in by_field.items() if "Field required" in msgs}
    unknown = [f for f, (msgs, _) in by_field.items() if "unknown field" in msgs]
    for path in unknown[:MAX_FIELD_LINES]:
        *parent, key = path.split(".")
        here = _model_at(model, parent)
        keys = input_names(here) if here is not None else {}
        fields = list(keys)
        if not fields:
            continue
        aliased: dict[str, str] = {}
        for k, name in keys.items():
            if k != name:
                aliased.setdefault(name, k)  # the first of several aliases
        if key in aliased:  # a field's own name, where a document gives it by its alias
            hints[path] = f"did you mean {aliased[key]!r}? (the field's name in a model file)"
            continue
        at = ".".join(parent) + "." if parent else ""
        left_out = [f for f in fields if at + f in missing]
        # not a field the config already has (``given``: its top-level keys)
        near = _suggest.nearest(key, [f for f in fields if parent or f not in given], first=left_out)
        hints[path] = f"did you mean {near!r}?" if near else f"the fields are {_suggest.listed(fields)}"
        if near is not None and at + near in missing:
            hints.setdefault(at + near, f"is {key!r} a misspelling of it?")
    return hints


def format_validation_error(error: ValidationError | None, prefix: str = "",
                            model: type[BaseModel] | None = None, given: Collection[str] = (),
                            also: list[dict[str, Any]] | None = None) -> list[str]:
    """One line per invalid field: ``prefix -> field: what was expected (got X)``, at most
    :data:`MAX_FIELD_LINES` of them and then a count of the rest.

    pydantic reports each branch of a union separately; they are folded into one line. Given
    the ``model`` validated, an unknown field is told the nearest field name it does not
    already have (``given``: its keys), or the fields there are, and a required field left out
    the unknown one that nearly spells it. ``also``: further errors in pydantic's form
    (:func:`ignored_names`), told with the rest.
    """
    by_field: dict[str, tuple[list[str], Any]] = {}
    items = [*(error.errors(include_url=False) if error is not None else []), *(also or [])]
    for item in items:
        loc = [str(part) for part in item["loc"]]
        # A union branch appears as a location part naming the branch type; drop it.
        field_parts = [p for p in loc if not _looks_like_branch(p)]
        field = ".".join(field_parts) or "(config)"
        msgs, received = by_field.setdefault(field, ([], item.get("input")))
        msg = item.get("msg", "")
        if item["type"] == "extra_forbidden":
            msg = "unknown field"
        elif item["type"] in ("value_error", "assertion_error"):  # a validator's own words
            msg = _PYDANTIC_PREFIX.sub("", msg, count=1)
        if msg not in msgs:
            msgs.append(msg)
    # A list whose items failed: pydantic adds "too short" once it drops them; such a parent
    # field is left out (found through every field's prefixes: linear in the fields).
    parents = {".".join(parts[:k]) for parts in (f.split(".") for f in by_field) for k in range(1, len(parts))}
    lines = []
    shown_fields = [f for f in by_field if f not in parents]
    hints = _misspellings({f: by_field[f] for f in shown_fields}, model, given)
    for field in shown_fields[:MAX_FIELD_LINES]:
        msgs, received = by_field[field]
        text = msgs[0] if len(msgs) == 1 else "expected one of: " + "; ".join(msgs)
        text += f"; {hints[field]}" if field in hints else ""
        if field == "(config)" and prefix:  # a rule across fields: its own words name them
            lines.append(f"{prefix}: {text}")
            continue
        shown = repr(received)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        head = f"{prefix} -> {field}" if prefix else field
        lines.append(f"{head}: {text} (got {shown})")
    if len(shown_fields) > MAX_FIELD_LINES:
        rest = len(shown_fields) - MAX_FIELD_LINES
        lines.append(f"{prefix or '(config)'}: and {rest:,} more invalid field(s) not listed")
    return lines


def _looks_like_branch(part: str) -> bool:
    return (any(ch in part for ch in "[]'") or part in {"int", "str", "float", "bool", "none"}
            or part.startswith(("constrained-", "function-", "lax-", "json-or-python")))


#: Maps a path inside the description to a line number (YAML files provide one).
Locator = Callable[[tuple[Any, ...]], int | None]


#: The field a problem line names: ``... -> kernel_size: ...`` (``optimizer.lr`` when nested).
_FIELD_IN_MESSAGE = re.compile(r" -> ([A-Za-z_][\w.]*): ")


class Problems:
    """Collects problem lines, each with its path and (when known) the source line."""

    def __init__(self, locate: Locator | None) -> None:
        self._found: list[tuple[int, str]] = []
        self.locate = locate

    def add(self, path: tuple[Any, ...], message: str) -> None:
        line = None
        if self.locate:
            # the field's own line where the message names one the file has (block-style YAML
            # puts each key on its own line), else the line of the node or section
            field = _FIELD_IN_MESSAGE.search(message)
            line = (self.locate((*path, *field[1].split("."))) if field else None) or self.locate(path)
        # the nodes are checked in two passes (fields, then inputs): their lines go by node
        node = path[1] if path[:1] == ("layers",) and len(path) > 1 else -1
        self._found.append((node, f"{message} (line {line})" if line else message))

    @property
    def lines(self) -> list[str]:
        """Every problem, in the order found, except that a node's come in file order."""
        nodes = iter(sorted((item for item in self._found if item[0] >= 0), key=lambda item: item[0]))
        return [next(nodes)[1] if node >= 0 else text for node, text in self._found]
