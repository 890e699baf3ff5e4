"""Buffers for one op of loop_tui/ops_table.py at a named shape, and a call that runs it once on the
C kernels. The op benchmarks time these calls; tests/test_op_costs.py runs them to check the C
library's counters against the table."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from loop_tui import kernels as K
from loop_tui.backend import DropoutKey


def op_call(op: str, shape: Mapping[str, int], seed: int = 0) -> Callable[[], object]:
    """Allocate and fill what op needs at shape (running any forward its backward reads), then
    return a call of op itself, which may be repeated."""
    rng = np.random.default_rng(seed)
    r = lambda *s: rng.standard_normal(s, dtype=np.float32)
    s = dict(shape)
    if op in ("matmul", "matmul_bf16"):
        M, N, Kd, ta, tb = s["M"], s["N"], s["K"], bool(s["ta"]), bool(s["tb"])
        a, b = (r(Kd, M) if ta else r(M, Kd)), (r(N, Kd) if tb else r(Kd, N))
        out, bias = K.empty((M, N)), (r(N) if s["bias"] else None)  # 64-byte aligned, as the model's buffers are
        out[:] = 0
        precision = "bf16" if op == "matmul_bf16" else "fp32"
        acc = bool(s["accumulate"])
        return lambda: K.matmul(a, b, out, ta, tb, bias=bias, accumulate=acc, precision=precision)
    if op in ("encoder_forward", "encoder_backward"):
        B, T, C, V = s["B"], s["T"], s["C"], s["V"]
        tokens = rng.integers(0, V, (B, T)).astype(np.int32)
        if op == "encoder_forward":
            wte, wpe, x = r(V, C), r(T, C), np.empty((B, T, C), np.float32)
            return lambda: K.encoder_forward(x, tokens, wte, wpe)
        dwte, dwpe, dout = np.zeros((V, C), np.float32), np.zeros((T, C), np.float32), r(B, T, C)
        return lambda: K.encoder_backward(dwte, dwpe, dout, tokens)
    if op in ("layernorm_forward", "layernorm_backward"):
        N, C = s["N"], s["C"]
        x, w, b, out = r(N, C), r(C), r(C), np.empty((N, C), np.float32)
        mean, rstd = np.empty(N, np.float32), np.empty(N, np.float32)
        fwd = lambda: K.layernorm_forward(out, mean, rstd, x, w, b)
        if op == "layernorm_forward":
            return fwd
        fwd()
        dx, dw, db, dout = np.zeros_like(x), np.zeros_like(w), np.zeros_like(b), r(N, C)
        return lambda: K.layernorm_backward(dx, dw, db, dout, x, w, mean, rstd)
    if op == "bias_gelu_forward":
        pre, bias, out = r(s["N"], s["C"]), r(s["C"]), np.empty((s["N"], s["C"]), np.float32)
        return lambda: K.bias_gelu_forward(pre, out, bias)
    if op == "gelu_backward":
        pre, dout, dinp = r(s["n"]), r(s["n"]), np.empty(s["n"], np.float32)
        return lambda: K.gelu_backward(dinp, pre, dout)
    if op in ("attention_forward", "attention_backward"):
        B, T, C, NH = s["B"], s["T"], s["C"], s["NH"]
        qkv, out, lse = r(B, T, 3 * C), np.empty((B, T, C), np.float32), np.empty((B, NH, T), np.float32)
        fwd = lambda: K.attention_forward(out, lse, qkv, NH)
        if op == "attention_forward":
            return fwd
        fwd()
        dqkv, dout = np.empty_like(qkv), r(B, T, C)
        return lambda: K.attention_backward(dqkv, dout, qkv, out, lse, NH)
    if op == "residual_forward":
        a, b, out = r(s["n"]), r(s["n"]), np.empty(s["n"], np.float32)
        return lambda: K.residual_forward(out, a, b)
    if op == "bias_backward":
        dbias, dout = np.zeros(s["C"], np.float32), r(s["N"], s["C"])
        return lambda: K.bias_backward(dbias, dout)
    if op in ("dropout", "residual_dropout"):
        key, a, b, out = DropoutKey(0.1, 1337, 0, 1), r(s["n"]), r(s["n"]), np.empty(s["n"], np.float32)
        if op == "dropout":
            return lambda: K.dropout(out, b, key)
        return lambda: K.residual_dropout(out, a, b, key)
    if op == "dropout_bias_backward":
        key, dout = DropoutKey(0.1, 1337, 0, 1), r(s["N"], s["C"])
        dmasked, dbias = np.empty_like(dout), np.zeros(s["C"], np.float32)
        return lambda: K.dropout_bias_backward(dmasked, dbias, dout, key)
    if op == "crossentropy":
        N, V, Vp = s["N"], s["V"], s["Vp"]
        logits, targets, losses = r(N, Vp), rng.integers(0, V, N).astype(np.int32), np.empty(N, np.float32)
        return lambda: K.crossentropy(logits, targets, losses, 1.0 / N, bool(s["write_grad"]), vocab=V)
    if op == "adamw":
        p, g, m, v = r(s["n"]), r(s["n"]), np.zeros(s["n"], np.float32), np.zeros(s["n"], np.float32)
        return lambda: K.adamw(p, g, m, v, 1e-4, 0.9, 0.95, 1e-8, 0.1, 1)
    if op == "sum_squares":
        x = r(s["n"])
        return lambda: K.sum_squares(x)
    if op == "scale":
        x = r(s["n"])
        return lambda: K.scale(x, 1.0)
    if op == "gemv":
        x, W, bias, y = r(s["K"]), r(s["K"], s["N"]), r(s["N"]), np.empty(s["N"], np.float32)
        return lambda: K.gemv(y, x, W, bias)
    if op == "gemv_t":
        x, W, y = r(s["K"]), r(s["N"], s["K"]), np.empty(s["N"], np.float32)
        return lambda: K.gemv_t(y, x, W)
    if op == "attention_decode":
        NH, hs, cap = s["NH"], s["hs"], s["cap"]
        q, kc, vc, out = r(NH * hs), r(NH, cap, hs), r(NH, cap, hs), np.empty(NH * hs, np.float32)
        return lambda: K.attention_decode(out, q, kc, vc, s["n"])
    raise KeyError(f"no call for op {op!r}: add it here when adding it to loop_tui/ops_table.py")
