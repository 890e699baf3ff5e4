"""The C library (c/, built into loop_tui._kernels by build_kernels.py) and its process-wide
settings: instruction set, bf16 GEMM path, thread count, cache sizes and GEMM blocking.

Importing this module loads the library and sets it up for this CPU and the environment, the
only work done at import in loop_tui.kernels: LOOP_ISA=avx512|avx2|neon|generic forces an
instruction set (avx2 and avx512 exist in an x86-64 build, neon in an aarch64 one, generic, the
portable C, everywhere); LOOP_BF16=amx|avx512bf16|portable (or emu-amx|emu-avx512bf16, the native paths emulated in
C, for tests) forces the bf16 GEMM path; LOOP_THREADS=n sets the thread count (default: all
usable cores). The library's own defaults (generic code on one thread) would run the slowest path."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import machine

_PKG = Path(__file__).resolve().parent.parent


def _check_fresh() -> None:
    """In a source checkout, refuse a module older than the C it was built from."""
    src = _PKG.parent / "c"
    mods = list(_PKG.glob("_kernels*.so"))
    if not src.is_dir() or not mods:
        return
    built = max(m.stat().st_mtime for m in mods)
    newest = max(p.stat().st_mtime for p in src.iterdir() if p.suffix in (".c", ".h", ".def"))
    if newest > built + 1e-6:
        raise ImportError("loop_tui C kernels are older than c/: run `make build` (or python build_kernels.py)")


try:
    _check_fresh()
    from .._kernels import ffi, lib
except ModuleNotFoundError as e:  # pragma: no cover - message for a checkout never built
    raise ImportError("loop_tui C kernels are not built: run `make build` (or pip install -e .)") from e

ISA_NAMES = {0: "generic", 1: "avx2", 2: "avx512", 3: "neon"}  # runtime.h's LOOP_ISA_* ids
_ISA_IDS = {v: k for k, v in ISA_NAMES.items()}
BF16_PATHS = {0: "portable", 1: "avx512bf16", 2: "amx", 3: "emu-avx512bf16", 4: "emu-amx"}
_BF16_IDS = {v: k for k, v in BF16_PATHS.items()}
NATIVE_BF16 = ("avx512bf16", "amx")
PRECISIONS = ("fp32", "bf16")
_PRECISION_IDS = {"fp32": 0, "bf16": 1}


def isa() -> str:
    """The instruction set the kernels run now."""
    return ISA_NAMES[lib.loop_isa_get()]


def best_isa() -> str:
    return ISA_NAMES[lib.loop_isa_best()]


def available_isas() -> list[str]:
    """The instruction sets this build and CPU can run, generic first and the best last."""
    return [name for i, name in ISA_NAMES.items() if lib.loop_isa_supported(i)]


def set_isa(name: str) -> None:
    if name not in _ISA_IDS:
        raise ValueError(f"unknown ISA {name!r}: choose from {', '.join(_ISA_IDS)}")
    if lib.loop_isa_set(_ISA_IDS[name]) != 0:
        raise ValueError(f"this CPU cannot run {name} (best: {best_isa()})")


def bf16_path() -> str:
    """The path bf16 GEMMs take now: amx, avx512bf16 (native), portable (bf16-rounded inputs on
    fp32 FMAs), or an emulation. Native paths need the avx512 ISA active."""
    return BF16_PATHS[lib.loop_bf16_path_get()]


def best_bf16_path() -> str:
    return BF16_PATHS[lib.loop_bf16_path_best()]


def available_bf16_paths() -> list[str]:
    return [name for i, name in BF16_PATHS.items() if lib.loop_bf16_path_supported(i)]


def has_native_bf16() -> bool:
    """True when bf16 GEMMs run on bf16 hardware (AVX512-BF16 or AMX) with the current ISA."""
    return bf16_path() in NATIVE_BF16


def set_bf16_path(name: str) -> None:
    if name not in _BF16_IDS:
        raise ValueError(f"unknown bf16 path {name!r}: choose from {', '.join(_BF16_IDS)}")
    if lib.loop_bf16_path_set(_BF16_IDS[name]) != 0:
        raise ValueError(f"this CPU cannot run the {name} bf16 path (available: {', '.join(available_bf16_paths())})")


def precision_id(precision: str) -> int:
    """The library's id of a GEMM precision, or ValueError naming the choices."""
    if precision not in _PRECISION_IDS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return _PRECISION_IDS[precision]


def gemm_kernel_name(precision: str = "fp32") -> str:
    """The micro-kernel GEMMs of this precision use now."""
    return ffi.string(lib.loop_gemm_kernel_name(precision_id(precision))).decode()


def set_num_threads(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"thread count must be a positive integer, got {n!r}")
    lib.loop_set_num_threads(int(n))


def get_num_threads() -> int:
    return lib.loop_get_num_threads()


def configure_caches(caches: machine.Caches) -> None:
    lib.loop_gemm_set_cache_sizes(caches.size("L1d"), caches.size("L2"), caches.size("L3"))


@dataclass(frozen=True)
class Blocking:
    mr: int
    nr: int
    mc: int
    kc: int
    nc: int
    short_m_rows: int  # M up to this: packed A stays in L2, threads split N (the d x 4d weight gradients)
    stream_min_mib: int  # a write-once, 64-byte aligned C over this many MiB bypasses the cache (0: never)


def gemm_blocking(precision: str = "fp32") -> Blocking:
    out = ffi.new("int[7]")
    lib.loop_gemm_get_blocking(precision_id(precision), out)
    return Blocking(*out)


@dataclass(frozen=True)
class GemmKernel:
    """What c/gemm.c's blocking() derives the block sizes from, for the micro-kernel in use."""

    mr: int
    nr: int
    kpack: int  # packed K is a multiple of this
    elem_bytes: int  # bytes per packed element
    b_panel_in_l1: bool  # KC keeps a B micro-panel in half of L1d (else 1.5x L1d)
    stream_min_mib: int  # as in Blocking


def gemm_kernel(precision: str = "fp32") -> GemmKernel:
    out = ffi.new("int[6]")
    lib.loop_gemm_kernel_facts(precision_id(precision), out)
    return GemmKernel(out[0], out[1], out[2], out[3], bool(out[4]), out[5])


def set_gemm_blocking(mc: int = 0, kc: int = 0, nc: int = 0) -> None:
    """Fix GEMM block sizes (0 = derive from the caches), for tuning and tests."""
    lib.loop_gemm_set_blocking(int(mc), int(kc), int(nc))


def set_gemm_streaming(on: bool = True, min_mib: int = 32) -> None:
    """Non-temporal stores for a write-once, 64-byte aligned C over min_mib MiB (on, 32 MiB by
    default); off for A/B timing."""
    lib.loop_gemm_set_stream_min_mib(int(min_mib) if on else 0)


def measure_peak_gflops(seconds: float = 0.3, precision: str = "fp32") -> float:
    """Peak GFLOP/s of this machine for a precision on the active ISA, bf16 path and thread
    count: the GEMM micro-kernel's instruction (FMA, VDPBF16PS or TDPBF16PS) in a loop on registers."""
    return float(lib.loop_measure_peak_gflops(precision_id(precision), float(seconds)))


def _set_up_from_environment() -> None:
    forced = os.environ.get("LOOP_ISA", "").strip().lower()
    set_isa(forced if forced else best_isa())
    forced_bf16 = os.environ.get("LOOP_BF16", "").strip().lower()
    set_bf16_path(forced_bf16 if forced_bf16 else best_bf16_path())
    threads = os.environ.get("LOOP_THREADS", "").strip()
    set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else machine.cpu_count())
    configure_caches(machine.detect_caches())


_set_up_from_environment()
