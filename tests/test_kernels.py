"""Every kernel against float64 numpy references, on every instruction set this CPU has."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loop_tui import kernels as K
from loop_tui.backend import DropoutKey
from loop_tui.ops_table import OPS

from . import reference as ref

AWKWARD = [1, 3, 17, 63, 64, 65, 127, 129, 383]
RNG = np.random.default_rng(0)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


@pytest.fixture
def threads():
    before = K.get_num_threads()
    yield
    K.set_num_threads(before)


def test_sanitized_build_is_the_one_loaded():
    import loop_tui._kernels as mod

    assert ("build/sanitize" in mod.__file__) == (os.environ.get("LOOP_SANITIZED") == "1")


def test_isa_reports_and_forcing():
    before = K.isa()
    assert before in K.available_isas() and K.available_isas()[0] == "generic"
    assert K.best_isa() == K.available_isas()[-1]
    try:
        for name in K.available_isas():  # every ISA this CPU has can be forced, and is then used
            K.set_isa(name)
            assert K.isa() == name and K.gemm_kernel_name() == name
    finally:
        K.set_isa(before)
    with pytest.raises(ValueError, match="unknown ISA"):
        K.set_isa("sse9")
    for name in ("avx2", "avx512", "neon"):
        if name not in K.available_isas():
            with pytest.raises(ValueError, match="cannot run"):
                K.set_isa(name)


def test_isa_forced_by_environment():
    import subprocess
    import sys

    for name in K.available_isas():
        out = subprocess.run(
            [sys.executable, "-c", "from loop_tui import kernels as K; print(K.isa())"],
            env={**os.environ, "LOOP_ISA": name},
            capture_output=True,
            text=True,
        )
        assert out.stdout.strip() == name, out.stderr


# ---------------------------------------------------------------- GEMM
def gemm_ref(a, b, ta, tb, bias=None, c=None):
    A = a.astype(np.float64).T if ta else a.astype(np.float64)
    B = b.astype(np.float64).T if tb else b.astype(np.float64)
    out = A @ B
    if bias is not None:
        out += bias
    if c is not None:
        out += c
    return out


def check_gemm(M, N, K_, ta, tb, with_bias=False, accumulate=False):
    a = rand(K_, M) if ta else rand(M, K_)
    b = rand(N, K_) if tb else rand(K_, N)
    bias = rand(N) if with_bias else None
    c0 = rand(M, N) if accumulate else None
    out = c0.copy() if accumulate else None
    got = K.matmul(a, b, out=out, transpose_a=ta, transpose_b=tb, bias=bias, accumulate=accumulate)
    want = gemm_ref(a, b, ta, tb, bias, c0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(K_))


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("s", AWKWARD)
def test_gemm_awkward_shapes(isa, s, ta, tb):
    check_gemm(s, 65, 17, ta, tb)
    check_gemm(17, s, 63, ta, tb)
    check_gemm(64, 129, s, ta, tb, with_bias=True, accumulate=bool(s % 2))


def test_gemm_spans_many_blocks(isa):
    """Shapes larger than MC, KC and NC so every loop of the blocking runs more than once."""
    K.set_gemm_blocking(mc=48, kc=64, nc=64)
    try:
        for ta, tb in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            check_gemm(131, 200, 161, ta, tb, with_bias=True, accumulate=True)
    finally:
        K.set_gemm_blocking(0, 0, 0)


def test_gemm_short_m_path_matches_general_path(isa):
    """Short M (A fits in L2) splits N across threads; forcing MC below M takes the M-blocked path.
    Same K blocks and micro-kernel, so the two must agree bit for bit, transposes and edges included."""
    for ta, tb in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        a = rand(700, 101) if ta else rand(101, 700)
        b = rand(300, 700) if tb else rand(700, 300)
        short = K.matmul(a, b, transpose_a=ta, transpose_b=tb)
        K.set_gemm_blocking(mc=24)
        try:
            general = K.matmul(a, b, transpose_a=ta, transpose_b=tb)
        finally:
            K.set_gemm_blocking(0, 0, 0)
        assert np.array_equal(short, general)
        np.testing.assert_allclose(short, gemm_ref(a, b, ta, tb), rtol=1e-4, atol=1e-4 * np.sqrt(700))


def test_empty_is_cache_line_aligned():
    for shape in [1, 7, (3, 5), (601, 16016)]:
        a = K.empty(shape)
        assert a.ctypes.data % 64 == 0 and a.flags.c_contiguous and a.dtype == np.float32
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)


@pytest.mark.skipif(os.environ.get("LOOP_SANITIZED") == "1", reason="a 38 MB output; awkward shapes cover the paths")
def test_gemm_streaming_stores_match_regular_stores(isa):
    """A C over 32 MiB with 64-byte aligned rows is written with non-temporal stores (AVX-512);
    the same C one float off alignment takes the regular path. Both must be exact, edges included."""
    M, N, K_ = 601, 16016, 70  # edge rows (601 % 12) and an edge column panel (16016 % 32 = 16)
    a, b = rand(M, K_), rand(N, K_)
    aligned = K.empty((M, N))
    shifted = K.empty(M * N + 1)[1:].reshape(M, N)
    K.matmul(a, b, out=aligned, transpose_b=True)
    K.matmul(a, b, out=shifted, transpose_b=True)
    assert np.array_equal(aligned, shifted)
    rows = np.r_[0, 11, 12, 599, 600]
    want = a[rows].astype(np.float64) @ b.T.astype(np.float64)
    np.testing.assert_allclose(aligned[rows], want, rtol=1e-4, atol=1e-4 * np.sqrt(K_))


def config_gemm_shapes():
    """(M, N, K, ta, tb) of every GEMM a training step of each seed config runs."""
    from loop_tui.config import load_config

    shapes = set()
    for name in ("wiki_gpu_optimized", "wiki_cache_optimized", "wiki_performance_tuned"):
        c = load_config(name)
        d, f, V = c.d_model, c.d_ff, c.vocab_size
        N = c.batch_size * c.max_length
        from loop_tui.model.layout import head_chunk_rows

        R = head_chunk_rows(c, N)
        shapes |= {
            (N, 3 * d, d, 0, 0),
            (N, d, d, 0, 0),
            (N, f, d, 0, 0),
            (N, d, f, 0, 0),  # forward NN
            (R, V, d, 0, 1),  # LM head NT
            (R, d, V, 0, 0),  # head input gradient NN
            (V, d, R, 1, 0),
            (d, 3 * d, N, 1, 0),
            (d, d, N, 1, 0),
            (d, f, N, 1, 0),
            (f, d, N, 1, 0),  # TN
            (N, d, 3 * d, 0, 1),
            (N, d, d, 0, 1),
            (N, f, d, 0, 1),
            (N, d, f, 0, 1),
        }  # input grads NT
    return sorted(shapes)


@pytest.mark.skipif(
    os.environ.get("LOOP_SANITIZED") == "1",
    reason="tens of GFLOP per shape; under ASan the awkward and multi-block shapes cover the same paths",
)
@pytest.mark.parametrize("shape", config_gemm_shapes(), ids=lambda s: "x".join(map(str, s)))
def test_gemm_config_shapes(shape):
    """The model's real shapes (active ISA): a sample of output rows against float64."""
    M, N, K_, ta, tb = shape
    a = rand(K_, M) if ta else rand(M, K_)
    b = rand(N, K_) if tb else rand(K_, N)
    got = K.matmul(a, b, transpose_a=bool(ta), transpose_b=bool(tb))
    rows = np.unique(np.r_[0, M - 1, RNG.integers(0, M, 6)])
    A = (a.T if ta else a)[rows].astype(np.float64)
    B = (b.T if tb else b).astype(np.float64)
    np.testing.assert_allclose(got[rows], A @ B, rtol=1e-4, atol=2e-4 * np.sqrt(K_))


@settings(max_examples=60, deadline=None)
@given(
    M=st.integers(1, 150),
    N=st.integers(1, 150),
    K_=st.integers(1, 150),
    ta=st.booleans(),
    tb=st.booleans(),
    bias=st.booleans(),
    acc=st.booleans(),
)
def test_gemm_hypothesis(M, N, K_, ta, tb, bias, acc):
    check_gemm(M, N, K_, ta, tb, bias, acc)


def test_gemm_threads_agree_bitwise(threads):
    a, b = rand(300, 200), rand(200, 170)
    K.set_num_threads(1)
    one = K.matmul(a, b)
    K.set_num_threads(2)
    two = K.matmul(a, b)
    assert np.array_equal(one, two)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "bad",
    [
        lambda: K.matmul(rand(3, 4), rand(5, 6)),
        lambda: K.matmul(rand(3, 4).astype(np.float64), rand(4, 6)),
        lambda: K.matmul(rand(4, 3).T, rand(4, 6)),
        lambda: K.matmul(rand(3, 4), rand(4, 6), out=np.empty((3, 5), np.float32)),
        lambda: K.matmul(rand(3, 4), rand(4, 6), bias=rand(5)),
        lambda: K.matmul(rand(3, 4), rand(4, 6), accumulate=True),
        lambda: K.matmul(np.zeros((0, 4), np.float32), rand(4, 6)),
        lambda: K.matmul([[1.0]], rand(1, 1)),
        lambda: K.encoder_forward(rand(2, 3, 4), np.array([[0, 1, 9]], np.int32), rand(5, 4), rand(3, 4)),
        lambda: K.encoder_forward(rand(1, 3, 4), np.array([[0, 1, -1]], np.int32), rand(5, 4), rand(3, 4)),
        lambda: K.crossentropy(rand(2, 5), np.array([0, 5], np.int32), np.empty(2, np.float32)),
        lambda: K.attention_forward(rand(1, 4, 8), rand(1, 3, 4, 4), rand(1, 4, 24), 3),
        lambda: K.attention_forward(rand(1, 4, 8), rand(1, 3, 4), rand(1, 4, 24), 3),
        lambda: K.layernorm_forward(rand(2, 4), rand(2), rand(2), rand(2, 4), rand(3), rand(4)),
        lambda: K.set_num_threads(0),
    ],
)
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_error_message_names_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        K.matmul(rand(3, 4), rand(5, 6))


# ---------------------------------------------------------------- forward ops
@pytest.mark.parametrize("C", AWKWARD)
def test_layernorm_forward(isa, C):
    x, w, b = rand(5, C, scale=3) + 1, rand(C), rand(C)
    out, mean, rstd = np.empty_like(x), np.empty(5, np.float32), np.empty(5, np.float32)
    K.layernorm_forward(out, mean, rstd, x, w, b)
    want, m, r = ref.layernorm(x.astype(np.float64), w, b)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean, m, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rstd, r, rtol=1e-4)


@pytest.mark.parametrize("C", AWKWARD)
def test_bias_gelu_forward(isa, C):
    pre, bias = rand(3, C, scale=3), rand(C)
    before = pre.copy()
    want = ref.gelu(pre.astype(np.float64) + bias)
    out = np.empty_like(pre)
    K.bias_gelu_forward(pre, out, bias)
    np.testing.assert_array_equal(pre, before + bias)  # pre now holds pre + bias (one fp32 add each)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_gelu_extremes(isa):
    x = np.array([-100, -20, -5, 0, 5, 20, 100], np.float32)
    out = np.empty_like(x)
    K.bias_gelu_forward(x.copy(), out)
    np.testing.assert_allclose(out, ref.gelu(x.astype(np.float64)), rtol=1e-6, atol=1e-6)


# (B, T, C, NH): the op table's attention test shapes
ATTENTION_SHAPES = [(s["B"], s["T"], s["C"], s["NH"]) for s in OPS["attention_forward"].tests.values()]


@pytest.mark.parametrize("B,T,C,NH", ATTENTION_SHAPES)
def test_attention_forward(isa, B, T, C, NH):
    qkv = rand(B, T, 3 * C)
    out, lse = np.full((B, T, C), np.nan, np.float32), np.full((B, NH, T), np.nan, np.float32)
    K.attention_forward(out, lse, qkv, NH)
    want, _ = ref.attention(qkv.astype(np.float64), NH)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lse, ref.attention_lse(qkv.astype(np.float64), NH), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("B,T,C,NH", ATTENTION_SHAPES)
def test_attention_backward_matches_float64(isa, B, T, C, NH):
    if T == 1024 and isa == "generic":
        pytest.skip("the float64 reference at T 1024 is covered on the vector ISAs")
    qkv, R = rand(B, T, 3 * C), rand(B, T, C)
    out, lse = np.empty((B, T, C), np.float32), np.empty((B, NH, T), np.float32)
    K.attention_forward(out, lse, qkv, NH)
    d = np.full_like(qkv, np.nan)
    K.attention_backward(d, R, qkv, out, lse, NH)
    want = ref.attention_backward(R.astype(np.float64), qkv.astype(np.float64), NH)
    np.testing.assert_allclose(d, want, rtol=1e-3, atol=1e-4 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("V", AWKWARD + [16000])
def test_crossentropy_forward_and_grad(isa, V):
    N = 7
    logits = rand(N, V, scale=4)
    targets = RNG.integers(0, V, N).astype(np.int32)
    losses = np.empty(N, np.float32)
    K.crossentropy(logits, targets, losses)
    want = ref.crossentropy(logits.astype(np.float64), targets)
    np.testing.assert_allclose(losses, want, rtol=1e-5, atol=1e-5)
    g = logits.copy()
    K.crossentropy(g, targets, losses, grad_scale=0.5, write_grad=True)
    p = np.exp(logits - logits.max(1, keepdims=True).astype(np.float64))
    p /= p.sum(1, keepdims=True)
    p[np.arange(N), targets] -= 1
    np.testing.assert_allclose(g, 0.5 * p, rtol=1e-4, atol=1e-7)


def test_encoder_forward(isa):
    wte, wpe = rand(50, 17), rand(9, 17)
    tokens = RNG.integers(0, 50, (3, 9)).astype(np.int32)
    out = np.empty((3, 9, 17), np.float32)
    K.encoder_forward(out, tokens, wte, wpe)
    np.testing.assert_allclose(out, wte[tokens] + wpe, rtol=1e-6)


def test_residual_forward(isa):
    a, b = rand(1000), rand(1000)
    out = np.empty_like(a)
    K.residual_forward(out, a, b)
    np.testing.assert_array_equal(out, a + b)


# ---------------------------------------------------------------- dropout
def test_philox_reference_matches_the_published_known_answers():
    """Random123's kat_vectors for Philox4x32-10: (counter, key) -> four words."""
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]
    for counter, key, want in cases:
        got = ref.philox4x32_10([[c] for c in counter], key)
        assert tuple(int(w[0]) for w in got) == want


# keys that reach every word of the counter and key: offsets not a multiple of 4 and past 2^34
# elements (the block index's high word), a seed past 2^32, late steps, high sites
DROPOUT_KEYS = [
    DropoutKey(0.1, 1337, 0, 0),
    DropoutKey(0.5, 7, 3, 5, offset=3),
    DropoutKey(0.9, 2**40 + 5, 123456, 17, offset=2**34 + 6),
    DropoutKey(0.25, 0, 2**32 - 1, 2**31, offset=1),
]


def dropout_ref(x, key):
    return ref.dropout(x.astype(np.float64), key.p, key.seed, key.step, key.site, key.offset)


@pytest.mark.parametrize("key", DROPOUT_KEYS, ids=str)
@pytest.mark.parametrize("n", [1, 5, 2047, 2049, 10_001])
def test_dropout_mask_is_philox_and_values_float64(isa, key, n):
    """The kernels' mask equals the numpy Philox reference bit for bit (a dropped element is exactly
    0, a kept one x / (1 - p)), across DROPOUT_BLOCK boundaries and unaligned offsets."""
    x = rand(n) + 10  # no zero among the inputs: out == 0 means dropped
    out = np.empty_like(x)
    K.dropout(out, x, key)
    keep = ref.dropout_keep(n, key.p, key.seed, key.step, key.site, key.offset)
    np.testing.assert_array_equal(out != 0, keep)
    np.testing.assert_allclose(out, dropout_ref(x, key), rtol=1e-6)
    K.dropout(x, x, key)  # in place
    np.testing.assert_array_equal(x, out)


def test_dropout_keeps_one_minus_p_and_masks_differ_by_site_and_step(isa):
    n, p = 1_000_000, 0.1
    x = np.ones(n, np.float32)
    masks = {}
    for step, site in ((0, 0), (0, 1), (1, 0)):
        out = np.empty_like(x)
        K.dropout(out, x, DropoutKey(p, 1337, step, site))
        masks[step, site] = out != 0
        kept = masks[step, site].mean()
        assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n), kept  # 5 sigma of a binomial
        assert out.mean(dtype=np.float64) == pytest.approx(1.0, abs=5 * np.sqrt(p / (1 - p) / n))
    # independent masks agree where both keep or both drop: (1-p)^2 + p^2 of the elements
    for other in ((0, 1), (1, 0)):
        agree = (masks[0, 0] == masks[other]).mean()
        assert abs(agree - ((1 - p) ** 2 + p**2)) < 0.005, (other, agree)


def test_dropout_zero_is_the_identity(isa):
    x = rand(3000)
    out = np.empty_like(x)
    K.dropout(out, x, DropoutKey(0.0, 1, 2, 3))
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("key", DROPOUT_KEYS[:2], ids=str)
def test_residual_dropout_forward(isa, key):
    a, b = rand(4099), rand(4099)
    out = np.empty_like(a)
    K.residual_dropout(out, a, b, key)
    np.testing.assert_allclose(out, a.astype(np.float64) + dropout_ref(b, key), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("key", DROPOUT_KEYS, ids=str)
@pytest.mark.parametrize("N,C", [(1, 3), (130, 65), (3, 2100)])
def test_dropout_bias_backward_is_the_masked_gradient(isa, key, N, C):
    """Backward draws forward's mask again: d(a + dropout(b))/db = the mask times 1/(1-p)."""
    dout = rand(N, C)
    dm, db = np.full_like(dout, np.nan), np.ones(C, np.float32)
    K.dropout_bias_backward(dm, db, dout, key)
    want = dropout_ref(dout, key)
    np.testing.assert_allclose(dm, want, rtol=1e-6, atol=0)
    np.testing.assert_allclose(db, 1 + want.sum(0), rtol=1e-5, atol=1e-5)
    a, fwd = rand(N, C), np.empty_like(dout)  # the forward's kept set is backward's nonzero set
    K.residual_dropout(fwd, a, np.full_like(a, 2.0), key)
    np.testing.assert_array_equal(fwd != a, (dm != 0))


def test_dropout_backward_fd(isa):
    key = DropoutKey(0.3, 5, 2, 1, offset=7)
    a, b, R = rand(4, 33), rand(4, 33), rand(4, 33)
    b64 = b.astype(np.float64)
    loss = lambda: float(((a + ref.dropout(b64, key.p, key.seed, key.step, key.site, key.offset)) * R).sum())
    dm, db = np.empty_like(R), np.zeros(33, np.float32)
    K.dropout_bias_backward(dm, db, R, key)
    np.testing.assert_allclose(dm, ref.numeric_grad(loss, b64), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: DropoutKey(1.0, 1, 0, 0),
        lambda: DropoutKey(-0.1, 1, 0, 0),
        lambda: DropoutKey(0.1, 1, -1, 0),
        lambda: K.dropout(rand(4), rand(4), (0.1, 1, 0, 0)),
        lambda: K.dropout(rand(5), rand(4), DropoutKey(0.1, 1, 0, 0)),
        lambda: K.residual_dropout(rand(4), rand(4), rand(3), DropoutKey(0.1, 1, 0, 0)),
        lambda: K.dropout_bias_backward(rand(2, 4), rand(3), rand(2, 4), DropoutKey(0.1, 1, 0, 0)),
        lambda: (lambda d: K.dropout_bias_backward(d, rand(4), d, DropoutKey(0.1, 1, 0, 0)))(rand(2, 4)),
    ],
)
def test_dropout_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_dropout_ops_agree_across_thread_counts(threads):
    key = DropoutKey(0.2, 9, 4, 3, offset=5)
    a, b = rand(50_001), rand(50_001)
    results = []
    for n in (1, 2, 3):
        K.set_num_threads(n)
        out, dm, db = np.empty_like(a), np.empty((97, 515), np.float32), np.zeros(515, np.float32)
        K.residual_dropout(out, a, b, key)
        K.dropout_bias_backward(dm, db, b[: 97 * 515].reshape(97, 515), key)
        results.append((out, dm, db))
    for other in results[1:]:
        for x, y in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- backward: finite differences
def test_layernorm_backward_fd(isa):
    x, w, b = rand(3, 17) + 0.5, rand(17), rand(17)
    R = rand(3, 17)
    x64, w64, b64 = (v.astype(np.float64) for v in (x, w, b))
    loss = lambda: float((ref.layernorm(x64, w64, b64)[0] * R).sum())
    out, mean, rstd = np.empty_like(x), np.empty(3, np.float32), np.empty(3, np.float32)
    K.layernorm_forward(out, mean, rstd, x, w, b)
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    K.layernorm_backward(dx, dw, db, R, x, w, mean, rstd)
    np.testing.assert_allclose(dx, ref.numeric_grad(loss, x64), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(dw, ref.numeric_grad(loss, w64), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(db, ref.numeric_grad(loss, b64), rtol=1e-3, atol=1e-4)


def test_layernorm_backward_accumulates(isa):
    x, w, b, R = rand(4, 8), rand(8), rand(8), rand(4, 8)
    out, mean, rstd = np.empty_like(x), np.empty(4, np.float32), np.empty(4, np.float32)
    K.layernorm_forward(out, mean, rstd, x, w, b)
    grads = [np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)]
    K.layernorm_backward(*grads, R, x, w, mean, rstd)
    twice = [g.copy() for g in grads]
    K.layernorm_backward(*twice, R, x, w, mean, rstd)
    for g, t in zip(grads, twice, strict=False):
        np.testing.assert_allclose(t, 2 * g, rtol=1e-6, atol=1e-7)


def test_gelu_backward_fd(isa):
    x = rand(40, scale=2.5)
    R = rand(40)
    x64 = x.astype(np.float64)
    num = ref.numeric_grad(lambda: float((ref.gelu(x64) * R).sum()), x64)
    d = np.empty_like(x)
    K.gelu_backward(d, x, R)
    np.testing.assert_allclose(d, num, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("B,T,C,NH", [(1, 5, 8, 2), (2, 7, 12, 3)])
def test_attention_backward_fd(isa, B, T, C, NH):
    qkv = rand(B, T, 3 * C)
    R = rand(B, T, C)
    q64 = qkv.astype(np.float64)
    num = ref.numeric_grad(lambda: float((ref.attention(q64, NH)[0] * R).sum()), q64)
    out, lse = np.empty((B, T, C), np.float32), np.empty((B, NH, T), np.float32)
    K.attention_forward(out, lse, qkv, NH)
    d = np.full_like(qkv, np.nan)
    K.attention_backward(d, R, qkv, out, lse, NH)
    np.testing.assert_allclose(d, num, rtol=1e-3, atol=1e-4)


def test_crossentropy_backward_fd(isa):
    logits, targets = rand(3, 11, scale=2), np.array([0, 5, 10], np.int32)
    l64 = logits.astype(np.float64)
    num = ref.numeric_grad(lambda: float(ref.crossentropy(l64, targets).mean()), l64)
    g = logits.copy()
    K.crossentropy(g, targets, np.empty(3, np.float32), grad_scale=1 / 3, write_grad=True)
    np.testing.assert_allclose(g, num, rtol=1e-3, atol=1e-5)


def test_encoder_backward_fd(isa):
    wte, wpe = rand(6, 5), rand(4, 5)
    tokens = np.array([[1, 1, 3, 0], [5, 1, 2, 3]], np.int32)
    R = rand(2, 4, 5)
    e64, p64 = wte.astype(np.float64), wpe.astype(np.float64)
    loss = lambda: float(((e64[tokens] + p64) * R).sum())
    dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)
    K.encoder_backward(dwte, dwpe, R, tokens)
    np.testing.assert_allclose(dwte, ref.numeric_grad(loss, e64), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dwpe, ref.numeric_grad(loss, p64), rtol=1e-5, atol=1e-5)


def test_bias_backward(isa):
    d = rand(130, 65)
    db = np.ones(65, np.float32)
    K.bias_backward(db, d)
    np.testing.assert_allclose(db, 1 + d.astype(np.float64).sum(0), rtol=1e-5, atol=1e-4)


def test_gelu_backward_in_place(isa):
    x, d = rand(100), rand(100)
    sep = np.empty_like(d)
    K.gelu_backward(sep, x, d)
    K.gelu_backward(d, x, d)
    np.testing.assert_array_equal(sep, d)


def test_analytic_backward_references_match_finite_differences():
    """The float64 backward references used on the configs' shapes below are right."""
    x, w, R = rand(3, 9).astype(np.float64), rand(9).astype(np.float64), rand(3, 9).astype(np.float64)
    dx, dw, db = ref.layernorm_backward(R, x, w)
    b = np.zeros(9)
    loss = lambda: float((ref.layernorm(x, w, b)[0] * R).sum())
    for got, var in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(got, ref.numeric_grad(loss, var), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        ref.gelu_backward(x, R), ref.numeric_grad(lambda: float((ref.gelu(x) * R).sum()), x), rtol=1e-6, atol=1e-8
    )
    qkv, R = rand(2, 6, 3 * 8).astype(np.float64), rand(2, 6, 8).astype(np.float64)
    num = ref.numeric_grad(lambda: float((ref.attention(qkv, 2)[0] * R).sum()), qkv)
    np.testing.assert_allclose(ref.attention_backward(R, qkv, 2), num, rtol=1e-6, atol=1e-8)


def config_op_shapes():
    from loop_tui.config import load_config

    return [
        pytest.param(load_config(n), id=n)
        for n in ("wiki_gpu_optimized", "wiki_cache_optimized", "wiki_performance_tuned")
    ]


def check_tensor(name: str, got, want, rtol: float, atol: float) -> str | None:
    """llm.c's check_tensor: the worst |got - want| against its allowance, or None if within."""
    got, want = np.asarray(got, np.float64), np.broadcast_to(np.asarray(want, np.float64), np.shape(got))
    excess = np.abs(got - want) - (atol + rtol * np.abs(want))
    i = np.unravel_index(int(np.argmax(excess)), excess.shape)
    if np.isfinite(got).all() and excess[i] <= 0:
        return None
    return (
        f"{name}: worst at {tuple(int(x) for x in i)}: got {got[i]:.6g}, want {want[i]:.6g} "
        f"(|diff| {abs(got[i] - want[i]):.3g}, allowed {atol + rtol * abs(want[i]):.3g})"
    )


def _f64(a):
    return a.astype(np.float64)


def op_encoder(T, C, F, NH, V):
    wte, wpe = rand(V, C), rand(T, C)
    tokens = RNG.integers(0, V, (1, T)).astype(np.int32)
    x = np.empty((1, T, C), np.float32)
    K.encoder_forward(x, tokens, wte, wpe)
    R = rand(1, T, C)
    dwte, dwpe = np.zeros_like(wte), np.zeros_like(wpe)
    K.encoder_backward(dwte, dwpe, R, tokens)
    want = np.zeros((V, C))
    np.add.at(want, tokens[0], _f64(R[0]))
    return [
        ("out", x, _f64(wte)[tokens] + wpe, 1e-6, 0),
        ("dwte", dwte, want, 1e-5, 1e-5),
        ("dwpe", dwpe, R[0], 1e-6, 0),
    ]


def op_layernorm(T, C, F, NH, V):
    x, R, w, b = rand(1, T, C), rand(1, T, C), rand(C), rand(C)
    out, mean, rstd = np.empty_like(x), np.empty(T, np.float32), np.empty(T, np.float32)
    K.layernorm_forward(out, mean, rstd, x, w, b)
    dx, dw, db = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)
    K.layernorm_backward(dx, dw, db, R, x, w, mean, rstd)
    wdx, wdw, wdb = ref.layernorm_backward(_f64(R), _f64(x), _f64(w))
    return [
        ("out", out, ref.layernorm(_f64(x), w, b)[0], 1e-4, 1e-4),
        ("dinp", dx, wdx, 1e-3, 1e-3),
        ("dweight", dw, wdw, 1e-3, 1e-3),
        ("dbias", db, wdb, 1e-3, 1e-3),
    ]


def op_bias_gelu(T, C, F, NH, V):
    pre, bias, dh = rand(T, F, scale=2), rand(F), rand(T, F)
    want = ref.gelu(_f64(pre) + bias)
    hid = np.empty_like(pre)
    K.bias_gelu_forward(pre, hid, bias)
    dpre = np.empty_like(pre)
    K.gelu_backward(dpre, pre, dh)
    dbias = np.zeros(F, np.float32)
    K.bias_backward(dbias, dpre)
    return [
        ("out", hid, want, 1e-5, 1e-6),
        ("dpre", dpre, ref.gelu_backward(_f64(pre), _f64(dh)), 1e-4, 1e-5),
        ("dbias", dbias, _f64(dpre).sum(0), 1e-4, 1e-4),
    ]


def op_attention(T, C, F, NH, V):
    qkv, R = rand(1, T, 3 * C), rand(1, T, C)
    y, lse = np.empty((1, T, C), np.float32), np.empty((1, NH, T), np.float32)
    K.attention_forward(y, lse, qkv, NH)
    want_y, _ = ref.attention(_f64(qkv), NH)
    dqkv = np.full_like(qkv, np.nan)
    K.attention_backward(dqkv, R, qkv, y, lse, NH)
    return [
        ("out", y, want_y, 1e-4, 1e-5),
        ("lse", lse, ref.attention_lse(_f64(qkv), NH), 1e-5, 1e-5),
        ("dqkv", dqkv, ref.attention_backward(_f64(R), _f64(qkv), NH), 1e-3, 1e-4),
    ]


def op_residual(T, C, F, NH, V):
    a, b = rand(1, T, C), rand(1, T, C)
    r = np.empty_like(a)
    K.residual_forward(r, a, b)
    return [("out", r, a + b, 0, 0)]


def op_dropout(T, C, F, NH, V):
    key = DropoutKey(0.1, 1337, 41, 3, offset=T * C)  # the second sequence of a batch
    a, b = rand(1, T, C), rand(1, T, C)
    r, dm, db = np.empty_like(a), np.empty_like(b), np.zeros(C, np.float32)
    K.residual_dropout(r, a, b, key)
    K.dropout_bias_backward(dm, db, b, key)
    want = dropout_ref(b, key)
    return [
        ("out", r, _f64(a) + want, 1e-6, 1e-6),
        ("dmasked", dm, want, 1e-6, 0),
        # a sum of T terms of size ~1: fp32 rounding may grow as T * eps in any order (a sanitizer build sums
        # without vectorising), so the allowance grows with T
        ("dbias", db, want.sum((0, 1)), 1e-5, 2e-7 * T),
    ]


CONFIG_SHAPE_CHECKS = {
    "encoder": op_encoder,
    "layernorm": op_layernorm,
    "bias_gelu": op_bias_gelu,
    "attention": op_attention,
    "residual": op_residual,
    "dropout": op_dropout,
}


@pytest.mark.parametrize("op", list(CONFIG_SHAPE_CHECKS))
@pytest.mark.parametrize("cfg", config_op_shapes())
def test_ops_on_config_shapes(isa, cfg, op):
    """Each op, forward and backward, at one sequence of each seed config against float64; a
    failure lists the worst difference of every tensor that missed."""
    failures = [
        msg
        for name, got, want, rtol, atol in CONFIG_SHAPE_CHECKS[op](
            cfg.max_length, cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.vocab_size
        )
        if (msg := check_tensor(name, got, want, rtol, atol))
    ]
    assert not failures, "\n".join(failures)


def test_check_tensor_reports_the_worst_element():
    got = np.array([1.0, 2.0, 3.5])
    msg = check_tensor("x", got, np.array([1.0, 2.0, 3.0]), 1e-3, 1e-3)
    assert msg is not None and "(2,)" in msg and "got 3.5" in msg
    assert check_tensor("x", got, got, 0, 0) is None
    assert check_tensor("x", np.array([np.nan]), np.array([1.0]), 1, 1) is not None


# ---------------------------------------------------------------- optimizer
def test_adamw_matches_reference(isa):
    p, g = rand(1001), rand(1001)
    m, v = rand(1001) * 0.1, np.abs(rand(1001)) * 0.01
    pw, mw, vw = p.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
    lr, b1, b2, eps, wd, t, s = 1e-3, 0.9, 0.95, 1e-8, 0.1, 7, 0.5
    gs = g * s
    mw = b1 * mw + (1 - b1) * gs
    vw = b2 * vw + (1 - b2) * gs * gs
    pw -= lr * ((mw / (1 - b1**t)) / (np.sqrt(vw / (1 - b2**t)) + eps) + wd * pw)
    K.adamw(p, g, m, v, lr, b1, b2, eps, wd, t, grad_scale=s)
    np.testing.assert_allclose(m, mw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v, vw, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(p, pw, rtol=1e-5, atol=1e-7)


def test_sum_squares_and_threads(isa, threads):
    x = rand(100_003)
    K.set_num_threads(1)
    one = K.sum_squares(x)
    K.set_num_threads(2)
    assert K.sum_squares(x) == one
    assert one == pytest.approx(float((x.astype(np.float64) ** 2).sum()), rel=1e-9)


@pytest.mark.parametrize("dropout", [0.0, 0.1], ids=["no_dropout", "dropout"])
def test_all_ops_agree_across_thread_counts(threads, dropout):
    """The whole step's ops give bit-identical results with 1 and 2 threads, dropout's masks too."""
    from loop_tui.config import load_config
    from loop_tui.kernels.backend import CBackend
    from loop_tui.model.gpt import GPT

    cfg = load_config("smoke").replace(dropout=dropout)
    x = RNG.integers(0, cfg.vocab_size, (cfg.batch_size, cfg.max_length + 1)).astype(np.int32)
    results = []
    for n in (1, 2):
        K.set_num_threads(n)
        m = GPT(cfg, CBackend())
        m.init_weights(3)
        loss = m.forward_backward(x[:, :-1], x[:, 1:], train_step=3)
        results.append((loss, m.grads.flat.copy(), m.loss(x[:, :-1], x[:, 1:])))
    assert results[0][0] == results[1][0]
    assert np.array_equal(results[0][1], results[1][1])
    assert (results[0][0] != results[0][2]) == (dropout > 0)  # dropout changed the training loss only


# ---------------------------------------------------------------- observability
def test_thread_and_kernel_stats():
    K.reset_stats()
    a, b = rand(256, 256), rand(256, 256)
    for _ in range(3):
        K.matmul(a, b)
    stats = {s.name: s for s in K.kernel_stats()}
    assert stats["gemm"].calls == 3
    assert stats["gemm"].flops == 3 * 2 * 256**3
    assert stats["gemm"].ns > 0
    ts = K.thread_stats()
    assert len(ts) == K.get_num_threads()
    assert all(t.os_tid > 0 and t.busy_ns > 0 for t in ts)
    assert len({t.os_tid for t in ts}) == len(ts)


def test_peak_is_measured():
    """The FMA loop's figure is a peak: a real GEMM on the same threads never beats it (by more than
    timing noise)."""
    import time

    if os.environ.get("LOOP_SANITIZED") == "1":
        pytest.skip("sanitizer instrumentation distorts the peak loop and the GEMM differently")

    peak = K.measure_peak_gflops(0.1)
    a, b = rand(384, 384), rand(384, 384)
    K.matmul(a, b)
    t0 = time.perf_counter()
    for _ in range(5):
        K.matmul(a, b)
    gemm = 5 * 2 * 384**3 / (time.perf_counter() - t0) / 1e9
    assert 0 < gemm < 1.25 * peak, (gemm, peak)
