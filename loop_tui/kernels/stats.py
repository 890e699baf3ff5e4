"""What the C library counts: per-kernel calls, time, FLOPs and bytes; per-thread busy time; the
kernels' own scratch buffers."""

from __future__ import annotations

from ..backend_common import KernelStat, ThreadStat
from .runtime import ffi, get_num_threads, lib


def thread_stats() -> list[ThreadStat]:
    n = 256
    tids, busy = ffi.new("int64_t[]", n), ffi.new("uint64_t[]", n)
    used = lib.loop_thread_stats(tids, busy, n)
    active = min(used, get_num_threads())  # slots of threads from an earlier, larger count stay filled
    return [ThreadStat(i, int(tids[i]), int(busy[i])) for i in range(active) if tids[i]]


def kernel_stats() -> list[KernelStat]:
    n = lib.loop_kernel_count()
    calls, ns = ffi.new("uint64_t[]", n), ffi.new("uint64_t[]", n)
    flops, nbytes = ffi.new("double[]", n), ffi.new("double[]", n)
    lib.loop_kernel_stats(calls, ns, flops, nbytes)
    return [
        KernelStat(ffi.string(lib.loop_kernel_name(i)).decode(), int(calls[i]), int(ns[i]), flops[i], nbytes[i])
        for i in range(n)
    ]


def reset_stats() -> None:
    lib.loop_stats_reset()


def scratch_grow_count() -> int:
    """Times the kernels' own scratch buffers were (re)allocated; flat after warm-up."""
    return int(lib.loop_scratch_grow_count())


def scratch_bytes() -> int:
    return int(lib.loop_scratch_bytes())
