"""What this machine is: CPU caches (from sysfs, never glibc's sysconf) and core count.

glibc's sysconf(_SC_LEVEL3_CACHE_SIZE) reports a 320 MiB L3 on the development VM whose sysfs
says otherwise, so the cache hierarchy is read from /sys/devices/system/cpu/cpu*/cache/index*.
Where there is no sysfs (macOS) sysctlbyname's hw.l1dcachesize, hw.l2cachesize and hw.l3cachesize
stand in; a level neither has gets a safe default, and `loop info` says which.
An override string like "L1=48K,L2=512K,L3=8M" replaces levels for what-if analysis.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SYSFS_CPU = Path("/sys/devices/system/cpu")
# Used only when sysfs has no cache information at all; said so wherever it is shown.
FALLBACK = {"L1d": 32 * 1024, "L2": 1024 * 1024, "L3": 8 * 1024 * 1024}


@dataclass(frozen=True)
class CacheLevel:
    name: str  # "L1d", "L2", "L3"
    level: int
    type: str  # "Data", "Unified"
    size: int  # bytes, one instance
    line_size: int
    shared_cpu_list: str
    instances: int  # how many copies exist across the machine

    @property
    def total(self) -> int:
        return self.size * self.instances


@dataclass(frozen=True)
class Caches:
    levels: tuple[CacheLevel, ...]
    source: str  # "sysfs", "fallback", "override", "sysfs+override"
    notes: tuple[str, ...] = field(default=())

    def get(self, name: str) -> CacheLevel | None:
        return next((lv for lv in self.levels if lv.name == name), None)

    def size(self, name: str) -> int:
        lv = self.get(name)
        return lv.size if lv else FALLBACK[name]


def parse_size(text: str) -> int:
    """'48K' -> 49152, '2048K', '32M', '1G', '512' (bytes)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"bad size {text!r} (expected e.g. 48K, 2M, 1G)")
    return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[m.group(2).upper()]


def _cpu_count_in(cpu_list: str) -> int:
    count = 0
    for part in cpu_list.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        count += int(hi) - int(lo) + 1 if hi else 1
    return count


def read_sysfs_caches(root: Path = SYSFS_CPU) -> list[CacheLevel]:
    """Data and unified caches of the machine, one entry per level, from a sysfs tree.

    Reads every cpu's index* directories; a level's instance count is the number of distinct
    shared_cpu_list values. Missing or unreadable files are skipped, never fatal."""
    seen: dict[tuple[int, str], dict] = {}
    for cpu_dir in sorted(root.glob("cpu[0-9]*")):
        for idx in sorted((cpu_dir / "cache").glob("index[0-9]*")):
            try:
                level = int((idx / "level").read_text().strip())
                ctype = (idx / "type").read_text().strip()
                size = parse_size((idx / "size").read_text().strip())
            except (OSError, ValueError):
                continue
            if ctype not in ("Data", "Unified"):
                continue

            def opt(name: str, default: str, idx: Path = idx) -> str:
                try:
                    return (idx / name).read_text().strip()
                except OSError:
                    return default

            shared = opt("shared_cpu_list", cpu_dir.name[3:])
            line = int(opt("coherency_line_size", "64") or 64)
            entry = seen.setdefault((level, ctype), {"size": size, "line": line, "shared": set()})
            entry["shared"].add(shared)
    out = []
    for (level, ctype), e in sorted(seen.items()):
        name = "L1d" if level == 1 else f"L{level}"
        first = sorted(e["shared"])[0]
        out.append(CacheLevel(name, level, ctype, e["size"], e["line"], first, len(e["shared"])))
    return out


SYSCTL_CACHES = {"L1d": "hw.l1dcachesize", "L2": "hw.l2cachesize", "L3": "hw.l3cachesize"}


def sysctl_int(name: str) -> int | None:
    """macOS's sysctlbyname(name) as an integer; None on other systems or for a key it lacks."""
    if sys.platform != "darwin":
        return None
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    value, size = ctypes.c_int64(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_int64))
    if libc.sysctlbyname(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
        return None
    return int(value.value) if value.value > 0 else None


def read_sysctl_caches(query: Callable[[str], int | None] = sysctl_int) -> list[CacheLevel]:
    """The data and unified caches sysctl knows (macOS), one instance each (sysctl gives no sharing)."""
    out = []
    for name, key in SYSCTL_CACHES.items():
        size = query(key)
        if size:
            level = int(name[1])
            out.append(CacheLevel(name, level, "Data" if level == 1 else "Unified", size, 64, "?", 1))
    return out


def parse_override(text: str) -> dict[str, int]:
    """'L1=48K,L2=512K,L3=8M' -> {'L1d': 49152, 'L2': 524288, 'L3': 8388608}"""
    out = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().upper()
        key = {"L1": "L1d", "L1D": "L1d"}.get(key, key)
        if not sep or key not in ("L1d", "L2", "L3"):
            raise ValueError(f"bad cache override {item!r} (expected L1=48K,L2=2M,L3=32M)")
        out[key] = parse_size(value)
    return out


def detect_caches(
    override: str | None = None, root: Path = SYSFS_CPU, sysctl: Callable[[str], int | None] = sysctl_int
) -> Caches:
    levels, source = read_sysfs_caches(root), "sysfs"
    if not levels and (from_sysctl := read_sysctl_caches(sysctl)):
        levels, source = from_sysctl, "sysctl"
    notes = []
    by_name = {lv.name: lv for lv in levels}
    for name, size in FALLBACK.items():
        if name not in by_name:
            by_name[name] = CacheLevel(name, int(name[1]), "Unified" if name != "L1d" else "Data", size, 64, "?", 1)
            notes.append(f"{name} not in {source}: assumed {size // 1024} KiB")
    if notes:
        source = "fallback" if not levels else source + "+fallback"
    if override:
        for name, size in parse_override(override).items():
            old = by_name[name]
            by_name[name] = CacheLevel(
                name, old.level, old.type, size, old.line_size, old.shared_cpu_list, old.instances
            )
        source = "override" if not levels else source + "+override"
    ordered = tuple(by_name[n] for n in ("L1d", "L2", "L3"))
    return Caches(ordered, source, tuple(notes))


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
