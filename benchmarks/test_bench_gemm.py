"""pytest-benchmark: loop_tui's GEMM against numpy (OpenBLAS) on every shape of a training step of
each seed config, both at 1 and 2 threads (OpenBLAS limited with threadpoolctl). GFLOP/s is in
extra_info, and the end of the run prints each shape's GFLOP/s side by side with the ratio.
benchmarks/gemm_table.py measures the same ratios more carefully (alternating blocks)."""

import numpy as np
import pytest
from shapes import SEED_CONFIGS, bench_configs, step_gemms
from threadpoolctl import threadpool_limits

from loop_tui import kernels as K
from loop_tui.ops_table import cost

CASES = sorted({g for c in bench_configs(SEED_CONFIGS) for g in step_gemms(c)}, key=lambda g: (g[0], g[1:]))
GFLOPS: dict[tuple, dict[str, float]] = {}  # (case, threads) -> {"loop_tui": .., "OpenBLAS": ..}


def operands(M, N, Kd, ta, tb):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((Kd, M) if ta else (M, Kd), dtype=np.float32)
    b = rng.standard_normal((N, Kd) if tb else (Kd, N), dtype=np.float32)
    return a, b, K.empty((M, N))  # 64-byte aligned, as the model's buffers are


def record(benchmark, case, threads, impl):
    if benchmark.stats:  # None under --benchmark-disable (a quick run that only checks they work)
        benchmark.extra_info["gflops"] = g = flops(case) / benchmark.stats["median"] / 1e9
        GFLOPS.setdefault((case, threads), {})[impl] = g


def flops(case) -> float:
    _, M, N, Kd, ta, tb = case
    return cost("matmul", M=M, N=N, K=Kd, ta=ta, tb=tb, accumulate=0, bias=0)[0]


case_ids = lambda g: f"{g[0].replace(' ', '_')}-{g[1]}x{g[2]}x{g[3]}"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=case_ids)
def test_loop_gemm(benchmark, case, threads):
    name, M, N, Kd, ta, tb = case
    a, b, c = operands(M, N, Kd, ta, tb)
    K.set_num_threads(threads)
    benchmark.extra_info["flops"] = flops(case)
    try:
        benchmark.pedantic(
            K.matmul,
            args=(a, b),
            kwargs=dict(out=c, transpose_a=bool(ta), transpose_b=bool(tb)),
            rounds=5,
            warmup_rounds=1,
        )
    finally:
        K.set_num_threads(2)
    record(benchmark, case, threads, "loop_tui")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=case_ids)
def test_numpy_gemm(benchmark, case, threads):
    name, M, N, Kd, ta, tb = case
    a, b, c = operands(M, N, Kd, ta, tb)
    A, B = (a.T if ta else a), (b.T if tb else b)
    with threadpool_limits(threads, user_api="blas"):
        benchmark.pedantic(np.matmul, args=(A, B), kwargs=dict(out=c), rounds=5, warmup_rounds=1)
    record(benchmark, case, threads, "OpenBLAS")


def summary() -> list[str]:
    """The side-by-side table printed at the end of the run (benchmarks/conftest.py)."""
    rows = [(case, t, g) for (case, t), g in sorted(GFLOPS.items(), key=lambda kv: (kv[0][1], kv[0][0])) if len(g) == 2]
    if not rows:
        return []
    out = [f"{'GEMM':14s} {'M':>6s} {'N':>6s} {'K':>6s} {'thr':>3s} {'loop_tui':>9s} {'OpenBLAS':>9s} {'ratio':>6s}"]
    for (name, M, N, Kd, _, _), t, g in rows:
        out.append(
            f"{name:14s} {M:6d} {N:6d} {Kd:6d} {t:3d} {g['loop_tui']:9.1f} {g['OpenBLAS']:9.1f} "
            f"{g['loop_tui'] / g['OpenBLAS']:6.2f}"
        )
    for t in sorted({t for _, t, _ in rows}):
        r = [g["loop_tui"] / g["OpenBLAS"] for _, tt, g in rows if tt == t]
        out.append(f"{t} thread(s): {sum(x >= 0.9 for x in r)}/{len(r)} shapes >= 0.9x OpenBLAS, worst {min(r):.2f}x")
    return out
