"""This machine's measured FLOP peak, the denominator of MFU.

A register-resident FMA loop (c/kernels_*.c: fma_peak_*) runs on every kernel thread for about
0.3 s at first use; the result is cached per CPU model, instruction set and thread count."""
from __future__ import annotations

from .. import kernels
from ..cache import measured


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def peak_gflops() -> float:
    key = f"{_cpu_model()}|{kernels.isa()}|{kernels.get_num_threads()}"
    return float(measured("peak.json", key, lambda: kernels.measure_peak_gflops(0.3)))
