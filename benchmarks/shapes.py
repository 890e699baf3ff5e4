"""The shapes a training step of each seed config runs, from the op table (loop_tui/ops_table.py)."""

from __future__ import annotations

import os

from loop_tui.config import load_config
from loop_tui.model.layout import head_chunk_rows, parameter_count
from loop_tui.ops_table import OPS, StepDims

SEED_CONFIGS = ("wiki_gpu_optimized", "wiki_cache_optimized", "wiki_performance_tuned")


def bench_configs(default: tuple[str, ...]) -> tuple[str, ...]:
    """The configs the pytest benchmarks take their shapes from: LOOP_BENCH_CONFIGS (comma-separated;
    tests set it to "smoke" to run every benchmark once, small) or the default."""
    names = [n.strip() for n in os.environ.get("LOOP_BENCH_CONFIGS", "").split(",") if n.strip()]
    return tuple(names) or default


def step_dims(name: str) -> StepDims:
    c = load_config(name)
    N = c.batch_size * c.max_length
    return StepDims(
        B=c.batch_size,
        T=c.max_length,
        C=c.d_model,
        F=c.d_ff,
        V=c.vocab_size,
        NH=c.num_heads,
        head_rows=head_chunk_rows(c, N),
        params=parameter_count(c),
    )


def step_gemms(name: str) -> list[tuple[str, int, int, int, int, int]]:
    """(name, M, N, K, transpose_a, transpose_b) of every GEMM of a training step of config `name`."""
    return [(g, s["M"], s["N"], s["K"], s["ta"], s["tb"]) for g, s in OPS["matmul"].benches(step_dims(name)).items()]
