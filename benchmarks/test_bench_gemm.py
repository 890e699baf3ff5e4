"""pytest-benchmark: loop_tui's GEMM against numpy (OpenBLAS) on every shape of a training step of
each seed config, with the kernels' thread count at 1 and 2 (numpy uses its own pool). GFLOP/s
is in extra_info; benchmarks/gemm_table.py prints the side-by-side ratios."""
import numpy as np
import pytest

from loop_tui import kernels as K
from shapes import SEED_CONFIGS, step_gemms

CASES = sorted({g for c in SEED_CONFIGS for g in step_gemms(c)}, key=lambda g: (g[0], g[1:]))


def operands(M, N, Kd, ta, tb):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((Kd, M) if ta else (M, Kd), dtype=np.float32)
    b = rng.standard_normal((N, Kd) if tb else (Kd, N), dtype=np.float32)
    return a, b, K.empty((M, N))  # 64-byte aligned, as the model's buffers are


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda g: f"{g[0].replace(' ', '_')}-{g[1]}x{g[2]}x{g[3]}")
def test_loop_gemm(benchmark, case, threads):
    name, M, N, Kd, ta, tb = case
    a, b, c = operands(M, N, Kd, ta, tb)
    K.set_num_threads(threads)
    benchmark.extra_info["flops"] = 2 * M * N * Kd
    benchmark.pedantic(K.matmul, args=(a, b), kwargs=dict(out=c, transpose_a=bool(ta), transpose_b=bool(tb)),
                       rounds=5, warmup_rounds=1)
    benchmark.extra_info["gflops"] = 2 * M * N * Kd / benchmark.stats["median"] / 1e9
    K.set_num_threads(2)


@pytest.mark.parametrize("case", CASES, ids=lambda g: f"{g[0].replace(' ', '_')}-{g[1]}x{g[2]}x{g[3]}")
def test_numpy_gemm(benchmark, case):
    name, M, N, Kd, ta, tb = case
    a, b, c = operands(M, N, Kd, ta, tb)
    A, B = (a.T if ta else a), (b.T if tb else b)
    benchmark.pedantic(np.matmul, args=(A, B), kwargs=dict(out=c), rounds=5, warmup_rounds=1)
    benchmark.extra_info["gflops"] = 2 * M * N * Kd / benchmark.stats["median"] / 1e9
