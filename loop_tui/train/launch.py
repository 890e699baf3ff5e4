"""Launch policy shared by the CLI, the app and its runs screen: which run folder a training uses,
the model shape it takes from an HF folder or the run it resumes, and how stop signals end it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from ..config import Config, ConfigError, from_dict
from . import checkpoint
from .runs import RUNS

# finish the step, save and exit 0; SIGHUP: the terminal or SSH session closed
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def default_run_dir(name: str) -> Path:
    return RUNS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def latest_run_dir(name: str) -> Path | None:
    runs = sorted(RUNS.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def run_dir_for(name: str, out: str | None, resume: bool) -> Path:
    """--out if given; else, resuming, the newest run of config `name`; else a new runs/<name>-<time>."""
    if out:
        return Path(out)
    if resume:
        latest = latest_run_dir(name)
        if latest is None:
            raise ConfigError(f"--resume: no run of {name} under runs/ (give --out RUN_DIR)")
        return latest
    return default_run_dir(name)


def model_shape(
    cfg: Config, run_dir: Path, init_from: str | None, resume: bool, warn: Callable[[str], None]
) -> tuple[Config, str | None]:
    """cfg with the model shape of `init_from`'s HF folder, or, resuming a fine-tune, of its run;
    and a note of what the shape changed (None or empty when nothing)."""
    from .. import hf

    if init_from:
        folder = Path(init_from)
        cfg, msg = hf.apply_shape(cfg, hf.read_config(folder), str(folder))
        return cfg.replace(init_from=str(folder.resolve())), msg
    if resume and (run_dir / "config.json").exists():
        saved = saved_config(run_dir, warn)
        if not saved.get("init_from"):
            return cfg, None
        shape = {k: saved.get(k) for k in hf.SHAPE_FIELDS}
        cfg, msg = hf.apply_shape(cfg.replace(max_length=saved["max_length"]), shape, f"the run {run_dir}")
        return cfg.replace(init_from=saved["init_from"]), msg
    return cfg, None


def saved_config(run_dir: Path, warn: Callable[[str], None]) -> dict:
    """The run's config.json; if it is damaged, the newest checkpoint's copy (with a warning), or
    {} when neither can be read (loading the checkpoint then reports what is wrong)."""
    path = run_dir / "config.json"
    try:
        saved = orjson.loads(path.read_bytes())
        if isinstance(saved, dict):
            return saved
        why = f"a JSON {type(saved).__name__}, not an object"
    except orjson.JSONDecodeError as e:
        why = f"not valid JSON: {e.args[0]}"
    except OSError as e:
        why = f"cannot read: {e.strerror or e}"
    newest = checkpoint.latest(run_dir)
    try:
        state = orjson.loads((newest / "state.json").read_bytes()) if newest else None
        fallback = state.get("config") if isinstance(state, dict) else None
    except (OSError, orjson.JSONDecodeError):
        fallback = None
    if not isinstance(fallback, dict):
        return {}
    warn(f"{path}: damaged ({why}); using the settings saved in {newest}")
    return fallback


def run_config(run_dir: Path, warn: Callable[[str], None]) -> Config:
    """The config a run trained with, shape included, to resume it as it was."""
    saved = saved_config(run_dir, warn)
    if not saved:
        raise ConfigError(f"{run_dir / 'config.json'}: cannot read, and no checkpoint has a copy")
    return from_dict(saved, str(run_dir / "config.json"))


def on_stop_signals(
    stop: Callable[[int], None],
    abort: Callable[[int], None],
    stopping: Callable[[], bool],
    hang_up: Callable[[], bool],
) -> None:
    """Two-stage stop on SIGINT, SIGTERM (e.g. forwarded by mpiexec) and SIGHUP: while the run is
    not `stopping`, a signal calls `stop` (finish the step, save, exit); after that `abort` (end
    without saving). SIGHUP first calls `hang_up`, which returns True when it has dealt with it."""

    def on_signal(signum, frame) -> None:
        if signum == signal.SIGHUP and hang_up():
            return
        (abort if stopping() else stop)(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
