"""pytest-benchmark: every op of loop_tui/ops_table.py but the GEMMs (test_bench_gemm.py) at the
benchmark shapes of a wiki_cache_optimized training step; GB/s and GFLOP/s in extra_info, from the
table's counts (bytes = the least the op must read and write; most of these ops are memory-bound,
so GB/s is the figure to read against the machine's bandwidth)."""

import pytest
from op_calls import op_call
from shapes import bench_configs, step_dims

from loop_tui.ops_table import OPS

CASES = [
    pytest.param(cfg, op, case, id=f"{cfg}-{op}-{case.replace(' ', '_')}")
    for cfg in bench_configs(("wiki_cache_optimized",))
    for op in OPS
    if not op.startswith("matmul")
    for case in OPS[op].benches(step_dims(cfg))
]


@pytest.mark.parametrize("cfg,op,case", CASES)
def test_op(benchmark, cfg, op, case):
    shape = OPS[op].benches(step_dims(cfg))[case]
    flops, nbytes = OPS[op].cost(shape)
    benchmark.pedantic(op_call(op, shape), rounds=7, warmup_rounds=1)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["GB/s"] = nbytes / benchmark.stats["median"] / 1e9
        benchmark.extra_info["GFLOP/s"] = flops / benchmark.stats["median"] / 1e9
