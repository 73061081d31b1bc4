"""Testing layers (public API): cases and strategies, the conformance harness, pytest helpers.

A layer's ``gradcheck_cases()`` returns a hypothesis strategy of :class:`Case`: a config and
the input shapes (no batch axis); the checker draws the batch and the values, kept off the
layer's kinks as ``Case.values`` names. A plugin author's whole test file::

    import nnplug.testing
    test_swish = nnplug.testing.layer_test("swish")
    test_all_installed = nnplug.testing.all_layers_test()

``check_layer`` / ``check_loss`` run every property of the layer contract on one case and
raise :class:`ConformanceError` (an ``AssertionError``) naming the property that broke.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from nnplug._harness import (
    MAX_REDRAWS,
    CheckResult,
    ConformanceError,
    check,
    check_layer,
    check_loss,
    resolve,
)
from nnplug._strategies import (
    KINK_MARGIN,
    PARAM_KINDS,
    VALUE_KINDS,
    Case,
    Geometry,
    arrays,
    cases_for,
    conv_geometry,
    draw_values,
    image_shapes,
    is_checkable,
    labels,
    one_hot,
    pool_geometry,
    shapes,
)
from nnplug.gradcheck import Mode
from nnplug.registry import Registry, load_registry

__all__ = [
    "KINK_MARGIN",
    "MAX_REDRAWS",
    "PARAM_KINDS",
    "VALUE_KINDS",
    "Case",
    "CheckResult",
    "ConformanceError",
    "Geometry",
    "all_layers_test",
    "arrays",
    "cases_for",
    "check",
    "check_layer",
    "check_loss",
    "checkable_types",
    "conv_geometry",
    "draw_values",
    "image_shapes",
    "labels",
    "layer_test",
    "one_hot",
    "pool_geometry",
    "resolve",
    "seeds",
    "shapes",
]


def seeds() -> st.SearchStrategy[int]:
    """Seeds for :func:`check_layer` (batch size, parameters, values, the random ``R``)."""
    return st.integers(0, 2**32 - 1)


def _for_gradient_checks(test: Callable[..., None], *, explain: bool = True,
                         base: settings | None = None) -> Callable[..., None]:
    """Apply ``base`` (the author's settings; default: the loaded profile) with hypothesis's
    stock 200 ms deadline lifted (a gradient check runs dozens of forward passes, a conv2d
    case may take longer); a deadline set on purpose is kept. Without ``explain`` hypothesis's
    explain phase is skipped too: it re-runs a failing check dozens of times (about 20 s for
    one layer) to say what the error already says, the case and the seed.

    A test left undecorated (no ``base``, a profile without the stock deadline, keeping
    explain) can still take an ``@settings`` of its own; hypothesis refuses a second one on a
    decorated test, which is why the helpers take ``settings=`` instead. A test decorated
    anyway skips explain as well."""
    current = base if base is not None else settings.default
    changes: dict[str, Any] = {}
    if current is not None and current.deadline == timedelta(milliseconds=200):
        changes["deadline"] = None
    # A test decorated anyway takes no @settings of the author's, so keeping explain buys
    # nothing there: skip it as well.
    decorated = base is not None or bool(changes)
    if (decorated or not explain) and current is not None and Phase.explain in current.phases:
        changes["phases"] = tuple(p for p in current.phases if p is not Phase.explain)
    if not decorated and not changes:
        return test
    return settings(base, **changes)(test)


def checkable_types(registry: Registry | None = None,
                    types: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """``(types offering gradcheck_cases(), types offering none)`` among ``types`` (default: all
    registered ones, layers then losses, in registration order)."""
    registry = registry if registry is not None else load_registry()
    names = list(types) if types is not None else list(registry.types)
    with_cases = [n for n in names if is_checkable(registry.get(n))]
    return with_cases, [n for n in names if n not in with_cases]


def layer_test(cls_or_type: Any, *, mode: Mode = "full", registry: Registry | None = None,
               plugins: Iterable[Any] = (), settings: settings | None = None) -> Callable[[], None]:
    """A hypothesis test of one layer or loss type, for a test module: one line per type.

    ``test_swish = nnplug.testing.layer_test("swish")`` draws cases from the type's
    ``gradcheck_cases()`` and seeds, and runs :func:`check` on each. Hypothesis settings (the
    number of examples, derandomization) come from the caller's loaded profile, or from
    ``settings=hypothesis.settings(max_examples=5)``; either way hypothesis's stock 200 ms
    deadline is lifted (a deadline set another way is kept). The returned test then carries
    settings already, and hypothesis refuses a second ``@settings`` decorator: pass
    ``settings=`` instead (an undecorated test, under a profile without the stock deadline,
    takes the decorator too). The registry is looked up when the test runs, not at import:
    ``plugins`` are loaded beside the installed ones.
    """
    plugin_list = list(plugins)
    cache: dict[str, Registry] = {}

    def get_registry() -> Registry:
        # Loaded once, when the test first runs (not at import), and kept for every example.
        if registry is not None:
            return registry
        if "r" not in cache:
            cache["r"] = load_registry(plugin_list)
        return cache["r"]

    # Drawn inside the test, not as given's arguments: on a failure hypothesis's pytest plugin
    # would offer a patch adding @example to this function, which is nnplug's source, not the
    # caller's test file. (It offers none for tests drawing from st.data().)
    @given(data=st.data())
    def test(data: Any) -> None:
        case = data.draw(st.deferred(lambda: cases_for(cls_or_type, get_registry())), label="case")
        seed = data.draw(seeds(), label="seed")
        check(cls_or_type, case, seed=seed, mode=mode, registry=get_registry())

    test = _for_gradient_checks(test, base=settings)
    label = cls_or_type if isinstance(cls_or_type, str) else getattr(cls_or_type, "__name__", "layer")
    test.__name__ = test.__qualname__ = f"test_{label}_keeps_layer_contract"
    test.__doc__ = f"{label}: every case of gradcheck_cases() keeps the layer contract and its gradients."
    return test


def all_layers_test(registry: Registry | None = None, *, mode: Mode = "full",
                    types: Iterable[str] | None = None, settings: settings | None = None) -> Callable[..., None]:
    """A pytest test parametrised over every registered type that offers ``gradcheck_cases()``.

    ``test_every_layer = nnplug.testing.all_layers_test()`` in a test module checks all the
    installed layers and losses, one test id per type; ``settings`` as in :func:`layer_test`.
    Needs pytest (imported here only).
    """
    import pytest

    registry = registry if registry is not None else load_registry()
    names, _ = checkable_types(registry, types)

    @pytest.mark.parametrize("layer_type", names)
    @given(data=st.data())
    def test(layer_type: str, data: Any) -> None:
        case = data.draw(cases_for(layer_type, registry), label="case")
        seed = data.draw(seeds(), label="seed")
        check(layer_type, case, seed=seed, mode=mode, registry=registry)

    test.__name__ = test.__qualname__ = "test_every_layer_keeps_layer_contract"
    return _for_gradient_checks(test, base=settings)
