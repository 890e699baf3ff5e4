"""The GEMM shapes a training step of each seed config runs (M, N, K, transpose_a, transpose_b)."""

from __future__ import annotations

from loop_tui.config import load_config
from loop_tui.model.layout import head_chunk_rows

SEED_CONFIGS = ("wiki_gpu_optimized", "wiki_cache_optimized", "wiki_performance_tuned")


def step_gemms(name: str) -> list[tuple[str, int, int, int, int, int]]:
    c = load_config(name)
    d, f, V, N = c.d_model, c.d_ff, c.vocab_size, c.batch_size * c.max_length
    R = head_chunk_rows(c, N)
    return [
        ("qkv NN", N, 3 * d, d, 0, 0),
        ("fc NN", N, f, d, 0, 0),
        ("fcproj NN", N, d, f, 0, 0),
        ("head NT", R, V, d, 0, 1),
        ("dW qkv TN", d, 3 * d, N, 1, 0),
        ("dW fc TN", d, f, N, 1, 0),
        ("dW fcproj TN", f, d, N, 1, 0),
        ("dwte TN", V, d, R, 1, 0),
        ("dx qkv NT", N, d, 3 * d, 0, 1),
        ("dx fc NT", N, d, f, 0, 1),
        ("dx fcproj NT", N, f, d, 0, 1),
        ("dx head NN", R, d, V, 0, 0),
    ]
