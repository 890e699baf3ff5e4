"""pytest-benchmark: each fused op at the wiki_cache_optimized step's sizes; GB/s in extra_info
(bytes = the least the op must read and write)."""

import numpy as np
import pytest

from loop_tui import kernels as K
from loop_tui.config import load_config

cfg = load_config("wiki_cache_optimized")
B, T, C, F, V, NH = cfg.batch_size, cfg.max_length, cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.num_heads
N = B * T
rng = np.random.default_rng(0)
r = lambda *s: rng.standard_normal(s, dtype=np.float32)


def make_cases():
    x, w, b = r(N, C), r(C), r(C)
    out, mean, rstd = np.empty_like(x), np.empty(N, np.float32), np.empty(N, np.float32)
    K.layernorm_forward(out, mean, rstd, x, w, b)
    pre, hid = r(N, F), np.empty((N, F), np.float32)
    qkv, att, atty = r(B, T, 3 * C), np.empty((B, NH, T, T), np.float32), np.empty((B, T, C), np.float32)
    K.attention_forward(atty, att, qkv, NH)
    logits, tg, losses = r(1024, V), rng.integers(0, V, 1024).astype(np.int32), np.empty(1024, np.float32)
    P = 13_000_000
    p, g, m, v = r(P), r(P), np.zeros(P, np.float32), np.zeros(P, np.float32)
    return {
        "layernorm_fwd": (lambda: K.layernorm_forward(out, mean, rstd, x, w, b), 4 * 2 * N * C),
        "layernorm_bwd": (lambda: K.layernorm_backward(out, w.copy(), b.copy(), x, x, w, mean, rstd), 4 * 4 * N * C),
        "bias_gelu_fwd": (lambda: K.bias_gelu_forward(pre, hid, None), 4 * 3 * N * F),
        "gelu_bwd": (lambda: K.gelu_backward(hid, pre, hid), 4 * 3 * N * F),
        "attention_fwd": (lambda: K.attention_forward(atty, att, qkv, NH), 4 * (4 * N * C + B * NH * T * T)),
        "attention_bwd": (
            lambda: K.attention_backward(qkv.copy(), atty, qkv, att, NH),
            4 * (7 * N * C + B * NH * T * T),
        ),
        "crossentropy_1024rows": (lambda: K.crossentropy(logits, tg, losses, 1.0, True), 4 * 2 * 1024 * V),
        "residual_fwd": (lambda: K.residual_forward(out, x, x), 4 * 3 * N * C),
        "adamw_13M": (lambda: K.adamw(p, g, m, v, 1e-4, 0.9, 0.95, 1e-8, 0.1, 1), 4 * 7 * P),
    }


CASES = make_cases()


@pytest.mark.parametrize("op", list(CASES))
def test_fused_op(benchmark, op):
    fn, nbytes = CASES[op]
    benchmark.pedantic(fn, rounds=7, warmup_rounds=1)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["GB/s"] = nbytes / benchmark.stats["median"] / 1e9
