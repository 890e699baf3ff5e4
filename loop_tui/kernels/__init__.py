"""Python face of the C kernels (c/, built into loop_tui._kernels by build_kernels.py).

Every function takes C-contiguous numpy arrays of the documented dtype and shape; anything
else raises ValueError naming the shapes, before C sees a pointer. Kernels are meant to be
called from one long-lived thread: libgomp keeps a thread pool per calling thread.

Environment: LOOP_ISA=avx512|avx2|generic forces an instruction set; LOOP_BF16=amx|avx512bf16|
portable (or emu-amx|emu-avx512bf16, the native paths emulated in C, for tests) forces the bf16
GEMM path; LOOP_THREADS=n sets the thread count (default: all usable cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import machine
from ..backend import DropoutKey, KernelStat, matmul_dims

_PKG = Path(__file__).resolve().parent.parent


def _check_fresh() -> None:
    """In a source checkout, refuse a module older than the C it was built from."""
    src = _PKG.parent / "c"
    mods = list(_PKG.glob("_kernels*.so"))
    if not src.is_dir() or not mods:
        return
    built = max(m.stat().st_mtime for m in mods)
    newest = max(p.stat().st_mtime for p in src.iterdir() if p.suffix in (".c", ".h"))
    if newest > built + 1e-6:
        raise ImportError("loop_tui C kernels are older than c/: run `make build` (or python build_kernels.py)")


try:
    _check_fresh()
    from .._kernels import ffi, lib
except ModuleNotFoundError as e:  # pragma: no cover - message for a checkout never built
    raise ImportError("loop_tui C kernels are not built: run `make build` (or pip install -e .)") from e

ISA_NAMES = {0: "generic", 1: "avx2", 2: "avx512"}
_ISA_IDS = {v: k for k, v in ISA_NAMES.items()}
BF16_PATHS = {0: "portable", 1: "avx512bf16", 2: "amx", 3: "emu-avx512bf16", 4: "emu-amx"}
_BF16_IDS = {v: k for k, v in BF16_PATHS.items()}
NATIVE_BF16 = ("avx512bf16", "amx")
PRECISIONS = ("fp32", "bf16")
_PRECISION_IDS = {"fp32": 0, "bf16": 1}
F32, I32 = np.dtype(np.float32), np.dtype(np.int32)


# ---------------------------------------------------------------- runtime: ISA, threads, caches
def isa() -> str:
    """The instruction set the kernels run now."""
    return ISA_NAMES[lib.loop_isa_get()]


def best_isa() -> str:
    return ISA_NAMES[lib.loop_isa_best()]


def available_isas() -> list[str]:
    return [ISA_NAMES[i] for i in range(lib.loop_isa_best() + 1)]


def set_isa(name: str) -> None:
    if name not in _ISA_IDS:
        raise ValueError(f"unknown ISA {name!r}: choose from {', '.join(_ISA_IDS)}")
    if lib.loop_isa_set(_ISA_IDS[name]) != 0:
        raise ValueError(f"this CPU cannot run {name} (best: {best_isa()})")


def bf16_path() -> str:
    """The path bf16 GEMMs take now: amx, avx512bf16 (native), portable (bf16-rounded inputs on
    fp32 FMAs), or an emulation. Native paths need the avx512 ISA active."""
    return BF16_PATHS[lib.loop_bf16_path_get()]


def best_bf16_path() -> str:
    return BF16_PATHS[lib.loop_bf16_path_best()]


def available_bf16_paths() -> list[str]:
    return [name for i, name in BF16_PATHS.items() if lib.loop_bf16_path_supported(i)]


def has_native_bf16() -> bool:
    """True when bf16 GEMMs run on bf16 hardware (AVX512-BF16 or AMX) with the current ISA."""
    return bf16_path() in NATIVE_BF16


def set_bf16_path(name: str) -> None:
    if name not in _BF16_IDS:
        raise ValueError(f"unknown bf16 path {name!r}: choose from {', '.join(_BF16_IDS)}")
    if lib.loop_bf16_path_set(_BF16_IDS[name]) != 0:
        raise ValueError(f"this CPU cannot run the {name} bf16 path (available: {', '.join(available_bf16_paths())})")


def gemm_kernel_name(precision: str = "fp32") -> str:
    """The micro-kernel GEMMs of this precision use now."""
    return ffi.string(lib.loop_gemm_kernel_name(_precision_id(precision))).decode()


def _precision_id(precision: str) -> int:
    if precision not in _PRECISION_IDS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return _PRECISION_IDS[precision]


def round_bf16(x: np.ndarray) -> np.ndarray:
    """x rounded to the nearest bfloat16 (ties to even), as float32: what bf16 GEMMs multiply."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), r).astype(np.float32)


def set_num_threads(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"thread count must be a positive integer, got {n!r}")
    lib.loop_set_num_threads(int(n))


def get_num_threads() -> int:
    return lib.loop_get_num_threads()


def configure_caches(caches: machine.Caches) -> None:
    lib.loop_gemm_set_cache_sizes(caches.size("L1d"), caches.size("L2"), caches.size("L3"))


@dataclass(frozen=True)
class Blocking:
    mr: int
    nr: int
    mc: int
    kc: int
    nc: int
    short_m_rows: int  # M up to this: packed A stays in L2, threads split N (the d x 4d weight gradients)
    stream_min_mib: int  # a write-once, 64-byte aligned C over this many MiB bypasses the cache (0: never)


def gemm_blocking(precision: str = "fp32") -> Blocking:
    out = ffi.new("int[7]")
    lib.loop_gemm_get_blocking(_precision_id(precision), out)
    return Blocking(*out)


@dataclass(frozen=True)
class GemmKernel:
    """What c/gemm.c's blocking() derives the block sizes from, for the micro-kernel in use."""

    mr: int
    nr: int
    kpack: int  # packed K is a multiple of this
    elem_bytes: int  # bytes per packed element
    b_panel_in_l1: bool  # KC keeps a B micro-panel in half of L1d (else 1.5x L1d)
    stream_min_mib: int  # as in Blocking


def gemm_kernel(precision: str = "fp32") -> GemmKernel:
    out = ffi.new("int[6]")
    lib.loop_gemm_kernel_facts(_precision_id(precision), out)
    return GemmKernel(out[0], out[1], out[2], out[3], bool(out[4]), out[5])


def set_gemm_blocking(mc: int = 0, kc: int = 0, nc: int = 0) -> None:
    """Fix GEMM block sizes (0 = derive from the caches), for tuning and tests."""
    lib.loop_gemm_set_blocking(int(mc), int(kc), int(nc))


def set_gemm_streaming(on: bool = True, min_mib: int = 32) -> None:
    """Non-temporal stores for a write-once, 64-byte aligned C over min_mib MiB (on, 32 MiB by
    default); off for A/B timing."""
    lib.loop_gemm_set_stream_min_mib(int(min_mib) if on else 0)


# ---------------------------------------------------------------- observability
@dataclass(frozen=True)
class ThreadStat:
    index: int  # OpenMP thread number
    os_tid: int  # Linux thread id (for /proc/<pid>/task/<tid>)
    busy_ns: int  # time inside kernel work, barrier waits excluded


def thread_stats() -> list[ThreadStat]:
    n = 256
    tids, busy = ffi.new("int64_t[]", n), ffi.new("uint64_t[]", n)
    used = lib.loop_thread_stats(tids, busy, n)
    active = min(used, get_num_threads())  # slots of threads from an earlier, larger count stay filled
    return [ThreadStat(i, int(tids[i]), int(busy[i])) for i in range(active) if tids[i]]


def kernel_stats() -> list[KernelStat]:
    n = lib.loop_kernel_count()
    calls, ns = ffi.new("uint64_t[]", n), ffi.new("uint64_t[]", n)
    flops, nbytes = ffi.new("double[]", n), ffi.new("double[]", n)
    lib.loop_kernel_stats(calls, ns, flops, nbytes)
    return [
        KernelStat(ffi.string(lib.loop_kernel_name(i)).decode(), int(calls[i]), int(ns[i]), flops[i], nbytes[i])
        for i in range(n)
    ]


def reset_stats() -> None:
    lib.loop_stats_reset()


def scratch_grow_count() -> int:
    """Times the kernels' own scratch buffers were (re)allocated; flat after warm-up."""
    return int(lib.loop_scratch_grow_count())


def scratch_bytes() -> int:
    return int(lib.loop_scratch_bytes())


def measure_peak_gflops(seconds: float = 0.3, precision: str = "fp32") -> float:
    """Peak GFLOP/s of this machine for a precision on the active ISA, bf16 path and thread
    count: the GEMM micro-kernel's instruction (FMA, VDPBF16PS or TDPBF16PS) in a loop on registers."""
    return float(lib.loop_measure_peak_gflops(_precision_id(precision), float(seconds)))


# ---------------------------------------------------------------- argument checking
def _arr(name: str, a, dtype=F32, ndim: int | None = None) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must be {dtype}, got {a.dtype} with shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (shape {a.shape}, strides {a.strides})")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    return a


def _out(name: str, a) -> np.ndarray:
    a = _arr(name, a)
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only (shape {a.shape})")
    return a


def _shape(name: str, a: np.ndarray, shape: tuple) -> None:
    if a.shape != tuple(shape):
        raise ValueError(f"{name} has shape {a.shape}, expected {tuple(shape)}")


def _rows(name: str, a: np.ndarray, C: int | None = None) -> tuple[int, int]:
    """(N, C) of an array seen as rows of its last dimension."""
    c = a.shape[-1]
    if C is not None and c != C:
        raise ValueError(f"{name} has shape {a.shape}: last dimension must be {C}")
    return a.size // c, c


def _tokens(name: str, t, vocab: int) -> np.ndarray:
    t = _arr(name, t, I32)
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= vocab:
        raise ValueError(f"{name} (shape {t.shape}) has ids in [{lo}, {hi}], outside [0, {vocab})")
    return t


def _p(a: np.ndarray, ctype: str = "float *"):
    return ffi.cast(ctype, a.ctypes.data)


ALIGN = 64  # bytes: a cache line, and the alignment the GEMM needs to stream a large C past the cache


def empty(shape, dtype=np.float32) -> np.ndarray:
    """np.empty whose data starts on a 64-byte boundary (numpy only promises 16).

    matmul writes a C larger than 32 MiB with non-temporal stores when C and its rows are
    64-byte aligned, which saves reading every line from memory before overwriting it."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


# ---------------------------------------------------------------- GEMM
def matmul(
    a,
    b,
    out=None,
    transpose_a: bool = False,
    transpose_b: bool = False,
    bias=None,
    accumulate: bool = False,
    precision: str = "fp32",
) -> np.ndarray:
    """out = op(a) @ op(b) (+ bias) (+ out if accumulate); op transposes when asked. precision
    "bf16" rounds a and b to bf16 (in the packing copy; the arrays are not touched) and sums the
    products in fp32; the bias and accumulation stay fp32."""
    gemm = lib.loop_gemm_bf16 if _precision_id(precision) else lib.loop_gemm
    a, b = _arr("a", a, ndim=2), _arr("b", b, ndim=2)
    M, N, K = matmul_dims(a.shape, b.shape, transpose_a, transpose_b, out is not None, accumulate)
    if out is None:
        out = empty((M, N))
    out = _out("out", out)
    _shape("out", out, (M, N))
    if bias is not None:
        bias = _arr("bias", bias)
        _shape("bias", bias, (N,))
    if np.shares_memory(out, a) or np.shares_memory(out, b):
        raise ValueError("out must not overlap a or b")
    gemm(
        int(transpose_a),
        int(transpose_b),
        M,
        N,
        K,
        _p(a),
        a.shape[1],
        _p(b),
        b.shape[1],
        _p(out),
        N,
        _p(bias) if bias is not None else ffi.NULL,
        int(accumulate),
    )
    return out


# ---------------------------------------------------------------- transformer ops
def encoder_forward(out, tokens, wte, wpe) -> None:
    """out[B,T,C] = wte[tokens] + wpe[:T]"""
    wte, wpe = _arr("wte", wte, ndim=2), _arr("wpe", wpe, ndim=2)
    V, C = wte.shape
    tokens = _tokens("tokens", tokens, V)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (B, T), got {tokens.shape}")
    B, T = tokens.shape
    if wpe.shape[1] != C or wpe.shape[0] < T:
        raise ValueError(f"wpe has shape {wpe.shape}, needs at least ({T}, {C})")
    out = _out("out", out)
    _shape("out", out, (B, T, C))
    lib.loop_encoder_forward(_p(out), _p(tokens, "int32_t *"), _p(wte), _p(wpe), B, T, C)


def encoder_backward(dwte, dwpe, dout, tokens) -> None:
    """dwte[V,C] += scatter(dout[B,T,C]); dwpe[:T] += sum over batch"""
    dwte, dwpe = _out("dwte", dwte), _out("dwpe", dwpe)
    V, C = dwte.shape
    tokens = _tokens("tokens", tokens, V)
    B, T = tokens.shape
    if dwpe.ndim != 2 or dwpe.shape[1] != C or dwpe.shape[0] < T:
        raise ValueError(f"dwpe has shape {dwpe.shape}, needs at least ({T}, {C})")
    dout = _arr("dout", dout)
    _shape("dout", dout, (B, T, C))
    lib.loop_encoder_backward(_p(dwte), _p(dwpe), _p(dout), _p(tokens, "int32_t *"), B, T, C)


def layernorm_forward(out, mean, rstd, inp, weight, bias) -> None:
    """out = LN(inp) * weight + bias over the last dimension; mean, rstd: one per row"""
    inp, weight, bias = _arr("inp", inp), _arr("weight", weight), _arr("bias", bias)
    N, C = _rows("inp", inp)
    _shape("weight", weight, (C,))
    _shape("bias", bias, (C,))
    out, mean, rstd = _out("out", out), _out("mean", mean), _out("rstd", rstd)
    _shape("out", out, inp.shape)
    if mean.size != N or rstd.size != N:
        raise ValueError(f"mean {mean.shape} and rstd {rstd.shape} need {N} elements for inp {inp.shape}")
    lib.loop_layernorm_forward(_p(out), _p(mean), _p(rstd), _p(inp), _p(weight), _p(bias), N, C)


def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd) -> None:
    """dinp += ..., dweight += ..., dbias += ... (gradients of layernorm_forward)"""
    inp, dout, weight = _arr("inp", inp), _arr("dout", dout), _arr("weight", weight)
    N, C = _rows("inp", inp)
    _shape("dout", dout, inp.shape)
    _shape("weight", weight, (C,))
    mean, rstd = _arr("mean", mean), _arr("rstd", rstd)
    if mean.size != N or rstd.size != N:
        raise ValueError(f"mean {mean.shape} and rstd {rstd.shape} need {N} elements for inp {inp.shape}")
    dinp, dweight, dbias = _out("dinp", dinp), _out("dweight", dweight), _out("dbias", dbias)
    _shape("dinp", dinp, inp.shape)
    _shape("dweight", dweight, (C,))
    _shape("dbias", dbias, (C,))
    lib.loop_layernorm_backward(
        _p(dinp), _p(dweight), _p(dbias), _p(dout), _p(inp), _p(weight), _p(mean), _p(rstd), N, C
    )


def bias_gelu_forward(pre, out, bias=None) -> None:
    """pre += bias (in place, if given); out = gelu_tanh(pre)"""
    pre, out = _out("pre", pre), _out("out", out)
    N, C = _rows("pre", pre)
    _shape("out", out, pre.shape)
    if bias is not None:
        bias = _arr("bias", bias)
        _shape("bias", bias, (C,))
    lib.loop_bias_gelu_forward(_p(pre), _p(out), _p(bias) if bias is not None else ffi.NULL, N, C)


def gelu_backward(dinp, pre, dout) -> None:
    """dinp = dout * gelu_tanh'(pre); dinp may be dout"""
    pre, dout, dinp = _arr("pre", pre), _arr("dout", dout), _out("dinp", dinp)
    _shape("dout", dout, pre.shape)
    _shape("dinp", dinp, pre.shape)
    lib.loop_gelu_backward(_p(dinp), _p(pre), _p(dout), pre.size)


def _attention_shapes(qkv: np.ndarray, num_heads: int) -> tuple[int, int, int]:
    if qkv.ndim != 3 or qkv.shape[2] % 3:
        raise ValueError(f"qkv must be (B, T, 3C), got {qkv.shape}")
    B, T, C3 = qkv.shape
    C = C3 // 3
    if num_heads < 1 or C % num_heads:
        raise ValueError(f"C={C} (qkv {qkv.shape}) is not divisible by num_heads={num_heads}")
    return B, T, C


def attention_forward(out, lse, qkv, num_heads: int, precision: str = "fp32") -> None:
    """out[B,T,C] = causal multi-head attention of qkv[B,T,3C]; lse[B,NH,T] = the log-sum-exp of
    each query's scaled scores (what backward needs to recompute the probabilities). In bf16 the
    block products run on the bf16 GEMM path; softmax and sums stay fp32."""
    qkv = _arr("qkv", qkv)
    B, T, C = _attention_shapes(qkv, num_heads)
    out, lse = _out("out", out), _out("lse", lse)
    _shape("out", out, (B, T, C))
    _shape("lse", lse, (B, num_heads, T))
    lib.loop_attention_forward(_p(out), _p(lse), _p(qkv), B, T, C, num_heads, _precision_id(precision))


def attention_backward(dqkv, dout, qkv, out, lse, num_heads: int, precision: str = "fp32") -> None:
    """dqkv[B,T,3C] = gradient of attention_forward (overwritten), from its inputs and outputs"""
    qkv, dout, out, lse = _arr("qkv", qkv), _arr("dout", dout), _arr("out", out), _arr("lse", lse)
    B, T, C = _attention_shapes(qkv, num_heads)
    _shape("dout", dout, (B, T, C))
    _shape("out", out, (B, T, C))
    _shape("lse", lse, (B, num_heads, T))
    dqkv = _out("dqkv", dqkv)
    _shape("dqkv", dqkv, qkv.shape)
    lib.loop_attention_backward(
        _p(dqkv), _p(dout), _p(qkv), _p(out), _p(lse), B, T, C, num_heads, _precision_id(precision)
    )


def residual_forward(out, a, b) -> None:
    """out = a + b"""
    a, b, out = _arr("a", a), _arr("b", b), _out("out", out)
    _shape("b", b, a.shape)
    _shape("out", out, a.shape)
    lib.loop_residual_forward(_p(out), _p(a), _p(b), a.size)


def _key(key) -> object:
    if not isinstance(key, DropoutKey):
        raise ValueError(f"key must be a DropoutKey, got {type(key).__name__}")
    seed_lo, seed_hi, step, site = key.words
    return ffi.new(
        "loop_dropout_key *",
        {"p": key.p, "seed": seed_hi << 32 | seed_lo, "offset": key.offset, "step": step, "site": site},
    )


def dropout(out, inp, key: DropoutKey) -> None:
    """out = inp * keep / (1 - p), keep drawn by Philox from `key` (see c/ops.h); out may be inp"""
    inp, out = _arr("inp", inp), _out("out", out)
    _shape("out", out, inp.shape)
    lib.loop_dropout(_p(out), _p(inp), inp.size, _key(key))


def residual_dropout(out, a, b, key: DropoutKey) -> None:
    """out = a + dropout(b)"""
    a, b, out = _arr("a", a), _arr("b", b), _out("out", out)
    _shape("b", b, a.shape)
    _shape("out", out, a.shape)
    lib.loop_residual_dropout(_p(out), _p(a), _p(b), a.size, _key(key))


def dropout_bias_backward(dmasked, dbias, dout, key: DropoutKey) -> None:
    """dmasked = dropout(dout) (the same mask as forward's); dbias[C] += column sums of dmasked"""
    dout, dmasked, dbias = _arr("dout", dout), _out("dmasked", dmasked), _out("dbias", dbias)
    N, C = _rows("dout", dout)
    _shape("dmasked", dmasked, dout.shape)
    _shape("dbias", dbias, (C,))
    if np.shares_memory(dmasked, dout):
        raise ValueError("dmasked must not overlap dout")
    lib.loop_dropout_bias_backward(_p(dmasked), _p(dbias), _p(dout), N, C, _key(key))


def bias_backward(dbias, dout) -> None:
    """dbias[C] += column sums of dout[..., C]"""
    dout, dbias = _arr("dout", dout), _out("dbias", dbias)
    N, C = _rows("dout", dout)
    _shape("dbias", dbias, (C,))
    lib.loop_bias_backward(_p(dbias), _p(dout), N, C)


def gemv(y, x, W, bias=None) -> None:
    """y[N] = x[K] . W[K,N] (+ bias[N]): one row through a weight stored (in, out)"""
    W = _arr("W", W, ndim=2)
    K, N = W.shape
    x, y = _arr("x", x), _out("y", y)
    if x.size != K or y.size != N:
        raise ValueError(f"x {x.shape} and y {y.shape} need {K} and {N} elements for W {W.shape}")
    if bias is not None:
        _shape("bias", _arr("bias", bias), (N,))
    lib.loop_gemv(_p(y), _p(x), _p(W), _p(bias) if bias is not None else ffi.NULL, K, N)


def gemv_t(y, x, W) -> None:
    """y[N] = W[N,K] . x[K]: one row against every row of W (the tied LM head: rows of wte)"""
    W = _arr("W", W, ndim=2)
    N, K = W.shape
    x, y = _arr("x", x), _out("y", y)
    if x.size != K or y.size != N:
        raise ValueError(f"x {x.shape} and y {y.shape} need {K} and {N} elements for W {W.shape}")
    lib.loop_gemv_t(_p(y), _p(x), _p(W), K, N)


def attention_decode(out, q, kcache, vcache, n: int) -> None:
    """out[NH*hs] = causal attention of one query per head q[NH*hs] over the cached keys and values
    kcache, vcache [NH, cap, hs] of positions 0..n-1 (the newest token's included)"""
    kcache, vcache = _arr("kcache", kcache, ndim=3), _arr("vcache", vcache, ndim=3)
    NH, cap, hs = kcache.shape
    _shape("vcache", vcache, kcache.shape)
    q, out = _arr("q", q), _out("out", out)
    if q.size != NH * hs or out.size != NH * hs:
        raise ValueError(f"q {q.shape} and out {out.shape} need {NH * hs} elements for a cache {kcache.shape}")
    if not 1 <= n <= cap:
        raise ValueError(f"n must be in [1, {cap}] (the cache's positions), got {n}")
    lib.loop_attention_decode(_p(out), _p(q), _p(kcache), _p(vcache), NH, hs, int(n), cap)


def crossentropy(
    logits, targets, losses, grad_scale: float = 0.0, write_grad: bool = False, vocab: int | None = None
) -> None:
    """losses[N] = -log softmax(logits[:, :vocab])[targets]; with write_grad, logits becomes
    grad_scale * (softmax - onehot), the gradient of grad_scale * losses. vocab (default: every
    column) leaves out the padded columns [vocab, Vp): they never count, and their gradient is 0."""
    logits = _out("logits", logits) if write_grad else _arr("logits", logits)
    N, Vp = _rows("logits", logits)
    V = Vp if vocab is None else int(vocab)
    if not 0 < V <= Vp:
        raise ValueError(f"vocab must be in [1, {Vp}] for logits {logits.shape}, got {vocab}")
    targets = _tokens("targets", targets, V)
    losses = _out("losses", losses)
    if targets.size != N or losses.size != N:
        raise ValueError(
            f"targets {targets.shape} and losses {losses.shape} need {N} elements for logits {logits.shape}"
        )
    lib.loop_crossentropy(
        _p(logits), _p(losses), _p(targets, "int32_t *"), N, V, Vp, float(grad_scale), int(write_grad)
    )


def adamw(
    param,
    grad,
    m,
    v,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step: int,
    grad_scale: float = 1.0,
) -> None:
    """One AdamW step (decoupled decay, bias correction for step >= 1) on flat float32 buffers."""
    param, grad, m, v = _out("param", param), _arr("grad", grad), _out("m", m), _out("v", v)
    for name, x in (("grad", grad), ("m", m), ("v", v)):
        _shape(name, x, param.shape)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    lib.loop_adamw(
        _p(param),
        _p(grad),
        _p(m),
        _p(v),
        param.size,
        lr,
        beta1,
        beta2,
        eps,
        weight_decay,
        1.0 - beta1**step,
        1.0 - beta2**step,
        grad_scale,
    )


def sum_squares(x) -> float:
    x = _arr("x", x)
    return float(lib.loop_sum_squares(_p(x), x.size))


def scale(x, s: float) -> None:
    x = _out("x", x)
    lib.loop_scale(_p(x), float(s), x.size)


# ---------------------------------------------------------------- load-time setup
def _init() -> None:
    forced = os.environ.get("LOOP_ISA", "").strip().lower()
    set_isa(forced if forced else best_isa())
    forced_bf16 = os.environ.get("LOOP_BF16", "").strip().lower()
    set_bf16_path(forced_bf16 if forced_bf16 else best_bf16_path())
    threads = os.environ.get("LOOP_THREADS", "").strip()
    set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else machine.cpu_count())
    configure_caches(machine.detect_caches())


_init()
