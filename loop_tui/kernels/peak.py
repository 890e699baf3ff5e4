"""This machine's measured FLOP peak per precision, the denominator of MFU.

The GEMM micro-kernel's instruction in a register-resident loop (FMA for fp32 and the portable
bf16 path, VDPBF16PS or TDPBF16PS for native bf16; c/kernels_*.c, c/gemm_bf16.c) runs on every
kernel thread for about 0.3 s at first use; the result is cached per CPU model, instruction set,
bf16 path and thread count."""

from __future__ import annotations

from ..cache import measured
from . import runtime


def _cpu_model() -> str:
    """x86 Linux's model name; elsewhere (aarch64 Linux has none, macOS no /proc) what platform says."""
    import platform

    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def peak_gflops(precision: str = "fp32") -> float:
    if precision == "bf16" and runtime.bf16_path() == "portable":
        precision = "fp32"  # the portable bf16 path multiplies on the same FMA loop
    kernel = runtime.gemm_kernel_name(precision)
    key = f"{_cpu_model()}|{runtime.isa()}|{precision}|{kernel}|{runtime.get_num_threads()}"
    return float(measured("peak.json", key, lambda: runtime.measure_peak_gflops(0.3, precision)))
