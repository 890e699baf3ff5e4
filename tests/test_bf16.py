"""bf16 GEMMs (inputs rounded to bfloat16, fp32 sums) on every path this CPU can run, and bf16
training: gradients close to fp32, bit-identical across thread counts, exact resume.

Paths: `portable` on each ISA (bf16-rounded fp32 panels on the ISA's own FMA micro-kernel),
`emu-avx512bf16` and `emu-amx` (the native paths' packing and driver with the instruction
replaced by its pseudocode in C: run everywhere), and the native `avx512bf16` and `amx`, which
skip with the reason on a CPU without them."""

from __future__ import annotations

import numpy as np
import pytest

from loop_tui import kernels as K
from loop_tui.config import ConfigError, load_config
from loop_tui.kernels.backend import CBackend
from loop_tui.model.gpt import GPT

from .test_train import losses, quick, train

AWKWARD = [1, 3, 17, 63, 65, 127, 129, 383]
PATHS = [
    "portable-generic",
    "portable-avx2",
    "portable-avx512",
    "portable-neon",
    "emu-avx512bf16",
    "emu-amx",
    "avx512bf16",
    "amx",
]
RNG = np.random.default_rng(7)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.fixture(params=PATHS)
def bf16_path(request):
    """Each bf16 path (portable once per ISA); native ones skip where the CPU lacks them."""
    isa_before, path_before = K.isa(), K.bf16_path()
    name = request.param
    if name.startswith("portable-"):
        isa, path = name.split("-", 1)[1], "portable"
    else:
        isa, path = ("avx512" if name in K.NATIVE_BF16 else K.isa()), name
    if isa not in K.available_isas():
        pytest.skip(f"this CPU cannot run the {isa} ISA")
    if path not in K.available_bf16_paths():
        needs = "AMX-BF16 and the kernel tile permission" if path == "amx" else "AVX512-BF16"
        pytest.skip(f"this CPU has no {path} (needs {needs})")
    K.set_isa(isa)
    K.set_bf16_path(path)
    assert K.bf16_path() == path
    yield name
    K.set_isa(isa_before)
    K.set_bf16_path(path_before)


@pytest.fixture
def threads():
    before = K.get_num_threads()
    yield
    K.set_num_threads(before)


def bf16_ref(a, b, ta, tb, bias=None, c=None):
    """float64 product of the bf16-rounded inputs: what any bf16 path must compute up to fp32 sums."""
    A = K.round_bf16(a).astype(np.float64)
    B = K.round_bf16(b).astype(np.float64)
    out = (A.T if ta else A) @ (B.T if tb else B)
    if bias is not None:
        out += bias
    if c is not None:
        out += c
    return out


def check(M, N, K_, ta, tb, with_bias=False, accumulate=False):
    a = rand(K_, M) if ta else rand(M, K_)
    b = rand(N, K_) if tb else rand(K_, N)
    bias = rand(N) if with_bias else None
    c0 = rand(M, N) if accumulate else None
    out = c0.copy() if accumulate else None
    got = K.matmul(a, b, out=out, transpose_a=ta, transpose_b=tb, bias=bias, accumulate=accumulate, precision="bf16")
    want = bf16_ref(a, b, ta, tb, bias, c0)
    err = np.abs(got - want).max()
    # fp32 sums of K products of size ~1: a few ulps of sqrt(K); unrounded inputs would miss by ~1e-2 * sqrt(K)
    assert err <= 2e-6 * np.sqrt(K_) * 8 + 1e-6, f"{M}x{N}x{K_} ta={ta} tb={tb}: worst |got - want| {err:.3g}"
    return got


def bits(x: np.ndarray) -> np.ndarray:
    """The fp32 bit patterns, every NaN folded into one (payloads are not compared), so -0.0 != +0.0."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).copy()
    u[np.isnan(x)] = 0x7FC00000
    return u


DENORMAL_BF16 = 1e-40  # rounds to a bf16 that is denormal in fp32's exponent range too
LARGEST_DENORMAL = np.uint32(0x007FFFFF).view(np.float32)  # bf16 rounding takes it up to FLT_MIN


def test_round_bf16_ties_to_even_and_special_values(bf16_path):
    """The C rounding (in the packing) against numpy's round_bf16 and hand-checked values, bit for bit.

    A one-term GEMM (x times 1) then shows each path's arithmetic: every path sums from +0, so
    -0.0 comes out +0.0 (IEEE: +0 + -0 = +0); the portable path (fp32 FMAs) keeps a denormal,
    while VDPBF16PS and TDPBF16PS, and so their emulations, treat denormal inputs as zero."""
    x = np.array(
        [1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.5, 3.4028235e38, np.inf, -np.inf]
        + [DENORMAL_BF16, 0.0, -0.0, 65504.0, 1 / 3, LARGEST_DENORMAL],
        np.float32,
    )
    rounded = np.array(
        [1.0, 1.0, 1 + 2**-6, 1 + 2**-7, -2.5, np.inf, np.inf, -np.inf]
        + [K.round_bf16(np.float32([DENORMAL_BF16]))[0], 0.0, -0.0, 65536.0, 0.333984375, 2.0**-126],
        np.float32,
    )
    np.testing.assert_array_equal(bits(K.round_bf16(x)), bits(rounded))
    want = rounded.copy()
    want[x == 0] = 0.0  # -0.0 * 1 summed from +0
    if not bf16_path.startswith("portable"):
        # the native conversion (VCVTNE2PS2BF16) and the dot products treat denormals as zero
        want[np.abs(x) < 2.0**-126] = 0.0
    got = K.matmul(x.reshape(-1, 1), np.ones((1, 1), np.float32), precision="bf16").ravel()
    np.testing.assert_array_equal(bits(got), bits(want))
    nan = K.matmul(np.array([[np.nan]], np.float32), np.ones((1, 1), np.float32), precision="bf16")
    assert np.isnan(nan).all()


def test_native_paths_flush_denormals_as_the_hardware_does(bf16_path):
    """What VDPBF16PS and TDPBF16PS do whatever MXCSR says, and their emulations model: a product
    or sum that is tiny after rounding becomes zero (FTZ), a denormal bf16 input counts as zero
    (DAZ). The portable path (ordinary fp32 FMAs) keeps both."""
    native_like = not bf16_path.startswith("portable")
    tiny = np.float32(2.0**-70)  # a bf16; tiny * tiny = 2^-140 is denormal in fp32
    a = np.array([[tiny], [tiny], [1.0]], np.float32)
    b = np.array([[tiny, 1.0, DENORMAL_BF16]], np.float32)
    got = K.matmul(a, b, precision="bf16")
    expect_product = 0.0 if native_like else 2.0**-140
    assert got[0, 0] == np.float32(expect_product) and not np.signbit(got[0, 0])
    assert got[0, 1] == tiny
    assert got[2, 2] == (0.0 if native_like else K.round_bf16(np.float32([DENORMAL_BF16]))[0])
    neg = K.matmul(-a, b, precision="bf16")
    assert neg[0, 0] == np.float32(-expect_product)


def special_operands(rng, m, k, n):
    """Random operands salted with what tells implementations apart: denormal and tiny values,
    signed zeros, infinities, NaN, bf16 rounding ties, and sums that cancel to denormals."""
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    specials = np.array(
        [DENORMAL_BF16, -DENORMAL_BF16, LARGEST_DENORMAL, 2.0**-70, -(2.0**-63), 0.0, -0.0, 1 + 2**-8, 3e38, 2.0**-126],
        np.float32,
    )
    for x in (a, b):
        idx = rng.integers(0, x.size, x.size // 6)
        x.flat[idx] = rng.choice(specials, idx.size)
    a[0, :4] = [np.inf, np.nan, -np.inf, 1.0]
    b[1, 0] = np.nan
    a[1, :2] = [2.0**-63, 2.0**-63]  # rows 1 x cols 1: two products near FLT_MIN that cancel
    b[:2, 1] = [2.0**-63, -(2.0**-63) * (1 + 2**-7)]
    return a, b


@pytest.mark.parametrize("native", ["avx512bf16", "amx"])
def test_native_path_equals_its_emulation_bit_for_bit(native, threads):
    """Where the CPU has a native bf16 path, it and its C emulation (same packing and driver, the
    instruction replaced by Intel's pseudocode with DAZ/FTZ) agree on every bit, on random and
    special inputs, full and edge tiles, several K blocks, with bias and accumulation."""
    if native not in K.available_bf16_paths():
        pytest.skip(f"this CPU has no {native}")
    isa_before, path_before = K.isa(), K.bf16_path()
    rng = np.random.default_rng(11)
    cases = [(1, 1, 1), (13, 40, 3), (64, 64, 64), (97, 129, 200), (300, 96, 700), (40, 700, 96)]
    try:
        K.set_isa("avx512")
        for blocking in ({}, {"mc": 64, "kc": 64, "nc": 64}):
            K.set_gemm_blocking(**blocking)
            for m, n, k in cases:
                for ta, tb in [(0, 0), (1, 0), (0, 1)]:
                    a, b = special_operands(rng, m, k, n)
                    a, b = (a.T.copy() if ta else a), (b.T.copy() if tb else b)
                    bias = rng.standard_normal(n).astype(np.float32)
                    c0 = rng.standard_normal((m, n)).astype(np.float32)
                    c0.flat[::7] = DENORMAL_BF16
                    outs = {}
                    for path in (native, "emu-" + native):
                        K.set_bf16_path(path)
                        plain = K.matmul(a, b, transpose_a=ta, transpose_b=tb, precision="bf16")
                        acc = c0.copy()
                        K.matmul(a, b, out=acc, transpose_a=ta, transpose_b=tb, accumulate=True, precision="bf16")
                        with_bias = K.matmul(a, b, transpose_a=ta, transpose_b=tb, bias=bias, precision="bf16")
                        outs[path] = (plain, acc, with_bias)
                    for got, want in zip(outs[native], outs["emu-" + native], strict=True):
                        diff = np.flatnonzero(bits(got) != bits(want))
                        assert diff.size == 0, (
                            f"{m}x{n}x{k} ta={ta} tb={tb} {blocking}: {diff.size} elements differ, first at "
                            f"{diff[0]}: native {got.flat[diff[0]]!r} emulation {want.flat[diff[0]]!r}"
                        )
    finally:
        K.set_gemm_blocking()
        K.set_isa(isa_before)
        K.set_bf16_path(path_before)


AMX_BESIDE_TORCH = """
import numpy as np, torch
from loop_tui import kernels as K
K.set_isa("avx512"); K.set_bf16_path("amx")
rng = np.random.default_rng(0)
a = rng.standard_normal((256, 384)).astype(np.float32)
b = rng.standard_normal((384, 320)).astype(np.float32)
ours = K.matmul(a, b, precision="bf16")
ta, tb = torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()
for _ in range(2):
    theirs = (ta @ tb).float().numpy()  # oneDNN: AMX tiles configured, used and released
    again = K.matmul(a, b, precision="bf16")
    assert np.array_equal(again, ours), "our AMX GEMM changed after oneDNN ran"
    assert np.abs(theirs - ours).max() < 0.05 * np.abs(ours).max()
print("ok")
"""


def test_amx_gemm_runs_beside_onednn_in_one_process():
    """torch's bf16 matmul (oneDNN on AMX), then ours, then torch, then ours, on one thread of one
    process: ours loads its tile configuration at every GEMM and releases the tiles, so neither
    sees the other's (a stale configuration was an Illegal instruction)."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    if "amx" not in K.available_bf16_paths():
        pytest.skip("this CPU has no AMX")
    r = subprocess.run([sys.executable, "-c", AMX_BESIDE_TORCH], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("s", AWKWARD)
def test_bf16_gemm_awkward_shapes(bf16_path, s, ta, tb):
    check(s, 65, 17, ta, tb)
    check(17, s, 63, ta, tb)
    check(64, 129, s, ta, tb, with_bias=True, accumulate=bool(s % 2))


def test_bf16_gemm_odd_k_and_many_blocks(bf16_path):
    """Odd K (a zero-padded last pair), and shapes over MC, KC and NC so every loop runs twice."""
    K.set_gemm_blocking(mc=64, kc=64, nc=64)
    try:
        for ta, tb in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            check(131, 200, 161, ta, tb, with_bias=True, accumulate=True)
            check(70, 97, 1, ta, tb)
    finally:
        K.set_gemm_blocking()


def test_bf16_differs_from_fp32_by_rounding_only(bf16_path):
    """bf16 really rounds: it misses the fp32 product by about 2^-9 relative, no more."""
    a, b = rand(64, 256), rand(256, 48)
    fp32 = K.matmul(a, b)
    bf16 = K.matmul(a, b, precision="bf16")
    rel = np.linalg.norm(bf16 - fp32) / np.linalg.norm(fp32)
    assert 1e-4 < rel < 1e-2, rel


def test_bf16_short_m_path_matches_general_path(bf16_path):
    """The short-M path (threads split N) and the M-blocked path agree bit for bit in bf16."""
    for ta, tb in [(0, 0), (1, 0), (0, 1)]:
        a = rand(300, 96) if ta else rand(96, 300)
        b = rand(700, 300) if tb else rand(300, 700)
        short = K.matmul(a, b, transpose_a=ta, transpose_b=tb, precision="bf16")
        K.set_gemm_blocking(mc=K.gemm_blocking("bf16").mr)  # MC = MR: M never fits the short-M limit
        try:
            general = K.matmul(a, b, transpose_a=ta, transpose_b=tb, precision="bf16")
        finally:
            K.set_gemm_blocking()
        np.testing.assert_array_equal(short, general)


def test_bf16_threads_agree_bitwise(bf16_path, threads):
    a, b, bias = rand(333, 200), rand(200, 517), rand(517)
    outs = []
    for n in (1, 2, 3):
        K.set_num_threads(n)
        outs.append(K.matmul(a, b, bias=bias, precision="bf16"))
        outs.append(K.matmul(a, b.T.copy(), transpose_b=True, precision="bf16"))
    for i in range(2, len(outs)):
        np.testing.assert_array_equal(outs[i], outs[i % 2])


def test_bf16_peak_is_measured_and_named():
    peak = K.measure_peak_gflops(0.05, "bf16")
    fp32 = K.measure_peak_gflops(0.05, "fp32")
    assert peak > 0.5 and fp32 > 0.5
    assert K.gemm_kernel_name("bf16") != K.gemm_kernel_name("fp32")
    if K.bf16_path() == "portable":  # the same FMA loop: within timing noise of each other
        assert 0.5 < peak / fp32 < 2.0


def test_precision_is_validated():
    with pytest.raises(ConfigError, match="precision"):
        quick(precision="fp8")
    with pytest.raises(ConfigError, match="c backend only"):
        quick(precision="bf16", backend="opencl")
    with pytest.raises(ValueError, match="precision"):
        K.matmul(rand(2, 2), rand(2, 2), precision="fp16")


# ---------------------------------------------------------------- attention in bf16
ATTENTION_SHAPES = [(1, 1, 16, 2), (2, 17, 48, 2), (1, 100, 96, 4), (1, 130, 64, 1)]  # B, T, C, NH


def attention_bf16(qkv, NH):
    B, T, C3 = qkv.shape
    out, lse = np.zeros((B, T, C3 // 3), np.float32), np.zeros((B, NH, T), np.float32)
    K.attention_forward(out, lse, qkv, NH, precision="bf16")
    return out, lse


@pytest.mark.parametrize("B,T,C,NH", ATTENTION_SHAPES)
def test_bf16_attention_matches_float64_to_bf16_rounding(bf16_path, B, T, C, NH):
    """The block products (S = QK^T, O += PV and backward's four) on the bf16 path: the outputs
    miss the float64 reference by bf16's rounding of Q, K, V, P and dS (a few 2^-9), no more,
    and they do differ from fp32 (the products really ran in bf16)."""
    from . import reference as ref

    qkv, R = rand(B, T, 3 * C), rand(B, T, C)
    out, lse = attention_bf16(qkv, NH)
    want, _ = ref.attention(qkv.astype(np.float64), NH)
    rel = np.linalg.norm(out - want) / np.linalg.norm(want)
    assert rel < 2e-2, rel
    np.testing.assert_allclose(lse, ref.attention_lse(qkv.astype(np.float64), NH), rtol=2e-2, atol=2e-2)
    d = np.zeros_like(qkv)
    K.attention_backward(d, R, qkv, out, lse, NH, precision="bf16")
    dwant = ref.attention_backward(R.astype(np.float64), qkv.astype(np.float64), NH)
    drel = np.linalg.norm(d - dwant) / np.linalg.norm(dwant)
    assert drel < 4e-2, drel
    if T > 1:
        fp32 = np.zeros_like(out)
        K.attention_forward(fp32, np.zeros_like(lse), qkv, NH)
        assert not np.array_equal(fp32, out), "bf16 attention equals fp32's: nothing was rounded"


def test_bf16_attention_threads_agree_bitwise(bf16_path, threads):
    qkv, R = rand(2, 150, 3 * 64), rand(2, 150, 64)
    results = []
    for n in (1, 2, 3):
        K.set_num_threads(n)
        out, lse = attention_bf16(qkv, 4)
        d = np.zeros_like(qkv)
        K.attention_backward(d, R, qkv, out, lse, 4, precision="bf16")
        results.append((out, lse, d))
    for other in results[1:]:
        for got, want in zip(other, results[0], strict=True):
            np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- the model in bf16
def grads(precision: str) -> tuple[float, dict[str, np.ndarray]]:
    cfg = load_config("smoke").replace(precision=precision)
    m = GPT(cfg, CBackend(precision=precision))
    m.init_weights(3)
    rng = np.random.default_rng(4)
    x = rng.integers(0, cfg.vocab_size, (cfg.batch_size, cfg.max_length)).astype(np.int32)
    y = rng.integers(0, cfg.vocab_size, (cfg.batch_size, cfg.max_length)).astype(np.int32)
    loss = m.forward_backward(x, y)
    return loss, {s.name: np.array(m.grads[s.name]) for s in m.param_specs}


def test_bf16_model_gradients_close_to_fp32():
    """Stated tolerance: loss within 0.5% and every parameter gradient within 5% (relative L2
    norm) of fp32; bf16 keeps 8 significant bits, so ~0.4% per rounded input, growing through
    the layers. A wrong layout or a dropped K block would miss by far more."""
    loss32, g32 = grads("fp32")
    loss16, g16 = grads("bf16")
    assert abs(loss16 - loss32) / loss32 < 5e-3, (loss16, loss32)
    worst = {n: float(np.linalg.norm(g16[n] - g32[n]) / (np.linalg.norm(g32[n]) + 1e-30)) for n in g32}
    bad = {n: e for n, e in worst.items() if e > 0.05}
    assert not bad, f"gradients off by more than 5%: {bad}"
    assert max(worst.values()) > 1e-5, "bf16 gradients equal fp32's: the GEMMs did not round"


def test_bf16_training_threads_agree_bitwise(tmp_path, threads):
    cfg = quick(max_steps=6, precision="bf16")
    K.set_num_threads(1)
    train(cfg, tmp_path / "one", 6)
    K.set_num_threads(2)
    train(cfg, tmp_path / "two", 6)
    assert losses(tmp_path / "one") == losses(tmp_path / "two")


def test_bf16_resume_equals_uninterrupted_run(tmp_path):
    cfg = quick(max_steps=16, precision="bf16")
    train(cfg, tmp_path / "straight", 16)
    train(cfg, tmp_path / "split", 7)
    t = train(cfg, tmp_path / "split", 9, resume=True)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 17))
    assert all(a[s] == b[s] for s in a), {s: (a[s], b[s]) for s in a if a[s] != b[s]}
    assert t.precision == "bf16" and t.backend.precision == "bf16"


def test_auto_precision_follows_the_hardware():
    from loop_tui.backend import resolve_precision

    assert resolve_precision("auto", "c") == ("bf16" if K.has_native_bf16() else "fp32")
    assert resolve_precision("auto", "opencl") == "fp32"
    assert resolve_precision("bf16", "c") == "bf16"
