"""Run folders as `loop runs` lists them: what each holds, read from run.json, metrics.jsonl and
the lock (nothing is written). Where a new run goes is launch.py's business."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

RUNS = Path("runs")


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
    status: str  # running | finished | stopped early | out of time | interrupted
    damaged: str = ""  # files that could not be read in full ("run.json, metrics.jsonl"); the rest is shown


def is_running(run: Path) -> bool:
    """A trainer holds the run's lock (the OS drops it when that process dies). Without POSIX file
    locks (Windows) no run can be told apart as running: none is."""
    try:
        import fcntl
    except ImportError:
        return False

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


def stopped_why(run: Path) -> str:
    """A run that stopped short of its steps: "stopped early" (patience) or "out of time" (its time
    budget) when its newest checkpoint says so, else "interrupted"."""
    from .checkpoint import latest

    newest = latest(run)
    try:
        reason = orjson.loads((newest / "state.json").read_bytes()).get("reason") if newest else None
    except (OSError, orjson.JSONDecodeError, AttributeError):
        reason = None
    return {"early stop": "stopped early", "budget": "out of time"}.get(str(reason), "interrupted")


def _number(record: dict, key: str) -> float | None:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _number_or_nan(record: dict, key: str) -> float:
    value = _number(record, key)
    return float("nan") if value is None else value


def _text(meta: dict, key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def _well_typed(record: dict) -> bool:
    """run.json's fields have the types the trainer writes."""
    texts = all(isinstance(record.get(k, ""), str) for k in ("config", "started", "precision"))
    counts = all(
        isinstance(record.get(k, 0), int) and not isinstance(record.get(k, 0), bool)
        for k in ("planned_steps", "world_size")
    )
    return texts and counts


def summarize(run: Path) -> RunSummary | None:
    """None for a folder that is not a run (no metrics.jsonl and no run.json). A damaged file
    (not JSON, not an object, fields of the wrong type) is named in `damaged`; what can be read
    is still shown."""
    meta: dict = {}
    damaged: list[str] = []
    for name in ("run.json", "config.json"):
        try:
            raw = orjson.loads((run / name).read_bytes())
        except OSError:
            continue
        except orjson.JSONDecodeError:
            raw = None
        if isinstance(raw, dict) and name == "run.json" and not _well_typed(raw):
            damaged.append(name)
        elif isinstance(raw, dict):
            meta = {**raw, **meta}
        else:
            damaged.append(name)
    records = []
    try:
        lines = (run / "metrics.jsonl").read_bytes().splitlines()
    except OSError:
        if not meta and not damaged:
            return None
        lines = []
    bad_lines = False
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(record, dict) and isinstance(record.get("step", 0), int):
            records.append(record)
        else:
            bad_lines = True
    if bad_lines:
        damaged.append("metrics.jsonl")
    steps = [r for r in records if _number(r, "loss") is not None]
    vals = [v for v in (_number(r, "val_loss") for r in records) if v is not None]
    last = steps[-1] if steps else {}
    step = max([r.get("step", 0) for r in records], default=0)
    planned_raw = meta.get("planned_steps") or meta.get("max_steps") or 0
    planned = planned_raw if isinstance(planned_raw, int) else 0
    status = "running" if is_running(run) else "finished" if planned and step >= planned else stopped_why(run)
    started = _text(meta, "started") or time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.stat().st_mtime))
    name = _text(meta, "config") or _text(meta, "name") or "?"
    return RunSummary(
        path=run,
        config=name,
        precision=_text(meta, "precision") or "fp32",
        step=step,
        planned=planned,
        loss=_number_or_nan(last, "loss"),
        best_val=min(vals) if vals else float("nan"),
        tokens_per_s=_number_or_nan(last, "tokens_per_s"),
        mfu=_number_or_nan(last, "mfu"),
        started=started.replace("T", " "),
        status=status,
        damaged=", ".join(damaged),
    )


def scan(folder: Path) -> list[RunSummary]:
    """Every run directly inside `folder` (or `folder` itself if it is one), newest first."""
    folder = Path(folder)
    candidates = [folder] if (folder / "metrics.jsonl").exists() else sorted(p for p in folder.iterdir() if p.is_dir())
    found = [s for s in (summarize(p) for p in candidates) if s is not None]
    return sorted(found, key=lambda s: s.started, reverse=True)


COLUMNS = ("run", "config", "prec", "steps", "loss", "best val", "tok/s", "MFU", "started", "status")
NUMERIC = ("steps", "loss", "best val", "tok/s", "MFU")  # right-aligned
STATUS_STYLE = {"running": "green", "finished": "", "stopped early": "", "out of time": "", "interrupted": "yellow"}


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
        r.status + (f" (damaged {r.damaged})" if r.damaged else ""),
    ]


def fmt(x: float, spec: str) -> str:
    return "—" if not math.isfinite(x) else format(x, spec)
