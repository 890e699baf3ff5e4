"""One line naming the CPU a benchmark ran on, with the flags that decide its fast paths."""

from __future__ import annotations


def cpu_line() -> str:
    model, flags = "unknown CPU", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    have = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    import os

    return f"CPU: {model}, {os.cpu_count()} logical CPUs, flags: {' '.join(have) or 'none of avx2/avx512/bf16/amx'}"
