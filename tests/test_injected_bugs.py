"""The gradient checker as a figure: every injected backward bug in ``buggy_layers`` is flagged
by ``check_layer``/``check_loss`` and by the ``nnplug gradcheck`` runner, in both modes, while
the correct layers pass the same cases."""

from __future__ import annotations

import buggy_layers
import pytest

import nnplug
from nnplug.property_runs import gradcheck_main, run_type
from nnplug.testing import ConformanceError, check

REGISTRY = nnplug.Registry(plugins=[buggy_layers])
BUGS = sorted(buggy_layers.BUGS)
CNN = {"conv2d", "maxpool2d", "avgpool2d"}


def _base_type(bug: str) -> str:
    return REGISTRY.get(bug).__mro__[1].type_name()


def test_the_buggy_plugin_loads_beside_the_builtin_layers():
    statuses = {info.name: info.status for info in REGISTRY.plugins}
    assert statuses["buggy_layers"] == "loaded"
    assert set(BUGS) <= set(REGISTRY.types)


def test_every_builtin_layer_and_loss_has_injected_bugs():
    builtin = set(nnplug.load_registry().types)
    expected = {"dense", "relu", "leaky_relu", "sigmoid", "tanh", "flatten", "add", "concat",
                "softmax_cross_entropy", "mse"} | (builtin & (CNN | {"global_avgpool"}))
    covered = {_base_type(b) for b in BUGS}
    assert expected <= covered
    assert len(BUGS) >= 12 + 6 * (builtin >= CNN)


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("bug", BUGS)
def test_check_flags_the_injected_bug_on_its_witness_case(bug, mode):
    with pytest.raises(ConformanceError) as info:
        check(bug, buggy_layers.WITNESSES[bug], seed=0, mode=mode, registry=REGISTRY)
    assert info.value.check == "gradient"
    assert info.value.report is not None and info.value.report.failures


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("bug", BUGS)
def test_the_correct_layer_passes_the_same_witness_case(bug, mode):
    result = check(_base_type(bug), buggy_layers.WITNESSES[bug], seed=0, mode=mode, registry=REGISTRY)
    assert result.report.ok


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_the_gradcheck_runner_flags_every_bug_and_passes_every_correct_layer(mode, capsys):
    caught = [b for b in BUGS if run_type(REGISTRY, b, examples=10, seed=0, mode=mode).status == "FAILED"]
    correct = sorted({_base_type(b) for b in BUGS})
    passed = [t for t in correct if run_type(REGISTRY, t, examples=10, seed=0, mode=mode).status == "passed"]
    print(f"{mode} mode: {len(caught)} of {len(BUGS)} injected bugs caught")
    assert caught == BUGS
    assert passed == correct


def test_the_gradcheck_command_exits_1_listing_every_bug(capsys):
    assert gradcheck_main(REGISTRY, BUGS, examples=10, seed=1, mode="fast", quiet=True) == 1
    out = capsys.readouterr().out
    assert f"{len(BUGS)} types checked, 0 passed, {len(BUGS)} failed" in out
    for bug in BUGS:
        assert f"check_{'loss' if bug in REGISTRY.loss_types() else 'layer'}({bug!r}" in out
