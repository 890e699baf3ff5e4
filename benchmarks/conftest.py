import os
import sys
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_terminal_summary(terminalreporter):
    mod = sys.modules.get("test_bench_gemm")
    lines = mod.summary() if mod else []
    if lines:
        terminalreporter.section("loop_tui GEMM vs OpenBLAS, GFLOP/s (median of 5 rounds)")
        for line in lines:
            terminalreporter.write_line(line)
