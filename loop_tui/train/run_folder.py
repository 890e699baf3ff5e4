"""The run folder on disk: its lock, checkpoints with the tokenizer and config beside them,
config_history.jsonl, metrics.jsonl and run.json. Only rank 0 touches it."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson

from ..cache import atomic_write_bytes
from ..config import Config
from ..errors import RunLocked, StorageError
from . import checkpoint

if TYPE_CHECKING:
    from .tensorboard import TensorBoardWriter


def lock(run_dir: Path) -> IO[str]:
    """An exclusive flock on RUN_DIR/.lock, held while the returned file stays open (the OS drops
    it when the process dies, so a killed run never leaves a stale lock). Where the OS has no POSIX
    file locks (Windows) it says so in one line and trains unlocked."""
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
        print("loop: note: no file locks on this OS: nothing stops a second trainer here", file=sys.stderr)

    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / ".lock", "a+")
    except OSError as e:
        raise StorageError(f"{e.filename or run_dir}: cannot use as run folder: {e.strerror or e}") from None
    try:
        if fcntl is not None:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise RunLocked(
            f"{run_dir}: in use by another trainer (PID {pid}); wait for it to finish or give another --out"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def check_not_deleted(run_dir: Path, lock_file: IO[str] | None, step: int) -> None:
    """The run folder is still the one this trainer locked: deleted under a running trainer
    (rm -rf), it must not be recreated in silence with the metrics lost."""
    if lock_file is not None and os.fstat(lock_file.fileno()).st_nlink == 0:
        raise StorageError(
            f"{run_dir}: the run folder was deleted while training; stopped at step {step} "
            "without saving (nothing of this run is left to save into)"
        )


def clear_unfinished_start(run_dir: Path, warn: Callable[[str], None]) -> None:
    """A new run in a folder that has no checkpoint starts its records afresh: an earlier run
    killed before its first checkpoint left metrics no resume can continue, and appending to
    them would mix two runs (`loop runs` showed 553/5 steps)."""
    if checkpoint.latest(run_dir) is not None:
        return  # refused by the caller
    left = [n for n in ("metrics.jsonl", "config_history.jsonl", "run.json") if (run_dir / n).exists()]
    if not left:
        return
    warn(f"{run_dir}: replacing {', '.join(left)} of an earlier run that saved no checkpoint")
    for name in left:
        try:
            (run_dir / name).unlink()
        except OSError as e:
            raise StorageError(f"{run_dir / name}: cannot remove: {e.strerror or e}") from None


def restore_tokenizer(run_dir: Path, loaded: checkpoint.Checkpoint) -> Path:
    """RUN/tokenizer.json, made the verified copy of the resumed checkpoint's tokenizer: the
    run encodes with it and never trains a new one (its weights are tied to this one)."""
    if loaded.tokenizer is None:
        raise checkpoint.CheckpointError(
            f"{loaded.path}: has no tokenizer.json; a run cannot continue without the tokenizer it trained with"
        )
    path = run_dir / "tokenizer.json"
    try:
        atomic_write_bytes(path, loaded.tokenizer)
    except OSError as e:
        raise StorageError(f"{path}: cannot write: {e.strerror or e}") from None
    return path


def append_config_history(run_dir: Path, step: int, changes: dict[str, tuple]) -> None:
    """One line of config_history.jsonl: the settings a resumed run changed, from and to."""
    try:
        with open(run_dir / "config_history.jsonl", "ab") as f:
            f.write(
                orjson.dumps(
                    {
                        "step": step,
                        "changes": {k: {"from": a, "to": b} for k, (a, b) in changes.items()},
                        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    }
                )
                + b"\n"
            )
    except OSError as e:
        raise StorageError(f"{run_dir / 'config_history.jsonl'}: cannot write: {e.strerror or e}") from None


def write_run_record(run_dir: Path, cfg: Config, planned_steps: int, precision: str, world_size: int) -> None:
    """RUN/run.json: what `loop runs` lists before the first checkpoint exists (config, when it
    started, how many steps this session plans, precision, ranks); `started` survives resumes."""
    path = run_dir / "run.json"
    try:
        started = orjson.loads(path.read_bytes()).get("started")
    except (OSError, orjson.JSONDecodeError):
        started = None
    record = {
        "config": cfg.name,
        "started": started or time.strftime("%Y-%m-%dT%H:%M:%S"),
        "planned_steps": planned_steps,
        "precision": precision,
        "world_size": world_size,
        "pid": os.getpid(),
    }
    try:
        atomic_write_bytes(path, orjson.dumps(record, option=orjson.OPT_INDENT_2))
    except OSError as e:
        raise StorageError(f"{path}: cannot write: {e.strerror or e}") from None


def open_metrics(run_dir: Path) -> IO[bytes]:
    try:
        return open(run_dir / "metrics.jsonl", "ab")
    except OSError as e:
        raise StorageError(f"{e.filename}: cannot write: {e.strerror or e}") from None


def append_metrics(run_dir: Path, metrics_file: IO[bytes], record: dict, tensorboard: TensorBoardWriter | None) -> None:
    try:
        metrics_file.write(orjson.dumps(record) + b"\n")
        metrics_file.flush()
        if tensorboard is not None:
            tensorboard.write(record)
    except OSError as e:
        raise StorageError(f"{run_dir / 'metrics.jsonl'}: cannot write: {e.strerror or e}") from None


def truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, drop records a crash left behind after the checkpoint's step."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    kept = []
    for line in path.read_bytes().splitlines():
        try:
            if orjson.loads(line)["step"] <= step:
                kept.append(line)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            pass  # a line cut short by a crash or a full disk
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"{path}: cannot rewrite: {e.strerror or e}") from None


def write_checkpoint(
    run_dir: Path,
    cfg: Config,
    step: int,
    contents: tuple[dict, dict, dict],
    tokenizer_json: bytes,
) -> Path:
    """checkpoints/step_N (atomic, rotated to keep_checkpoints), then RUN/tokenizer.json and
    RUN/config.json beside it for the tools that read a run folder."""
    params, optim, state = contents
    path = checkpoint.save(
        run_dir, step, params, optim, state, cfg.keep_checkpoints, {checkpoint.TOKENIZER: tokenizer_json}
    )
    try:
        atomic_write_bytes(run_dir / "tokenizer.json", tokenizer_json)
        atomic_write_bytes(run_dir / "config.json", orjson.dumps(cfg.to_dict(), option=orjson.OPT_INDENT_2))
    except OSError as e:
        raise StorageError(f"{e.filename or run_dir}: cannot write: {e.strerror or e}") from None
    return path
