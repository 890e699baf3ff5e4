"""Run folders: where a run goes by default, and which one --resume means without --out."""

from __future__ import annotations

import time
from pathlib import Path

RUNS = Path("runs")


def default_run_dir(name: str) -> Path:
    return RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_run_dir(name: str) -> Path | None:
    runs = sorted(RUNS.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None
