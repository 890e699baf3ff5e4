"""The C library counts each op's FLOPs and bytes itself (c/ops.def's KSTAT rows, c/gemm.c's KSTAT_END); these
tests hold those counters to the one table of costs, loop_tui/ops_table.py, on every op."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loop_tui import kernels as K
from loop_tui.ops_table import OPS, StepDims

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from op_calls import op_call

CASES = [pytest.param(op, name, id=f"{op}-{name}") for op in OPS for name in OPS[op].tests]


@pytest.mark.parametrize("op,case", CASES)
def test_c_counters_match_the_table(op, case):
    shape = OPS[op].tests[case]
    call = op_call(op, shape)
    K.reset_stats()
    call()
    call()
    stats = {s.name: s for s in K.kernel_stats()}
    row = stats[OPS[op].stat]
    flops, nbytes = OPS[op].cost(shape)
    assert row.calls == 2
    assert row.flops == pytest.approx(2 * flops, rel=1e-12)
    assert row.bytes == pytest.approx(2 * nbytes, rel=1e-12)
    others = [s.name for s in stats.values() if s.calls and s.name != OPS[op].stat]
    assert not others, f"{op} also counted under {others}"


def test_every_c_counter_has_an_op_in_the_table():
    assert {s.name for s in K.kernel_stats()} == {op.stat for op in OPS.values()}


def test_every_op_has_test_and_benchmark_shapes():
    dims = StepDims(B=2, T=8, C=16, F=64, V=100, NH=2, head_rows=16, params=1000)
    for op in OPS.values():
        assert op.tests, op.name
        for shape in [*op.tests.values(), *op.benches(dims).values()]:
            flops, nbytes = op.cost(shape)
            assert flops > 0 and nbytes > 0, (op.name, shape)
