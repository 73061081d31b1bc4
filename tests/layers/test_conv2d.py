"""conv2d against naive loops, between its engines, and by finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from naive_geometry import naive_pads
from nnplug_layers import columns, conv_engines, conv_scipy
from nnplug_layers.conv2d import Conv2D
from nnplug_layers.geometry import window_geometry
from scipy import signal

import nnplug
from nnplug.testing import draw_values

ENGINES = ["scipy", "gemm"]


# -- the naive references: plain loops over n, f, c, i, j -------------------------------------


def naive_conv(x, w, b, s, pads):
    """y[n, f, i, j] = b[f] + Σ_{c, p, q} xp[n, c, i·sh + p, j·sw + q] · w[f, c, p, q]."""
    (top, bottom), (left, right) = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n_, c_, hp, wp = xp.shape
    f_, _, kh, kw = w.shape
    ho, wo = (hp - kh) // s[0] + 1, (wp - kw) // s[1] + 1
    y = np.zeros((n_, f_, ho, wo))
    for n in range(n_):
        for f in range(f_):
            for i in range(ho):
                for j in range(wo):
                    total = b[f]
                    for c in range(c_):
                        for p in range(kh):
                            for q in range(kw):
                                total += xp[n, c, i * s[0] + p, j * s[1] + q] * w[f, c, p, q]
                    y[n, f, i, j] = total
    return y


def naive_conv_backward(x, w, dy, s, pads):
    """Each output cell sends δ·w to the inputs it read and δ·x to the weights it used."""
    (top, bottom), (left, right) = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    n_, f_, ho, wo = dy.shape
    _, c_, kh, kw = w.shape
    for n in range(n_):
        for f in range(f_):
            for i in range(ho):
                for j in range(wo):
                    for c in range(c_):
                        for p in range(kh):
                            for q in range(kw):
                                r, col = i * s[0] + p, j * s[1] + q
                                dxp[n, c, r, col] += dy[n, f, i, j] * w[f, c, p, q]
                                dw[f, c, p, q] += dy[n, f, i, j] * xp[n, c, r, col]
    dx = dxp[:, :, top:top + x.shape[2], left:left + x.shape[3]]
    return dx, dw, dy.sum(axis=(0, 2, 3))


@st.composite
def conv_geometries(draw, max_batch=3, max_channels=3, max_kernel=4, max_side_extra=4):
    """Batch, channels, non-square input and kernel, stride, padding: valid by construction."""
    kh, kw = draw(st.integers(1, max_kernel), label="kh"), draw(st.integers(1, max_kernel), label="kw")
    s = (draw(st.integers(1, 3), label="sh"), draw(st.integers(1, 3), label="sw"))
    padding = draw(st.one_of(st.sampled_from(["valid", "same"]), st.integers(0, 2),
                             st.tuples(st.integers(0, 2), st.integers(0, 2)).map(list)), label="padding")
    ph, pw = (0, 0) if isinstance(padding, str) else (
        (padding, padding) if isinstance(padding, int) else tuple(padding))
    h = max(1, kh - 2 * ph) + draw(st.integers(0, max_side_extra), label="extra rows")
    w = max(1, kw - 2 * pw) + draw(st.integers(0, max_side_extra), label="extra cols")
    n = draw(st.integers(1, max_batch), label="batch")
    c = draw(st.integers(1, max_channels), label="channels")
    f = draw(st.integers(1, max_channels), label="filters")
    return {"n": n, "c": c, "f": f, "h": h, "w": w, "k": (kh, kw), "s": s, "padding": padding}


def make(g, engine, bias=True, **extra):
    layer = Conv2D({"filters": g["f"], "kernel_size": list(g["k"]), "stride": list(g["s"]),
                    "padding": g["padding"], "engine": engine, "bias": bias, **extra})
    rng = np.random.default_rng(7)
    x = rng.standard_normal((g["n"], g["c"], g["h"], g["w"]))
    params = layer.init_params((g["c"], g["h"], g["w"]), rng)
    if bias:
        params["b"] = rng.standard_normal(g["f"])
    return layer, x, params, rng


# -- agreement with the references -------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@given(g=conv_geometries())
def test_conv2d_matches_naive_loops_forward_and_backward(engine, g):
    layer, x, params, rng = make(g, engine)
    pads = naive_pads(g["h"], g["w"], g["k"], g["s"], g["padding"])
    y, cache = layer.forward(params, x, training=True)
    expected = naive_conv(x, params["w"], params["b"], g["s"], pads)
    assert y.shape == expected.shape == (g["n"], *layer.output_shape((g["c"], g["h"], g["w"])))
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(params, cache, dy)
    dx_ref, dw_ref, db_ref = naive_conv_backward(x, params["w"], dy, g["s"], pads)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["w"], dw_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["b"], db_ref, rtol=1e-10, atol=1e-12)


def rel_err(a, b):
    """Relative to the reference's largest entry, but absolute below 1: values here are O(1),
    and a gradient that is exactly 0 (no window covers a cell) comes out of scipy's FFTs as
    ~1e-17 of rounding noise."""
    return float(np.max(np.abs(a - b), initial=0.0) / max(np.max(np.abs(b), initial=0.0), 1.0))


@given(g=conv_geometries(max_batch=4, max_channels=5, max_kernel=5, max_side_extra=9),
       cache_columns=st.booleans())
def test_conv2d_engines_agree_to_1e_10_relative_in_float64(g, cache_columns):
    layer_s, x, params, rng = make(g, "scipy")
    layer_g = Conv2D({**layer_s.config.model_dump(exclude={"type", "name", "inputs"}),
                      "engine": "gemm", "cache_columns": cache_columns})
    ys, cs = layer_s.forward(params, x, training=True)
    yg, cg = layer_g.forward(params, x, training=True)
    assert rel_err(yg, ys) < 1e-10
    dy = rng.standard_normal(ys.shape)
    (dxs, gs), (dxg, gg) = layer_s.backward(params, cs, dy), layer_g.backward(params, cg, dy)
    assert rel_err(dxg, dxs) < 1e-10
    assert rel_err(gg["w"], gs["w"]) < 1e-10
    assert rel_err(gg["b"], gs["b"]) < 1e-10


@pytest.mark.parametrize("min_columns", [1, 7, 50])
@given(g=conv_geometries(max_batch=5, max_channels=3, max_kernel=4, max_side_extra=6))
def test_gemm_walking_the_batch_in_several_chunks_matches_the_naive_loops(min_columns, g):
    # Tests draw small batches, which fit one chunk; shrink the chunk so several run.
    original = (conv_engines.CHUNK_BYTES, conv_engines.MIN_CHUNK_COLUMNS)
    conv_engines.CHUNK_BYTES, conv_engines.MIN_CHUNK_COLUMNS = 1, min_columns
    try:
        layer, x, params, rng = make(g, "gemm")
        y, cache = layer.forward(params, x, training=True)
        dy = rng.standard_normal(y.shape)
        dx, grads = layer.backward(params, cache, dy)
    finally:
        conv_engines.CHUNK_BYTES, conv_engines.MIN_CHUNK_COLUMNS = original
    pads = naive_pads(g["h"], g["w"], g["k"], g["s"], g["padding"])
    np.testing.assert_allclose(y, naive_conv(x, params["w"], params["b"], g["s"], pads), rtol=1e-10, atol=1e-12)
    dx_ref, dw_ref, db_ref = naive_conv_backward(x, params["w"], dy, g["s"], pads)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["w"], dw_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["b"], db_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode,g", [
    ("chunk", {"n": 3, "c": 2, "f": 3, "h": 15, "w": 14, "k": (3, 3), "s": (1, 1), "padding": 1}),
    ("chunk", {"n": 3, "c": 3, "f": 2, "h": 16, "w": 18, "k": (2, 4), "s": (1, 1), "padding": [1, 0]}),
    ("batch_inner", {"n": 3, "c": 2, "f": 3, "h": 5, "w": 9, "k": (4, 3), "s": (1, 1), "padding": 0}),
    ("batch_inner", {"n": 3, "c": 2, "f": 3, "h": 9, "w": 7, "k": (3, 3), "s": (2, 1), "padding": 1}),
    ("batch_inner", {"n": 2, "c": 1, "f": 2, "h": 4, "w": 4, "k": (3, 3), "s": (1, 1), "padding": "valid"}),
    ("strided", {"n": 3, "c": 2, "f": 3, "h": 9, "w": 7, "k": (1, 3), "s": (2, 1), "padding": [0, 1]}),
    ("strided", {"n": 2, "c": 3, "f": 2, "h": 8, "w": 8, "k": (2, 2), "s": (3, 3), "padding": 0}),
])
@pytest.mark.parametrize("chunk_bytes", [1, 2 * 1024**2])
def test_every_column_layout_matches_the_naive_loops(mode, g, chunk_bytes, monkeypatch):
    monkeypatch.setattr(conv_engines, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(conv_engines, "MIN_CHUNK_COLUMNS", 1)  # one image per chunk when 1 byte
    layer, x, params, rng = make(g, "gemm")
    assert conv_engines.gemm_layout(layer.geometry(x.shape[1:])).mode == mode
    y, cache = layer.forward(params, x, training=True)
    dy = rng.standard_normal(y.shape)
    dx, grads = layer.backward(params, cache, dy)
    pads = naive_pads(g["h"], g["w"], g["k"], g["s"], g["padding"])
    np.testing.assert_allclose(y, naive_conv(x, params["w"], params["b"], g["s"], pads), rtol=1e-10, atol=1e-12)
    dx_ref, dw_ref, _db_ref = naive_conv_backward(x, params["w"], dy, g["s"], pads)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["w"], dw_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.param_grads(params, cache, dy)["w"], dw_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode,shape,kernel,padding", [
    ("chunk", (3, 2, 15, 14), (3, 3), 1),
    ("chunk", (2, 3, 16, 18), (2, 4), (1, 0)),
    ("batch_inner", (3, 2, 5, 9), (4, 3), 0),
])
def test_col2im_is_the_transpose_of_im2col(mode, shape, kernel, padding):
    # <im2col(x), D> = <x, col2im(D)> for columns D whose junk is zero, as Wᵀ·δ's is: the
    # chunk layout's single strided sum over every tap must add each column where it was read.
    (m, c, h, w), rng = shape, np.random.default_rng(3)
    geom = window_geometry((h, w), kernel, 1, padding, what="kernel")
    layout = conv_engines.gemm_layout(geom)
    assert layout.mode == mode
    x = rng.standard_normal(shape)
    buf = columns.fill_images(x, layout, np.zeros(c * m * layout.image_size + layout.slack))
    span, k = m * layout.n_cols_per_image, c * geom.n_taps
    cols = columns.im2col(buf, layout, c, m, np.empty(k * span))
    real = columns.fill_grad(np.ones((m, 1, *geom.out_hw)), layout, layout.grad_buffer(1, m, np.float64))
    d = rng.standard_normal((k, span)) * real  # junk columns zero
    back = columns.col2im(d, layout, c, m, np.full(c * m * layout.image_size + layout.slack, np.nan))
    dx = columns.crop_images(back, layout, c, m)
    assert np.isclose(np.vdot(cols, d), np.vdot(x, dx), rtol=1e-12)


def test_chunk_size_splits_the_batch_evenly_within_the_byte_budget():
    layout = conv_engines.gemm_layout(window_geometry((28, 28), 3, 1, 1, what="kernel"))
    rows, itemsize, per_image = 16 * 9, 4, layout.n_cols_per_image
    budget = max(conv_engines.MIN_CHUNK_COLUMNS, conv_engines.CHUNK_BYTES // (rows * itemsize))
    size = conv_engines.chunk_size(64, layout, rows, itemsize)
    chunks = math.ceil(64 / size)
    assert 1 <= size < 64 and size * per_image <= budget + per_image  # within budget, up to rounding
    assert 64 - (chunks - 1) * size > 0 and size - (64 - (chunks - 1) * size) < chunks  # near-even split
    assert conv_engines.chunk_size(64, layout, rows, itemsize) == size  # a function of the shapes
    assert conv_engines.chunk_size(2, layout, rows, itemsize) == 2  # a small batch is one chunk


@given(g=conv_geometries(max_kernel=5, max_side_extra=6))
def test_col2im_input_gradient_equals_rot180_full_correlation(g):
    layer, x, params, rng = make(g, "gemm")
    geom = layer.geometry(x.shape[1:])
    y, cache = layer.forward(params, x, training=True)
    dy = rng.standard_normal(y.shape)
    dx_col2im, _ = layer.backward(params, cache, dy)
    # The seed's form twice: with scipy.signal (the reference engine) and as one GEMM.
    dx_rot180 = conv_scipy.scipy_input_grad(params["w"], conv_scipy.dilate(dy, geom.stride), geom)
    dx_rot180_gemm = conv_engines.gemm_input_grad_full_correlation(params["w"], dy, geom)
    assert rel_err(dx_col2im, dx_rot180) < 1e-10
    assert rel_err(dx_rot180_gemm, dx_rot180) < 1e-10


@pytest.mark.parametrize("engine", ENGINES)
def test_single_channel_seed_identities(engine):
    """dK = X ⋆ δ and dX = pad(δ) ⋆ rot180(K), for one image, one channel, one filter."""
    rng = np.random.default_rng(3)
    x, k = rng.standard_normal((6, 7)), rng.standard_normal((3, 2))
    layer = Conv2D({"filters": 1, "kernel_size": [3, 2], "bias": False, "engine": engine})
    y, cache = layer.forward({"w": k[None, None]}, x[None, None], training=True)
    np.testing.assert_allclose(y[0, 0], signal.correlate2d(x, k, mode="valid"), rtol=1e-12)
    delta = rng.standard_normal(y.shape[2:])
    dx, grads = layer.backward({"w": k[None, None]}, cache, delta[None, None])
    np.testing.assert_allclose(grads["w"][0, 0], signal.correlate2d(x, delta, mode="valid"), rtol=1e-10)
    padded = np.pad(delta, ((2, 2), (1, 1)))  # kh - 1, kw - 1 on every side
    np.testing.assert_allclose(dx[0, 0], signal.correlate2d(padded, k[::-1, ::-1], mode="valid"), rtol=1e-10)


# -- finite differences --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@given(case=Conv2D.gradcheck_cases(), seed=st.integers(0, 2**16))
def test_conv2d_passes_gradcheck(engine, case, seed):
    layer = Conv2D({**case.config, "engine": engine})
    rng = np.random.default_rng(seed)
    x = draw_values(case.values, (2, *case.in_shapes[0]), rng)
    nnplug.gradcheck_layer(layer, x, seed=seed, max_entries=40)


def test_conv2d_gradcheck_cases_are_valid_by_construction():
    @given(case=Conv2D.gradcheck_cases())
    def check(case):
        layer = Conv2D(case.config)
        out = layer.output_shape(case.in_shapes[0])  # raises if the geometry were invalid
        assert len(out) == 3 and min(out) >= 1

    check()


def test_small_cnn_model_passes_gradcheck_model():
    model = nnplug.Model.from_config({
        "input": [2, 7, 6], "dtype": "float64", "seed": 1,
        "layers": [
            {"type": "conv2d", "name": "conv", "filters": 3, "kernel_size": 3, "padding": "same"},
            {"type": "relu"},
            {"type": "maxpool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 4},
        ],
        "loss": {"type": "softmax_cross_entropy"},
    })
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((3, 2, 7, 6)), np.array([0, 3, 1])
    report = nnplug.gradcheck_model(model, x, labels, max_entries=30, seed=0)
    assert report.ok and report.n_forward > 0


# -- shapes, dtypes, configuration -----------------------------------------------------------------


@pytest.mark.parametrize(("size", "kernel", "stride", "pads"), [
    (5, 3, 1, (1, 1)), (6, 2, 1, (0, 1)), (6, 4, 1, (1, 2)), (7, 3, 2, (1, 1)),
    (8, 3, 2, (0, 1)), (10, 5, 3, (2, 2)), (9, 4, 2, (1, 2)), (4, 1, 3, (0, 0)),
])
def test_same_padding_matches_keras(size, kernel, stride, pads):
    """Keras/TF: out = ceil(size / stride); the odd cell of the padding goes bottom/right."""
    geom = window_geometry((size, size), kernel, stride, "same", what="kernel")
    assert geom.out_hw == (math.ceil(size / stride),) * 2
    assert geom.pad_h == pads and geom.pad_w == pads
    layer = Conv2D({"filters": 2, "kernel_size": kernel, "stride": stride, "padding": "same"})
    assert layer.output_shape((3, size, size + 1)) == (2, math.ceil(size / stride),
                                                       math.ceil((size + 1) / stride))


@pytest.mark.parametrize("engine", ENGINES)
def test_float32_input_stays_float32(engine):
    layer = Conv2D({"filters": 3, "kernel_size": 3, "stride": 2, "padding": "same", "engine": engine})
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 7, 5)).astype(np.float32)
    params = {k: v.astype(np.float32) for k, v in layer.init_params((2, 7, 5), rng).items()}
    y, cache = layer.forward(params, x, training=True)
    dx, grads = layer.backward(params, cache, np.ones_like(y))
    assert y.dtype == dx.dtype == grads["w"].dtype == grads["b"].dtype == np.float32


def test_kernel_larger_than_padded_input_is_a_shape_error_naming_the_node():
    layer = Conv2D({"filters": 2, "kernel_size": [5, 3], "padding": 1})
    with pytest.raises(nnplug.ShapeError, match=r"kernel \(5, 3\) is larger than the padded input \(4, 6\)"):
        layer.output_shape((1, 2, 4))
    with pytest.raises(nnplug.ShapeError, match="big_conv"):
        nnplug.Model.from_config({
            "input": [1, 2, 4],
            "layers": [{"type": "conv2d", "name": "big_conv", "filters": 2, "kernel_size": 5},
                       {"type": "flatten"}],
            "loss": {"type": "mse"},
        })


def test_wrong_rank_and_channel_mismatch_are_shape_errors():
    layer = Conv2D({"filters": 2, "kernel_size": 2})
    with pytest.raises(nnplug.ShapeError, match=r"expects images \(C, H, W\), received shape \(4, 4\)"):
        layer.output_shape((4, 4))
    params = layer.init_params((3, 4, 4), np.random.default_rng(0))
    with pytest.raises(nnplug.ShapeError, match="expect 3 input channels, received 2"):
        layer.forward(params, np.zeros((1, 2, 4, 4)), training=False)
    with pytest.raises(nnplug.ShapeError, match=r"\(N, C, H, W\), received shape \(3, 4, 4\)"):
        layer.forward(params, np.zeros((3, 4, 4)), training=False)


@pytest.mark.parametrize("bad", [
    {"kernel_size": 0}, {"stride": 0}, {"stride": [1, 0]}, {"padding": -1}, {"padding": "full"},
    {"engine": "cuda"}, {"filters": 0}, {"kernel_size": [3, 3, 3]}, {"kernel_size": "3"},
])
def test_invalid_conv2d_config_is_a_config_error(bad):
    with pytest.raises(nnplug.ConfigError):
        Conv2D({"filters": 2, "kernel_size": 3, **bad})


def test_params_follow_pytorch_layout_and_param_shapes():
    layer = Conv2D({"filters": 5, "kernel_size": [3, 2]})
    params = layer.init_params((4, 8, 8), np.random.default_rng(0))
    assert layer.param_shapes((4, 8, 8)) == {"w": (5, 4, 3, 2), "b": (5,)}
    assert {k: v.shape for k, v in params.items()} == layer.param_shapes((4, 8, 8))
    limit = math.sqrt(6 / (4 * 6 + 5 * 6))  # Glorot uniform, fans as Keras counts them
    assert np.abs(params["w"]).max() <= limit and np.all(params["b"] == 0)
    assert "b" not in Conv2D({"filters": 5, "kernel_size": 3, "bias": False}).param_shapes((1, 4, 4))


# -- the auto engine -------------------------------------------------------------------------------


@pytest.mark.parametrize(("x_shape", "w_shape", "padding"), [
    ((64, 16, 28, 28), (32, 16, 3, 3), 1),     # the benchmark layers
    ((32, 64, 16, 16), (64, 64, 3, 3), 1),
    ((64, 1, 28, 28), (8, 1, 5, 5), 0),
    ((4, 1, 64, 64), (1, 1, 31, 31), 0),       # a huge kernel on one channel: gemm still wins
])
def test_auto_picks_gemm_while_its_columns_fit(x_shape, w_shape, padding):
    layer = Conv2D({"filters": w_shape[0], "kernel_size": list(w_shape[2:]), "padding": padding})
    for dtype in (np.float32, np.float64):
        picks = {layer.engine_for(x_shape, w_shape, dtype) for _ in range(3)}
        assert picks == {"gemm"}  # deterministic: a pure function of shape and dtype


def test_auto_avoids_a_column_buffer_over_the_limit(monkeypatch):
    layer = Conv2D({"filters": 4, "kernel_size": 3})
    assert layer.engine_for((8, 3, 10, 10), (4, 3, 3, 3), np.float64) == "gemm"
    # columns: 3·3·3 rows × 8·8·8 columns (batch_inner layout: one per output) × 8 bytes
    monkeypatch.setattr(conv_engines, "GEMM_BUFFER_LIMIT", 27 * 8 * 64 * 8)
    assert layer.engine_for((8, 3, 10, 10), (4, 3, 3, 3), np.float64) == "gemm"
    monkeypatch.setattr(conv_engines, "GEMM_BUFFER_LIMIT", 27 * 8 * 64 * 8 - 1)
    assert layer.engine_for((8, 3, 10, 10), (4, 3, 3, 3), np.float64) == "scipy"
    assert layer.engine_for((8, 3, 10, 10), (4, 3, 3, 3), np.float32) == "gemm"  # half the bytes
    params = layer.init_params((3, 10, 10), np.random.default_rng(0))
    _, cache = layer.forward(params, np.ones((8, 3, 10, 10)), training=True)
    assert cache[0] == "scipy"


def test_auto_runs_the_engine_it_names():
    layer = Conv2D({"filters": 2, "kernel_size": 3})
    params = layer.init_params((1, 6, 6), np.random.default_rng(0))
    _, cache = layer.forward(params, np.ones((2, 1, 6, 6)), training=True)
    assert cache[0] == layer.engine_for((2, 1, 6, 6), (2, 1, 3, 3), np.float64) == "gemm"
    line = conv_engines.describe_choice((2, 1, 6, 6), (2, 1, 3, 3), layer.geometry((1, 6, 6)), np.float64)
    assert line.startswith("auto -> gemm") and "within" in line
