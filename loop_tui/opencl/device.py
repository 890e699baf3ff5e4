"""Choose an OpenCL device: a GPU first, else a CPU (PoCL); `--device NAME` or PYOPENCL_CTX override.

Chosen in code, never by platform index: with several platforms installed, index 0 is whatever
the ICD loader lists first."""

from __future__ import annotations

import os


class NoOpenCL(RuntimeError):
    """No usable OpenCL platform or device; str() is a one-line message."""


def _cl():
    try:
        import pyopencl as cl
    except ImportError as e:  # pragma: no cover - pyopencl is a dependency
        raise NoOpenCL(f"pyopencl is not installed ({e})") from None
    return cl


def all_devices():
    cl = _cl()
    try:
        platforms = cl.get_platforms()
    except cl.Error:
        platforms = []
    out = []
    for p in platforms:
        try:
            out += [(p, d) for d in p.get_devices()]
        except cl.Error:
            continue
    return out


def choose(name: str | None = None):
    """(device, reason). name: a substring of the device or platform name."""
    cl = _cl()
    devices = all_devices()
    if not devices:
        raise NoOpenCL('no OpenCL platform found: install a driver, or `pip install "pyopencl[pocl]"` for the CPU')
    if name:
        hits = [(p, d) for p, d in devices if name.lower() in (d.name + " " + p.name).lower()]
        if not hits:
            raise NoOpenCL(f"no OpenCL device matches {name!r} (have: {', '.join(d.name.strip() for _, d in devices)})")
        return hits[0][1], f"matches --device {name!r}"
    ctx_env = os.environ.get("PYOPENCL_CTX")
    if ctx_env:
        ctx = cl.create_some_context(interactive=False)
        return ctx.devices[0], f"PYOPENCL_CTX={ctx_env}"
    gpus = [d for _, d in devices if d.type & cl.device_type.GPU]
    if gpus:
        return gpus[0], "first GPU"
    return devices[0][1], "no GPU found: using the CPU device"


def describe_platforms(name: str | None = None) -> str:
    cl = _cl()
    lines = ["OpenCL:"]
    devices = all_devices()
    if not devices:
        return 'OpenCL: no platform found (pip install "pyopencl[pocl]" gives a CPU one)'
    for p, d in devices:
        kind = cl.device_type.to_string(d.type)
        lines.append(
            f"  {p.name.strip()} | {d.name.strip()} | {kind} | {d.max_compute_units} compute units | "
            f"{d.global_mem_size / 2**30:.1f} GiB"
        )
    dev, why = choose(name)
    lines.append(f"  chosen: {dev.name.strip()} ({why})")
    return "\n".join(lines)
