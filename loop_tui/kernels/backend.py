"""The C backend: the op set of c/ops.h on numpy buffers in host memory (see loop_tui.backend.Backend
for the interface), and the wrapper layer over the library's entry points.

Every op takes C-contiguous numpy arrays of the documented dtype and shape; anything else raises
ValueError naming the shapes, before C sees a pointer. Ops are meant to be called from one
long-lived thread: libgomp keeps a thread pool per calling thread."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend_common import DropoutKey, KernelStat, ThreadStat, matmul_dims
from . import runtime, stats
from .decode import Decoder
from .peak import peak_gflops
from .runtime import ffi, lib

F32, I32 = np.dtype(np.float32), np.dtype(np.int32)
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


def round_bf16(x: np.ndarray) -> np.ndarray:
    """x rounded to the nearest bfloat16 (ties to even), as float32: what bf16 GEMMs multiply."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), r).astype(np.float32)


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


def _key(key) -> object:
    if not isinstance(key, DropoutKey):
        raise ValueError(f"key must be a DropoutKey, got {type(key).__name__}")
    seed_lo, seed_hi, step, site = key.words
    return ffi.new(
        "loop_dropout_key *",
        {"p": key.p, "seed": seed_hi << 32 | seed_lo, "offset": key.offset, "step": step, "site": site},
    )


def _attention_shapes(qkv: np.ndarray, num_heads: int) -> tuple[int, int, int]:
    if qkv.ndim != 3 or qkv.shape[2] % 3:
        raise ValueError(f"qkv must be (B, T, 3C), got {qkv.shape}")
    B, T, C3 = qkv.shape
    C = C3 // 3
    if num_heads < 1 or C % num_heads:
        raise ValueError(f"C={C} (qkv {qkv.shape}) is not divisible by num_heads={num_heads}")
    return B, T, C


class CBackend:
    """Ops for the model plus buffer management. Every buffer the model uses comes from
    `empty`/`zeros`, so `allocations` counts them all. `precision` is that of every GEMM (the
    matmuls and attention's block products); everything else is fp32."""

    name = "c"

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        if threads is not None:
            runtime.set_num_threads(threads)
        self._precision_id = runtime.precision_id(precision)
        self._gemm = lib.loop_gemm_bf16 if self._precision_id else lib.loop_gemm
        self.precision = precision
        self.allocations = 0
        self.allocated_bytes = 0

    # -- buffers
    def empty(self, n: int, dtype=np.float32) -> np.ndarray:
        self.allocations += 1
        self.allocated_bytes += n * np.dtype(dtype).itemsize
        return empty(n, dtype)

    def zeros(self, n: int, dtype=np.float32) -> np.ndarray:
        a = self.empty(n, dtype)
        a.fill(0)
        return a

    def view(self, flat: np.ndarray, offset: int, shape: tuple[int, ...]) -> np.ndarray:
        return flat[offset : offset + int(np.prod(shape))].reshape(shape)

    def zero_(self, buf: np.ndarray) -> None:
        buf.fill(0)

    def to_numpy(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def write(self, dst: np.ndarray, src: np.ndarray) -> None:
        dst[...] = src

    # -- GEMM
    def matmul(
        self, a, b, out=None, transpose_a: bool = False, transpose_b: bool = False, bias=None, accumulate: bool = False
    ) -> np.ndarray:
        """out = op(a) @ op(b) (+ bias) (+ out if accumulate); op transposes when asked. In bf16, a
        and b are rounded to bf16 (in the packing copy; the arrays are not touched) and the products
        summed in fp32; the bias and accumulation stay fp32."""
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
        self._gemm(
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

    # -- transformer ops
    def encoder_forward(self, out, tokens, wte, wpe) -> None:
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

    def encoder_backward(self, dwte, dwpe, dout, tokens) -> None:
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

    def layernorm_forward(self, out, mean, rstd, inp, weight, bias) -> None:
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

    def layernorm_backward(self, dinp, dweight, dbias, dout, inp, weight, mean, rstd) -> None:
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

    def bias_gelu_forward(self, pre, out, bias=None) -> None:
        """pre += bias (in place, if given); out = gelu_tanh(pre)"""
        pre, out = _out("pre", pre), _out("out", out)
        N, C = _rows("pre", pre)
        _shape("out", out, pre.shape)
        if bias is not None:
            bias = _arr("bias", bias)
            _shape("bias", bias, (C,))
        lib.loop_bias_gelu_forward(_p(pre), _p(out), _p(bias) if bias is not None else ffi.NULL, N, C)

    def gelu_backward(self, dinp, pre, dout) -> None:
        """dinp = dout * gelu_tanh'(pre); dinp may be dout"""
        pre, dout, dinp = _arr("pre", pre), _arr("dout", dout), _out("dinp", dinp)
        _shape("dout", dout, pre.shape)
        _shape("dinp", dinp, pre.shape)
        lib.loop_gelu_backward(_p(dinp), _p(pre), _p(dout), pre.size)

    def attention_forward(self, out, lse, qkv, num_heads: int) -> None:
        """out[B,T,C] = causal multi-head attention of qkv[B,T,3C]; lse[B,NH,T] = the log-sum-exp of
        each query's scaled scores (what backward needs to recompute the probabilities). In bf16 the
        block products run on the bf16 GEMM path; softmax and sums stay fp32."""
        qkv = _arr("qkv", qkv)
        B, T, C = _attention_shapes(qkv, num_heads)
        out, lse = _out("out", out), _out("lse", lse)
        _shape("out", out, (B, T, C))
        _shape("lse", lse, (B, num_heads, T))
        lib.loop_attention_forward(_p(out), _p(lse), _p(qkv), B, T, C, num_heads, self._precision_id)

    def attention_backward(self, dqkv, dout, qkv, out, lse, num_heads: int) -> None:
        """dqkv[B,T,3C] = gradient of attention_forward (overwritten), from its inputs and outputs"""
        qkv, dout, out, lse = _arr("qkv", qkv), _arr("dout", dout), _arr("out", out), _arr("lse", lse)
        B, T, C = _attention_shapes(qkv, num_heads)
        _shape("dout", dout, (B, T, C))
        _shape("out", out, (B, T, C))
        _shape("lse", lse, (B, num_heads, T))
        dqkv = _out("dqkv", dqkv)
        _shape("dqkv", dqkv, qkv.shape)
        lib.loop_attention_backward(
            _p(dqkv), _p(dout), _p(qkv), _p(out), _p(lse), B, T, C, num_heads, self._precision_id
        )

    def residual_forward(self, out, a, b) -> None:
        """out = a + b"""
        a, b, out = _arr("a", a), _arr("b", b), _out("out", out)
        _shape("b", b, a.shape)
        _shape("out", out, a.shape)
        lib.loop_residual_forward(_p(out), _p(a), _p(b), a.size)

    def dropout(self, out, inp, key: DropoutKey) -> None:
        """out = inp * keep / (1 - p), keep drawn by Philox from `key` (see c/ops.h); out may be inp"""
        inp, out = _arr("inp", inp), _out("out", out)
        _shape("out", out, inp.shape)
        lib.loop_dropout(_p(out), _p(inp), inp.size, _key(key))

    def residual_dropout(self, out, a, b, key: DropoutKey) -> None:
        """out = a + dropout(b)"""
        a, b, out = _arr("a", a), _arr("b", b), _out("out", out)
        _shape("b", b, a.shape)
        _shape("out", out, a.shape)
        lib.loop_residual_dropout(_p(out), _p(a), _p(b), a.size, _key(key))

    def dropout_bias_backward(self, dmasked, dbias, dout, key: DropoutKey) -> None:
        """dmasked = dropout(dout) (the same mask as forward's); dbias[C] += column sums of dmasked"""
        dout, dmasked, dbias = _arr("dout", dout), _out("dmasked", dmasked), _out("dbias", dbias)
        N, C = _rows("dout", dout)
        _shape("dmasked", dmasked, dout.shape)
        _shape("dbias", dbias, (C,))
        if np.shares_memory(dmasked, dout):
            raise ValueError("dmasked must not overlap dout")
        lib.loop_dropout_bias_backward(_p(dmasked), _p(dbias), _p(dout), N, C, _key(key))

    def bias_backward(self, dbias, dout) -> None:
        """dbias[C] += column sums of dout[..., C]"""
        dout, dbias = _arr("dout", dout), _out("dbias", dbias)
        N, C = _rows("dout", dout)
        _shape("dbias", dbias, (C,))
        lib.loop_bias_backward(_p(dbias), _p(dout), N, C)

    def crossentropy(
        self, logits, targets, losses, grad_scale: float = 0.0, write_grad: bool = False, vocab: int | None = None
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
        self,
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

    def sum_squares(self, x) -> float:
        x = _arr("x", x)
        return float(lib.loop_sum_squares(_p(x), x.size))

    def scale(self, x, s: float) -> None:
        x = _out("x", x)
        lib.loop_scale(_p(x), float(s), x.size)

    # -- one token at a time (the decoder's ops; the C backend's own)
    def gemv(self, y, x, W, bias=None) -> None:
        """y[N] = x[K] . W[K,N] (+ bias[N]): one row through a weight stored (in, out)"""
        W = _arr("W", W, ndim=2)
        K, N = W.shape
        x, y = _arr("x", x), _out("y", y)
        if x.size != K or y.size != N:
            raise ValueError(f"x {x.shape} and y {y.shape} need {K} and {N} elements for W {W.shape}")
        if bias is not None:
            _shape("bias", _arr("bias", bias), (N,))
        lib.loop_gemv(_p(y), _p(x), _p(W), _p(bias) if bias is not None else ffi.NULL, K, N)

    def gemv_t(self, y, x, W) -> None:
        """y[N] = W[N,K] . x[K]: one row against every row of W (the tied LM head: rows of wte)"""
        W = _arr("W", W, ndim=2)
        N, K = W.shape
        x, y = _arr("x", x), _out("y", y)
        if x.size != K or y.size != N:
            raise ValueError(f"x {x.shape} and y {y.shape} need {K} and {N} elements for W {W.shape}")
        lib.loop_gemv_t(_p(y), _p(x), _p(W), K, N)

    def attention_decode(self, out, q, kcache, vcache, n: int) -> None:
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

    def decoder(self, model: Any):
        """A KV-cache decoder for `model` (a GPT built on this backend with batch_size=1)."""
        return Decoder(model)

    # -- facts and statistics
    @property
    def threads(self) -> int:
        return runtime.get_num_threads()

    @property
    def device(self) -> str:
        gemm = f"bf16 GEMMs: {runtime.bf16_path()}" if self.precision == "bf16" else "fp32"
        return f"CPU, {runtime.isa()}, {self.threads} threads, {gemm}"

    @property
    def native_bf16(self) -> bool:
        return runtime.has_native_bf16()

    def peak_gflops(self, precision: str) -> float | None:
        return peak_gflops(precision)

    def kernel_stats(self) -> list[KernelStat]:
        return stats.kernel_stats()

    def thread_stats(self) -> list[ThreadStat]:
        return stats.thread_stats()

    def reset_stats(self) -> None:
        stats.reset_stats()
