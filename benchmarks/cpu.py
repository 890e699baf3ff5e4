"""One line naming the CPU a benchmark ran on, with the flags that decide its fast paths."""

from __future__ import annotations


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def native_bf16() -> bool:
    """Whether the CPU has bf16 instructions (AVX512-BF16 or AMX). Without them PyTorch's bf16
    matmul (oneDNN) runs a reference path some 60x slower than an fp32 one: no yardstick."""
    return bool(_cpuinfo()[1] & {"avx512_bf16", "amx_bf16"})


def cpu_line() -> str:
    import os

    model, flags = _cpuinfo()
    have = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"CPU: {model}, {os.cpu_count()} logical CPUs, flags: {' '.join(have) or 'none of avx2/avx512/bf16/amx'}"
