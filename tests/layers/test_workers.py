"""Splitting the batch over threads: ranges, results, errors, BLAS limits, and layers that agree
with their sequential selves."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from nnplug_layers import conv_engines, workers
from nnplug_layers.conv2d import Conv2D
from nnplug_layers.pooling import AvgPool2D, MaxPool2D
from threadpoolctl import ThreadpoolController, threadpool_limits

import nnplug


def blas_counts() -> list[int]:
    return [lib.num_threads for lib in ThreadpoolController().select(user_api="blas").lib_controllers]


@pytest.mark.parametrize("batch,parts", [(1, 4), (5, 2), (64, 2), (7, 3), (3, 1)])
def test_split_batch_covers_the_batch_in_near_equal_contiguous_ranges(batch, parts):
    ranges = workers.split_batch(batch, parts)
    assert ranges[0][0] == 0 and ranges[-1][1] == batch
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    sizes = [stop - start for start, stop in ranges]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1 and len(ranges) == min(parts, batch)


def test_run_parts_keeps_the_order_and_holds_blas_to_one_thread_meanwhile():
    with threadpool_limits(2, user_api="blas"):
        seen: list[tuple[str, list[int]]] = []

        def task(start, stop):
            seen.append((threading.current_thread().name, blas_counts()))
            return start * 10 + stop

        assert workers.run_parts(task, [(0, 1), (1, 3), (3, 4)]) == [1, 13, 34]
        assert all(counts and set(counts) == {1} for _, counts in seen)
        assert len({name for name, _ in seen}) > 1  # the ranges ran on several threads
        assert set(blas_counts()) == {2}  # restored


def test_an_error_in_any_part_reaches_the_caller_after_every_part_finished():
    finished = []

    def task(start, stop):
        if start == 2:
            raise ValueError("part 2 failed")
        finished.append(start)

    with threadpool_limits(2, user_api="blas"):
        with pytest.raises(ValueError, match="part 2 failed"):
            workers.run_parts(task, [(0, 1), (1, 2), (2, 3), (3, 4)])
        assert sorted(finished) == [0, 1, 3]
        assert set(blas_counts()) == {2}


def test_overlapping_sections_from_several_threads_restore_the_users_setting():
    barrier = threading.Barrier(3)

    def task(start, stop):
        barrier.wait(timeout=10)  # three sections are open at once here
        return stop

    with threadpool_limits(2, user_api="blas"):
        threads = [threading.Thread(target=workers.run_parts, args=(task, [(0, 1)])) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert set(blas_counts()) == {2}
        assert workers.blas_threads() == 2


def test_a_single_range_runs_on_the_calling_thread_with_blas_untouched():
    with threadpool_limits(2, user_api="blas"):
        seen = workers.run_parts(lambda start, stop: (threading.current_thread(), blas_counts()), [(0, 5)])
        assert seen == [(threading.current_thread(), blas_counts())] and set(blas_counts()) == {2}


def test_the_batch_is_split_only_for_large_operations_and_never_past_the_users_limit():
    big = 4 * workers.MIN_OP_ELEMENTS
    with threadpool_limits(1, user_api="blas"):
        assert workers.blas_threads() == 1
        assert workers.batch_split(64, big) == [(0, 64)]
    with threadpool_limits(2, user_api="blas"):
        assert len(workers.batch_split(64, big)) == 2
        assert workers.batch_split(64, workers.MIN_OP_ELEMENTS - 1) == [(0, 64)]  # too small to pay


def run_layer(layer, params, x, threads):
    with threadpool_limits(threads, user_api="blas"):
        y, cache = layer.forward(params, x, training=True)
        dy = np.random.default_rng(7).standard_normal(y.shape).astype(x.dtype)
        dx, grads = layer.backward(params, cache, dy)
        return y, dx, grads


@pytest.mark.parametrize("layer,in_shape", [
    (MaxPool2D({"pool_size": 2}), (8, 12, 12)),
    (MaxPool2D({"pool_size": 3, "stride": 2, "padding": 1}), (8, 13, 11)),
    (AvgPool2D({"pool_size": 2}), (8, 12, 12)),
    (AvgPool2D({"pool_size": 3, "stride": 1, "padding": "same", "count_include_pad": False}), (8, 12, 12)),
])
def test_pooling_split_over_threads_equals_the_sequential_result_exactly(layer, in_shape, monkeypatch):
    monkeypatch.setattr(workers, "MIN_OP_ELEMENTS", 64)
    x = np.random.default_rng(0).standard_normal((9, *in_shape))
    one, two = run_layer(layer, {}, x, 1), run_layer(layer, {}, x, 2)
    for a, b in zip(one[:2], two[:2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode,config,in_shape", [
    ("chunk", {"filters": 5, "kernel_size": 3, "padding": 1}, (3, 15, 14)),
    ("batch_inner", {"filters": 4, "kernel_size": [4, 3]}, (2, 5, 9)),
    ("batch_inner", {"filters": 3, "kernel_size": 3, "stride": 2, "padding": 1}, (2, 9, 7)),
    ("strided", {"filters": 3, "kernel_size": 1, "stride": 2}, (2, 9, 7)),
])
def test_conv2d_split_over_threads_agrees_with_one_thread_and_repeats_exactly(dtype, mode, config, in_shape,
                                                                              monkeypatch):
    monkeypatch.setattr(conv_engines, "CHUNK_BYTES", 1)  # several chunks, hence two parts
    monkeypatch.setattr(conv_engines, "MIN_CHUNK_COLUMNS", 40)
    monkeypatch.setattr(conv_engines, "MIN_OP_ELEMENTS", 16)
    rng = np.random.default_rng(1)
    # cache_columns: backward reads each part's kept columns by the part's offset in the batch
    for layer in (Conv2D(config), Conv2D({**config, "cache_columns": True})):
        with threadpool_limits(2, user_api="blas"):
            x_shape = (11, *in_shape)
            geom = layer.geometry(in_shape)
            assert conv_engines.gemm_layout(geom).mode == mode
            parts = conv_engines.batch_parts(11, conv_engines.gemm_layout(geom), in_shape[0], 1, 8)
            assert len(parts) == 2
        params = {k: v.astype(dtype) for k, v in layer.init_params(in_shape, rng).items()}
        x = rng.standard_normal(x_shape).astype(dtype)
        one, two, again = (run_layer(layer, params, x, t) for t in (1, 2, 2))
        tol = 1e-12 if dtype == "float64" else 1e-5
        for a, b, c in zip(one[:2], two[:2], again[:2]):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
            np.testing.assert_array_equal(b, c)  # deterministic for a thread count
        for name in params:
            np.testing.assert_allclose(one[2][name], two[2][name], rtol=tol, atol=tol)
            np.testing.assert_array_equal(two[2][name], again[2][name])


def test_an_error_inside_a_threaded_layer_is_still_a_clear_error():
    layer = Conv2D({"filters": 2, "kernel_size": 3})
    params = layer.init_params((3, 8, 8), np.random.default_rng(0))
    with pytest.raises(nnplug.ShapeError, match="expect 3 input channels, received 4"):
        layer.forward(params, np.zeros((4, 4, 8, 8)), training=True)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_runs_split_layers_with_fresh_threads():
    import multiprocessing

    layer = MaxPool2D({"pool_size": 2})
    x = np.random.default_rng(0).standard_normal((16, 8, 64, 64))  # large enough to be split
    with threadpool_limits(2, user_api="blas"):
        assert len(workers.batch_split(16, 16 * 8 * 32 * 32)) == 2
        expected, _ = layer.forward({}, x, training=False)  # the parent's pool now exists
        with multiprocessing.get_context("fork").Pool(1) as pool:
            y = pool.apply_async(_child_pool_forward, (x,)).get(timeout=60)
    np.testing.assert_array_equal(y, expected)


def _child_pool_forward(x):
    return MaxPool2D({"pool_size": 2}).forward({}, x, training=False)[0]
