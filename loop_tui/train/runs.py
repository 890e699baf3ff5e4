"""Run folders: where a run goes by default, which one --resume means without --out, and what
`loop runs` lists about each (read from run.json, metrics.jsonl and the lock; nothing is written)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

RUNS = Path("runs")


def default_run_dir(name: str) -> Path:
    return RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_run_dir(name: str) -> Path | None:
    runs = sorted(RUNS.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


@dataclass
class RunSummary:
    path: Path
    config: str
    precision: str
    step: int  # steps done (the last logged one)
    planned: int  # steps the last session set out to reach
    loss: float  # last logged training loss
    best_val: float  # lowest validation loss
    tokens_per_s: float  # last logged moving average
    mfu: float
    started: str
    status: str  # running | finished | interrupted


def is_running(run: Path) -> bool:
    """A trainer holds the run's lock (the OS drops it when that process dies)."""
    import fcntl

    lock = run / ".lock"
    if not lock.exists():
        return False
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def summarize(run: Path) -> RunSummary | None:
    """None for a folder that is not a run (no metrics.jsonl and no run.json)."""
    meta: dict = {}
    for name in ("run.json", "config.json"):
        try:
            meta = {**orjson.loads((run / name).read_bytes()), **meta}
        except (OSError, orjson.JSONDecodeError):
            pass
    records = []
    try:
        for line in (run / "metrics.jsonl").read_bytes().splitlines():
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # a line cut short by a crash
    except OSError:
        if not meta:
            return None
    steps = [r for r in records if "loss" in r]
    vals = [r["val_loss"] for r in records if "val_loss" in r]
    last = steps[-1] if steps else {}
    step = max([r.get("step", 0) for r in records], default=0)
    planned = int(meta.get("planned_steps") or meta.get("max_steps") or 0)
    status = "running" if is_running(run) else "finished" if planned and step >= planned else "interrupted"
    started = meta.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.stat().st_mtime))
    nan = float("nan")
    name = str(meta["config"] if isinstance(meta.get("config"), str) else meta.get("name") or "?")
    return RunSummary(
        path=run,
        config=name,
        precision=meta.get("precision", "fp32"),
        step=step,
        planned=planned,
        loss=last.get("loss", nan),
        best_val=min(vals) if vals else nan,
        tokens_per_s=last.get("tokens_per_s", nan),
        mfu=last.get("mfu", nan),
        started=started.replace("T", " "),
        status=status,
    )


def scan(folder: Path) -> list[RunSummary]:
    """Every run directly inside `folder` (or `folder` itself if it is one), newest first."""
    folder = Path(folder)
    candidates = [folder] if (folder / "metrics.jsonl").exists() else sorted(p for p in folder.iterdir() if p.is_dir())
    found = [s for s in (summarize(p) for p in candidates) if s is not None]
    return sorted(found, key=lambda s: s.started, reverse=True)


COLUMNS = ("run", "config", "prec", "steps", "loss", "best val", "tok/s", "MFU", "started", "status")
NUMERIC = ("steps", "loss", "best val", "tok/s", "MFU")  # right-aligned
STATUS_STYLE = {"running": "green", "finished": "", "interrupted": "yellow"}


def cells(r: RunSummary) -> list[str]:
    """One run as `loop runs` shows it, column by column (COLUMNS); the CLI table and the app's
    runs screen both use it."""
    return [
        r.path.name,
        r.config,
        r.precision,
        f"{r.step}/{r.planned or '?'}",
        fmt(r.loss, ".4f"),
        fmt(r.best_val, ".4f"),
        fmt(r.tokens_per_s, ",.0f"),
        fmt(100 * r.mfu, ".1f") + ("%" if math.isfinite(r.mfu) else ""),
        r.started,
        r.status,
    ]


def fmt(x: float, spec: str) -> str:
    return "—" if not math.isfinite(x) else format(x, spec)
