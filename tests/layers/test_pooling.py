"""maxpool2d, avgpool2d and global_avgpool against naive loops and by finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from naive_geometry import naive_pads
from nnplug_layers.pooling import AvgPool2D, GlobalAvgPool, MaxPool2D

import nnplug
from nnplug.testing import draw_values

# -- the naive references: plain loops over n, c, i, j --------------------------------------------


def windows(x_shape, k, s, pads):
    """(n, c, i, j, cells): every window with its real (unpadded) cells in row-major order."""
    n_, c_, h, w = x_shape
    (top, bottom), (left, right) = pads
    ho, wo = (h + top + bottom - k[0]) // s[0] + 1, (w + left + right - k[1]) // s[1] + 1
    for n in range(n_):
        for c in range(c_):
            for i in range(ho):
                for j in range(wo):
                    cells = [(i * s[0] + p - top, j * s[1] + q - left)
                             for p in range(k[0]) for q in range(k[1])]
                    real = [(r, col) for r, col in cells if 0 <= r < h and 0 <= col < w]
                    yield n, c, i, j, real, (ho, wo)


def naive_maxpool(x, dy_fn, k, s, pads):
    """PyTorch's rule: the first strict maximum in window order wins; a NaN takes over."""
    y, dx = None, np.zeros_like(x)
    argmax = {}
    for n, c, i, j, real, out_hw in windows(x.shape, k, s, pads):
        if y is None:
            y = np.zeros((*x.shape[:2], *out_hw))
        best, where = -np.inf, real[0]
        for r, col in real:
            v = x[n, c, r, col]
            if v > best or np.isnan(v):
                best, where = v, (r, col)
        y[n, c, i, j] = best
        argmax[n, c, i, j] = where
    dy = dy_fn(y.shape)
    for (n, c, i, j), (r, col) in argmax.items():
        dx[n, c, r, col] += dy[n, c, i, j]
    return y, dy, dx


def naive_avgpool(x, dy_fn, k, s, pads, count_include_pad):
    y, dx = None, np.zeros_like(x)
    shares = {}
    for n, c, i, j, real, out_hw in windows(x.shape, k, s, pads):
        if y is None:
            y = np.zeros((*x.shape[:2], *out_hw))
        divisor = k[0] * k[1] if count_include_pad else len(real)
        y[n, c, i, j] = sum(x[n, c, r, col] for r, col in real) / divisor
        shares[n, c, i, j] = (real, divisor)
    dy = dy_fn(y.shape)
    for (n, c, i, j), (real, divisor) in shares.items():
        for r, col in real:
            dx[n, c, r, col] += dy[n, c, i, j] / divisor
    return y, dy, dx


@st.composite
def pool_geometries(draw, max_pool=4):
    kh, kw = draw(st.integers(1, max_pool), label="kh"), draw(st.integers(1, max_pool), label="kw")
    s = (draw(st.integers(1, 4), label="sh"), draw(st.integers(1, 4), label="sw"))
    padding = draw(st.one_of(st.sampled_from(["valid", "same"]),
                             st.tuples(st.integers(0, kh // 2), st.integers(0, kw // 2)).map(list)),
                   label="padding")
    ph, pw = (0, 0) if isinstance(padding, str) else padding
    h = max(1, kh - 2 * ph) + draw(st.integers(0, 5), label="extra rows")
    w = max(1, kw - 2 * pw) + draw(st.integers(0, 5), label="extra cols")
    shape = (draw(st.integers(1, 3), label="batch"), draw(st.integers(1, 3), label="channels"), h, w)
    return {"shape": shape, "k": (kh, kw), "s": s, "padding": padding}


def config_of(g):
    return {"pool_size": list(g["k"]), "stride": list(g["s"]), "padding": g["padding"]}


# -- agreement with the references ---------------------------------------------------------------


@given(g=pool_geometries(), seed=st.integers(0, 2**16))
def test_maxpool2d_matches_naive_loops_forward_and_backward(g, seed):
    rng = np.random.default_rng(seed)
    # Rounded values: ties are frequent, so the first-max rule is exercised too.
    x = np.round(rng.standard_normal(g["shape"]), 1)
    layer = MaxPool2D(config_of(g))
    y, cache = layer.forward({}, x, training=True)
    pads = naive_pads(*g["shape"][2:], g["k"], g["s"], g["padding"])
    y_ref, dy, dx_ref = naive_maxpool(x, lambda shape: rng.standard_normal(shape), g["k"], g["s"], pads)
    np.testing.assert_array_equal(y, y_ref)
    dx, grads = layer.backward({}, cache, dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-15)
    assert grads == {}


@given(g=pool_geometries(), count_include_pad=st.booleans(), seed=st.integers(0, 2**16))
def test_avgpool2d_matches_naive_loops_forward_and_backward(g, count_include_pad, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(g["shape"])
    layer = AvgPool2D({**config_of(g), "count_include_pad": count_include_pad})
    y, cache = layer.forward({}, x, training=True)
    pads = naive_pads(*g["shape"][2:], g["k"], g["s"], g["padding"])
    y_ref, dy, dx_ref = naive_avgpool(x, lambda shape: rng.standard_normal(shape), g["k"], g["s"], pads,
                                      count_include_pad)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-14)
    dx, _ = layer.backward({}, cache, dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-14)


# -- finite differences --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D, GlobalAvgPool])
@given(data=st.data())
def test_pooling_passes_gradcheck(cls, data):
    case = data.draw(cls.gradcheck_cases(), label="case")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    x = draw_values(case.values, (2, *case.in_shapes[0]), np.random.default_rng(seed))
    nnplug.gradcheck_layer(cls(case.config), x, seed=seed, max_entries=60)


def test_maxpool2d_cases_draw_distinct_values():
    @given(case=MaxPool2D.gradcheck_cases())
    def check(case):
        assert case.values == "distinct"
        assert len(MaxPool2D(case.config).output_shape(case.in_shapes[0])) == 3

    check()


# -- max-pool routing: ties, NaN, padding, the cache ----------------------------------------------


def test_maxpool2d_ties_go_to_the_first_max_in_row_major_window_order():
    x = np.array([[1.0, 3.0, 2.0, 2.0],
                  [3.0, 0.0, 2.0, 2.0]])[None, None]
    layer = MaxPool2D({"pool_size": 2})
    y, cache = layer.forward({}, x, training=True)
    np.testing.assert_array_equal(y[0, 0], [[3.0, 2.0]])
    np.testing.assert_array_equal(cache[0][0, 0], [[1, 0]])  # (0, 1) beats (1, 0); (0, 2) wins
    dx, _ = layer.backward({}, cache, np.array([[[[10.0, 20.0]]]]))
    np.testing.assert_array_equal(dx[0, 0], [[0, 10, 20, 0], [0, 0, 0, 0]])


def test_maxpool2d_routes_gradient_to_argmax_and_overlapping_windows_accumulate():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0  # the centre is the max of all four 2x2 windows
    layer = MaxPool2D({"pool_size": 2, "stride": 1})
    y, cache = layer.forward({}, x, training=True)
    np.testing.assert_array_equal(y, np.full((1, 1, 2, 2), 5.0))
    dx, _ = layer.backward({}, cache, np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = np.zeros((3, 3))
    expected[1, 1] = 10.0
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_maxpool2d_nan_propagates_and_routes_to_the_last_nan_as_pytorch():
    nan = np.nan
    x = np.array([[1.0, 3.0, 3.0, nan],
                  [nan, 2.0, 5.0, 5.0]])[None, None]
    layer = MaxPool2D({"pool_size": 2})
    y, cache = layer.forward({}, x, training=True)
    assert np.isnan(y).all()
    # PyTorch 2.x CPU gives indices 4 and 3 (flat, in the image): here (1, 0) and (0, 1) per window.
    np.testing.assert_array_equal(cache[0][0, 0], [[2, 1]])
    y2, cache2 = layer.forward({}, np.array([[nan, 1.0], [nan, 2.0]])[None, None], training=True)
    assert np.isnan(y2).all() and cache2[0][0, 0, 0, 0] == 2  # the last NaN of the window


def test_maxpool2d_routes_an_infinite_delta_to_the_argmax_alone_as_pytorch():
    x = np.array([[1.0, 3.0, 2.0, 0.0],
                  [0.0, 2.0, 4.0, 1.0]])[None, None]
    layer = MaxPool2D({"pool_size": 2})
    _, cache = layer.forward({}, x, training=True)
    dx, _ = layer.backward({}, cache, np.array([[[[np.inf, -np.inf]]]]))
    # 0 · inf would be NaN in the cells that lost: they must get exactly 0
    np.testing.assert_array_equal(dx[0, 0], [[0, np.inf, 0, 0], [0, 0, -np.inf, 0]])


def test_maxpool2d_padded_cells_never_win():
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # all negative: a zero pad would win
    layer = MaxPool2D({"pool_size": 3, "stride": 2, "padding": 1})
    y, cache = layer.forward({}, x, training=True)
    np.testing.assert_array_equal(y[0, 0], [[-1.0, -2.0], [-4.0, -5.0]])
    ninf = np.full((1, 1, 3, 3), -np.inf)  # even real -inf beats the padding
    y, cache = layer.forward({}, ninf, training=True)
    dx, _ = layer.backward({}, cache, np.ones_like(y))
    assert np.all(y == -np.inf) and dx.sum() == 4.0
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize(("pool", "dtype"), [(2, np.uint8), (16, np.uint8), ((17, 16), np.uint16)])
def test_maxpool2d_caches_one_small_integer_index_per_window(pool, dtype):
    kh, kw = (pool, pool) if isinstance(pool, int) else pool
    x = np.random.default_rng(0).standard_normal((2, 3, 2 * kh, 2 * kw)).astype(np.float32)
    _, cache = MaxPool2D({"pool_size": pool}).forward({}, x, training=True)
    index = cache[0]
    assert index.dtype == dtype and index.shape == (2, 3, 2, 2)  # per window, not per input cell
    arrays = [c for c in cache if isinstance(c, np.ndarray)]
    assert sum(a.nbytes for a in arrays) == index.nbytes < x.nbytes / (kh * kw) + 1


# -- average pooling -----------------------------------------------------------------------------


def test_avgpool2d_count_include_pad_sets_the_corner_divisor():
    x = np.ones((1, 1, 2, 2))
    y_in, _ = AvgPool2D({"pool_size": 2, "stride": 1, "padding": 1}).forward({}, x, training=False)
    y_out, _ = AvgPool2D({"pool_size": 2, "stride": 1, "padding": 1, "count_include_pad": False}
                         ).forward({}, x, training=False)
    np.testing.assert_allclose(y_in[0, 0], [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]])
    np.testing.assert_allclose(y_out[0, 0], np.ones((3, 3)))


def test_avgpool2d_spreads_delta_over_k_and_skips_uncovered_rows():
    layer = AvgPool2D({"pool_size": 2})
    x = np.arange(30.0).reshape(1, 1, 5, 6)  # the 5th row is in no window
    y, cache = layer.forward({}, x, training=True)
    assert y.shape == (1, 1, 2, 3)
    dx, _ = layer.backward({}, cache, np.full(y.shape, 4.0))
    np.testing.assert_array_equal(dx[0, 0, :4], np.ones((4, 6)))
    np.testing.assert_array_equal(dx[0, 0, 4], np.zeros(6))


def test_global_avgpool_averages_each_channel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    layer = GlobalAvgPool({})
    assert layer.output_shape((3, 4, 5)) == (3,)
    y, cache = layer.forward({}, x, training=True)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)))
    dx, _ = layer.backward({}, cache, np.ones((2, 3)))
    np.testing.assert_allclose(dx, np.full(x.shape, 1 / 20))


# -- shapes, dtypes, configuration ---------------------------------------------------------------


@pytest.mark.parametrize(("size", "pool", "stride"), [(5, 2, 2), (7, 3, 2), (6, 3, 3), (9, 2, 3)])
def test_same_pooling_output_is_ceil_of_size_over_stride(size, pool, stride):
    for cls in (MaxPool2D, AvgPool2D):
        layer = cls({"pool_size": pool, "stride": stride, "padding": "same"})
        assert layer.output_shape((2, size, size + 1)) == (2, math.ceil(size / stride),
                                                           math.ceil((size + 1) / stride))


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D, GlobalAvgPool])
def test_float32_input_stays_float32(cls):
    layer = cls({"pool_size": 3, "stride": 2, "padding": 1} if cls is not GlobalAvgPool else {})
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6)).astype(np.float32)
    y, cache = layer.forward({}, x, training=True)
    dx, _ = layer.backward({}, cache, np.ones_like(y))
    assert y.dtype == dx.dtype == np.float32


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
def test_pooling_shape_errors(cls):
    layer = cls({"pool_size": [3, 2]})
    with pytest.raises(nnplug.ShapeError, match=r"window \(3, 2\) is larger than the padded input \(2, 5\)"):
        layer.output_shape((1, 2, 5))
    with pytest.raises(nnplug.ShapeError, match=r"expects images \(C, H, W\)"):
        layer.output_shape((4, 4))
    with pytest.raises(nnplug.ShapeError, match=r"\(N, C, H, W\)"):
        layer.forward({}, np.zeros((4, 4, 4)), training=False)
    with pytest.raises(nnplug.ShapeError, match=r"\(C, H, W\)"):
        GlobalAvgPool({}).output_shape((4,))


@pytest.mark.parametrize("bad", [
    {"pool_size": 0}, {"stride": 0}, {"padding": -1}, {"padding": 2}, {"padding": [0, 2]},
    {"padding": "full"}, {"pool_size": [2, 2, 2]},
])
def test_invalid_pooling_config_is_a_config_error(bad):
    for cls in (MaxPool2D, AvgPool2D):
        with pytest.raises(nnplug.ConfigError):
            cls({"pool_size": 3, **bad})
