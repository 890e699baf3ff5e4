"""This machine's measured FLOP peak per precision, the denominator of MFU.

The GEMM micro-kernel's instruction in a register-resident loop (FMA for fp32 and the portable
bf16 path, VDPBF16PS or TDPBF16PS for native bf16; c/kernels_*.c, c/gemm_bf16.c) runs on every
kernel thread, the best of 3 runs of 0.1 s at first use; the result is cached per CPU model, instruction
set, bf16 path and thread count."""

from __future__ import annotations

from ..cache import measured
from . import runtime

TRIES, TRY_S = 3, 0.1


def cpu_model() -> str:
    """x86 Linux's model name with its family, model and stepping (VMs often say only "AMD EPYC",
    which Zen 2, 3 and 4 all share); elsewhere (aarch64 Linux has none, macOS no /proc) what platform says."""
    import platform

    fields: dict[str, str] = {}
    try:
        for line in open("/proc/cpuinfo"):
            if not line.strip():
                break  # the first processor's block
            name, _, value = line.partition(":")
            fields[name.strip()] = value.strip()
    except OSError:
        pass
    if "model name" in fields:
        ids = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
        return f"{fields['model name']} ({ids})"
    return platform.processor() or platform.machine() or "unknown"


def _measure(precision: str) -> float:
    """The best of a few short runs: a peak is what the unit does when nothing else runs, and
    another process on a core can only lower a run."""
    return max(runtime.measure_peak_gflops(TRY_S, precision) for _ in range(TRIES))


def peak_gflops(precision: str = "fp32") -> float:
    if precision == "bf16" and runtime.bf16_path() == "portable":
        precision = "fp32"  # the portable bf16 path multiplies on the same FMA loop
    kernel = runtime.gemm_kernel_name(precision)
    threads = runtime.get_num_threads()

    def key(n: int) -> str:
        return f"{cpu_model()}|{runtime.isa()}|{precision}|{kernel}|{n}"

    if threads == 1:
        return float(measured("peak.json", key(1), lambda: _measure(precision)))
    runtime.set_num_threads(1)
    try:
        one = float(measured("peak.json", key(1), lambda: _measure(precision)))
    finally:
        runtime.set_num_threads(threads)
    # n threads that multiply no faster than one were sharing their cores with other work: such a
    # figure is not kept, and n times the one-thread peak (what the cores can do at most) stands in
    value = float(measured("peak.json", key(threads), lambda: _measure(precision), keep=lambda v: v > one))
    return value if value > one else threads * one
