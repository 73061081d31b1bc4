"""The report ``nnplug.gradcheck(..., raise_on_failure=False)`` returns, read as a truth value."""

from __future__ import annotations

import numpy as np

import nnplug


def _dense() -> nnplug.Layer:
    return nnplug.load_registry().get("dense")({"units": 3})


def test_a_passing_report_is_true():
    x = np.random.default_rng(0).standard_normal((4, 5))
    assert nnplug.gradcheck(_dense(), x, raise_on_failure=False)


def test_a_failing_report_is_false_so_assert_report_cannot_pass_a_wrong_gradient():
    dense = _dense()

    class Scaled(type(dense)):  # type: ignore[misc]
        def backward(self, params, cache, dy):  # type: ignore[no-untyped-def]
            dx, grads = super().backward(params, cache, dy)
            return dx * 1.1, grads

    x = np.random.default_rng(0).standard_normal((4, 5))
    report = nnplug.gradcheck(Scaled({"units": 3}), x, raise_on_failure=False)
    assert not report.ok
    assert not report


def test_a_report_that_met_a_kink_is_false():
    relu = nnplug.load_registry().get("relu")({})
    report = nnplug.gradcheck(relu, np.zeros((3, 4)), raise_on_failure=False)
    assert report.kinks
    assert not report
