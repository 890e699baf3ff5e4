"""Checkpoints: RUN_DIR/checkpoints/step_NNNNNNNN/{model,optimizer}.safetensors + state.json.

Each is written into a hidden temporary folder, every file fsynced, then renamed into place and
the parent fsynced: a kill -9 at any moment leaves the previous checkpoint whole, and a
half-written one is never seen (its folder name starts with '.'). Only the newest `keep` are
kept. state.json records a SHA-256 per file; `load` verifies them (and that every weight is
finite), and `load_newest_intact` falls back past a damaged checkpoint to the newest whole one.
A failed write (disk full, read-only folder) removes its temporary folder and raises
CheckpointError naming the path and the OS reason; the earlier checkpoints stay as they were."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ..errors import EXIT_CHECKPOINT, LoopError

PREFIX = "step_"
DATA_FILES = ("model.safetensors", "optimizer.safetensors")


class CheckpointError(LoopError):
    """A checkpoint that cannot be written or read; str() is the one-line message."""

    exit_code = EXIT_CHECKPOINT


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(run_dir: Path) -> list[Path]:
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    done = [p for p in d.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").exists()]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def latest(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save(
    run_dir: Path,
    step: int,
    params: dict[str, np.ndarray],
    optimizer: dict[str, np.ndarray],
    state: dict,
    keep: int,
    extra_files: dict[str, Path] | None = None,
) -> Path:
    root = Path(run_dir) / "checkpoints"
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if not all(np.isfinite(v).all() for v in params.values()):
        raise CheckpointError(f"{final}: not saved: the weights are not finite (NaN or inf)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        blobs = {
            "model.safetensors": st_save({k: np.ascontiguousarray(v) for k, v in params.items()}),
            "optimizer.safetensors": st_save({k: np.ascontiguousarray(v) for k, v in optimizer.items()}),
        }
        blobs.update({name: Path(src).read_bytes() for name, src in (extra_files or {}).items()})
        for name, data in blobs.items():
            _write_synced(tmp / name, data)
        state = {**state, "files": {name: _sha256(data) for name, data in blobs.items()}}
        _write_synced(tmp / "state.json", orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        _fsync_dir(tmp)
        if final.exists():  # same step saved twice (e.g. 's' then quit): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        where = e.filename or tmp
        raise CheckpointError(f"{where}: cannot write checkpoint: {e.strerror or e}") from None
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    return final


def load(path: Path, with_optimizer: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """params, optimizer moments and state of one checkpoint, verified: CheckpointError names the
    file and what is wrong with it."""
    path = Path(path)
    try:
        state = orjson.loads((path / "state.json").read_bytes())
        if not isinstance(state, dict) or not {"step", "config"} <= state.keys():
            raise CheckpointError(f"{path / 'state.json'}: damaged (missing step or config)")
        blobs = {name: (path / name).read_bytes() for name in DATA_FILES[: 2 if with_optimizer else 1]}
    except OSError as e:
        raise CheckpointError(f"{e.filename or path}: cannot read: {e.strerror or e}") from None
    except orjson.JSONDecodeError as e:
        raise CheckpointError(f"{path / 'state.json'}: damaged (not valid JSON: {e.args[0]})") from None
    for name, data in blobs.items():
        want = state.get("files", {}).get(name)
        if want is not None and _sha256(data) != want:
            raise CheckpointError(f"{path / name}: damaged (checksum mismatch: truncated or changed)")
    try:
        params = st_load(blobs["model.safetensors"])
        optimizer = st_load(blobs["optimizer.safetensors"]) if with_optimizer else {}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise CheckpointError(f"{path}: damaged safetensors file ({type(e).__name__}: {e})") from None
    if not all(np.isfinite(v).all() for v in params.values()):
        raise CheckpointError(f"{path / 'model.safetensors'}: holds non-finite weights (a diverged run)")
    return params, optimizer, state


def load_newest_intact(run_dir: Path, warn: Callable[[str], None], with_optimizer: bool = True):
    """(path, params, optimizer, state) of the newest checkpoint that verifies; each damaged newer
    one is reported through `warn`. CheckpointError if there is none."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint found (expected RUN_DIR/checkpoints/step_*/)")
    errors = []
    for path in reversed(found):
        try:
            params, optimizer, state = load(path, with_optimizer)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        for msg in errors:
            warn(f"skipping a damaged checkpoint: {msg}; using {path.name}")
        return path, params, optimizer, state
    raise CheckpointError(f"{run_dir}: no intact checkpoint ({len(found)} found; newest: {errors[0]})")
