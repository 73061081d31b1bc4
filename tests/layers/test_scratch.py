"""Scratch buffers: reused per thread and key, bounded, and invisible in the layers' results."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from naive_geometry import naive_pads
from nnplug_layers import conv_engines, scratch
from nnplug_layers.conv2d import Conv2D
from test_conv2d import naive_conv, naive_conv_backward


@pytest.fixture(autouse=True)
def others_bytes():
    """Bytes held by other threads: held_bytes counts every live thread, and the batch-splitting
    pool's threads (nnplug_layers.workers) keep theirs from whichever test ran a large layer
    before this one, so the tests below count the calling thread's bytes beyond these."""
    scratch.release()
    yield scratch.held_bytes()
    scratch.release()


def test_the_same_key_shape_and_dtype_get_the_same_buffer_back():
    a = scratch.scratch("k", (3, 4), np.float32, zeroed=True)
    assert not a.any()
    a[...] = 7
    b = scratch.scratch("k", (3, 4), np.float32, zeroed=True)
    assert b is a and (b == 7).all()  # zeroed only when first made
    assert scratch.scratch("k", (3, 4), np.float64) is not a
    assert scratch.scratch("k", (4, 3), np.float32) is not a
    assert scratch.scratch("other", (3, 4), np.float32) is not a


def test_workspace_grows_to_the_largest_request_and_hands_out_a_prefix():
    small = scratch.workspace("w", 10, np.float64)
    big = scratch.workspace("w", 100, np.float64)
    again = scratch.workspace("w", 10, np.float64)
    assert small.shape == (10,) and big.shape == (100,) and again.shape == (10,)
    assert np.shares_memory(big, again) and not np.shares_memory(small, big)
    assert scratch.held_bytes() >= 100 * 8


def test_each_thread_has_its_own_buffers():
    mine = scratch.scratch("t", 16, np.float32)
    theirs = []
    worker = threading.Thread(target=lambda: theirs.append(scratch.scratch("t", 16, np.float32)))
    worker.start()
    worker.join()
    assert not np.shares_memory(mine, theirs[0])


def test_least_recently_used_buffers_are_dropped_past_the_limit(monkeypatch, others_bytes):
    monkeypatch.setattr(scratch, "SCRATCH_LIMIT", 1000)
    first = scratch.scratch("a", 100, np.float32)  # 400 bytes
    scratch.scratch("b", 100, np.float32)
    scratch.scratch("a", 100, np.float32)  # "a" is now the most recent
    scratch.scratch("c", 100, np.float32)  # 1200 bytes: "b" goes
    assert scratch.scratch("a", 100, np.float32) is first
    assert scratch.held_bytes() - others_bytes <= 1000
    huge = scratch.scratch("huge", 1000, np.float32)  # over the limit alone: never kept
    assert scratch.scratch("huge", 1000, np.float32) is not huge


def test_release_drops_the_calling_threads_buffers(others_bytes):
    a = scratch.scratch("r", 8, np.float32)
    scratch.release()
    assert scratch.held_bytes() - others_bytes <= 0  # less when an idle worker thread ended meanwhile
    assert scratch.scratch("r", 8, np.float32) is not a


def _conv_case(n, padding, seed):
    layer = Conv2D({"filters": 3, "kernel_size": 3, "padding": padding, "engine": "gemm"})
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2, 6, 5))
    params = layer.init_params((2, 6, 5), rng)
    params["b"] = rng.standard_normal(3)
    return layer, x, params, rng.standard_normal((n, 3, *layer.output_shape((2, 6, 5))[1:]))


@pytest.mark.parametrize("padding", [1, "same", "valid", [2, 0]])
def test_conv2d_stays_exact_when_buffers_are_reused_across_batch_sizes(padding, monkeypatch):
    # Chunks of 2 images: an odd batch ends on a short chunk, whose buffers differ from the
    # full ones; each call must see zero padding whatever the calls before it left behind.
    monkeypatch.setattr(conv_engines, "chunk_size", lambda batch, layout, rows, itemsize: min(2, batch))
    for seed, n in enumerate([5, 2, 3, 5, 1, 4]):
        layer, x, params, dy = _conv_case(n, padding, seed)
        y, cache = layer.forward(params, x, training=True)
        dx, grads = layer.backward(params, cache, dy)
        pads = naive_pads(6, 5, (3, 3), (1, 1), padding)
        np.testing.assert_allclose(y, naive_conv(x, params["w"], params["b"], (1, 1), pads), rtol=1e-10, atol=1e-12)
        dx_ref, dw_ref, _ = naive_conv_backward(x, params["w"], dy, (1, 1), pads)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grads["w"], dw_ref, rtol=1e-10, atol=1e-12)


def test_conv2d_results_are_not_overwritten_by_later_calls():
    layer, x, params, dy = _conv_case(4, 1, 0)
    y, cache = layer.forward(params, x, training=True)
    dx, grads = layer.backward(params, cache, dy)
    kept = [y.copy(), dx.copy(), grads["w"].copy(), grads["b"].copy()]
    for _ in range(2):  # the same shapes again: every scratch buffer is reused
        other_cache = layer.forward(params, x * 3 + 1, training=True)[1]
        layer.backward(params, other_cache, dy * 2)
    for result, copy in zip([y, dx, grads["w"], grads["b"]], kept):
        np.testing.assert_array_equal(result, copy)
    dx_again, grads_again = layer.backward(params, cache, dy)  # the first cache still works
    np.testing.assert_array_equal(dx_again, dx)
    np.testing.assert_array_equal(grads_again["w"], grads["w"])


def test_conv2d_on_several_threads_at_once_matches_one_thread():
    cases = [_conv_case(3, 1, seed) for seed in range(4)]

    def step(layer, x, params, dy):
        return layer.backward(params, layer.forward(params, x, training=True)[1], dy)

    expected = [step(*case) for case in cases]
    got: list[object] = [None] * len(cases)

    def run(k):
        for _ in range(20):
            got[k] = step(*cases[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (dx, grads), (dx_ref, grads_ref) in zip(got, expected):
        np.testing.assert_array_equal(dx, dx_ref)
        np.testing.assert_array_equal(grads["w"], grads_ref["w"])
