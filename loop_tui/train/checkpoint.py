"""Checkpoints: RUN_DIR/checkpoints/step_NNNNNNNN/{model,optimizer}.safetensors + state.json
(+ tokenizer.json for a trainer's checkpoint).

Each is written into a hidden temporary folder, every file fsynced, then renamed into place and
the parent fsynced: a kill -9 at any moment leaves the previous checkpoint whole, and a
half-written one is never seen (its folder name starts with '.'). Only the newest `keep` are
kept: rotation renames an old one to a hidden name before deleting it, so a reader sees a whole
checkpoint or none, and never removes the one just written. state.json records a SHA-256 per
file; `load` reads every file into memory and verifies them (and that every weight is finite),
so what it returns is one consistent checkpoint even if rotation removes the folder afterwards;
`load_newest_intact` falls back past a damaged checkpoint to the newest whole one, and moves on
to a newer one when the one it reads is rotated away under it. Folders whose name is not
step_ and digits (a user's step_00000200.bak/) are not checkpoints.
A failed write (disk full, read-only folder) removes its temporary folder and raises
CheckpointError naming the path and the OS reason; the earlier checkpoints stay as they were."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ..errors import EXIT_CHECKPOINT, LoopError

PREFIX = "step_"
NAME = re.compile(PREFIX + r"(\d+)")
DATA_FILES = ("model.safetensors", "optimizer.safetensors")
TOKENIZER = "tokenizer.json"
BEST = "best"  # checkpoints/best: a symlink to the hidden folder of the best checkpoint


@dataclass
class Checkpoint:
    """One verified checkpoint, read whole into memory."""

    path: Path
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]  # empty when loaded without it
    state: dict
    tokenizer: bytes | None = field(default=None, repr=False)  # tokenizer.json, when the checkpoint has one


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


def step_of(path: Path) -> int | None:
    """The step a checkpoint folder's name says, or None if the name is not a checkpoint's."""
    m = NAME.fullmatch(path.name)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint folder, oldest first, damaged ones included (`load` tells them apart): a
    folder is only ever renamed into place whole, so one without its state.json was damaged later."""
    d = Path(run_dir) / "checkpoints"
    try:
        found = [p for p in d.iterdir() if step_of(p) is not None and p.is_dir()]
    except OSError:  # no checkpoints/ yet (or not a folder)
        return []
    return sorted(found, key=lambda p: step_of(p) or 0)


def latest(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _write_folder(
    root: Path,
    name: str,
    params: dict[str, np.ndarray],
    optimizer: dict[str, np.ndarray],
    state: dict,
    extra_files: dict[str, bytes] | None,
) -> Path:
    """Write one checkpoint as root/name: into a hidden temporary folder, fsynced, renamed into place."""
    final = root / name
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
        blobs.update(extra_files or {})
        for name, data in blobs.items():
            _write_synced(tmp / name, data)
        state = {**state, "files": {name: _sha256(data) for name, data in blobs.items()}}
        _write_synced(tmp / "state.json", orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        _fsync_dir(tmp)
        if final.exists():  # same step saved twice (e.g. 's' then quit): replace it
            _remove(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        where = e.filename or tmp
        raise CheckpointError(f"{where}: cannot write checkpoint: {e.strerror or e}") from None
    return final


def save_best(
    run_dir: Path,
    step: int,
    params: dict[str, np.ndarray],
    optimizer: dict[str, np.ndarray],
    state: dict,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write checkpoint `step` as the run's best: a hidden folder .best-step_N, then the symlink
    checkpoints/best switched to it in one rename (a kill -9 leaves the previous best or the new
    one, whole), then the previous best folder removed. Rotation never touches it."""
    root = Path(run_dir) / "checkpoints"
    folder = _write_folder(root, f".{BEST}-{PREFIX}{step:08d}", params, optimizer, state, extra_files)
    link = root / f".tmp-{BEST}-link-{os.getpid()}"
    try:
        link.unlink(missing_ok=True)
        os.symlink(folder.name, link)
        os.replace(link, root / BEST)
        _fsync_dir(root)
    except OSError as e:
        link.unlink(missing_ok=True)
        raise CheckpointError(f"{root / BEST}: cannot update the best checkpoint: {e.strerror or e}") from None
    for old in root.glob(f".{BEST}-*"):
        if old.name != folder.name:
            _remove(old)
    return root / BEST


def best(run_dir: Path) -> Path | None:
    """RUN_DIR/checkpoints/best (the checkpoint of the lowest validation loss) if the run has one."""
    path = Path(run_dir) / "checkpoints" / BEST
    return path if (path / "state.json").exists() else None


def remove_best(run_dir: Path) -> None:
    """Delete checkpoints/best: the link first (readers then see no best), then its folders."""
    root = Path(run_dir) / "checkpoints"
    (root / BEST).unlink(missing_ok=True)
    _fsync_dir(root)
    for old in root.glob(f".{BEST}-*"):
        _remove(old)


def step_in(folder: Path) -> int | None:
    """The step a checkpoint folder's state.json records (None if it cannot be read)."""
    try:
        step = orjson.loads((folder / "state.json").read_bytes()).get("step")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def save(
    run_dir: Path,
    step: int,
    params: dict[str, np.ndarray],
    optimizer: dict[str, np.ndarray],
    state: dict,
    keep: int,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write checkpoint `step` (extra_files: name -> contents, e.g. the tokenizer), then remove
    all but the `keep` newest up to it. Checkpoints of later steps (left by a run that resumed
    past them because they were damaged) stay until this run's own saves replace them."""
    root = Path(run_dir) / "checkpoints"
    final = _write_folder(root, f"{PREFIX}{step:08d}", params, optimizer, state, extra_files)
    older = [p for p in list_checkpoints(run_dir) if (step_of(p) or 0) < step]
    for old in older[: max(0, len(older) - (keep - 1))]:
        _remove(old)
    for stale in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    return final


def _remove(path: Path) -> None:
    """Delete a checkpoint: renamed out of sight first, so no reader ever sees half of one."""
    hidden = path.with_name(f".old-{path.name}-{os.getpid()}")
    try:
        os.rename(path, hidden)
    except OSError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


def load(path: Path, with_optimizer: bool = True) -> Checkpoint:
    """One checkpoint, every file read and verified: CheckpointError names the file and what is
    wrong with it. A file state.json lists (the tokenizer) must be there and match its SHA-256."""
    path = Path(path)
    try:
        state = orjson.loads((path / "state.json").read_bytes())
        if not isinstance(state, dict) or not {"step", "config"} <= state.keys():
            raise CheckpointError(f"{path / 'state.json'}: damaged (missing step or config)")
        sums: dict = state["files"] if isinstance(state.get("files"), dict) else {}
        names = [*DATA_FILES[: 2 if with_optimizer else 1], *(n for n in sums if n not in DATA_FILES)]
        blobs = {name: (path / name).read_bytes() for name in names}
    except OSError as e:
        raise CheckpointError(f"{e.filename or path}: cannot read: {e.strerror or e}") from None
    except orjson.JSONDecodeError as e:
        raise CheckpointError(f"{path / 'state.json'}: damaged (not valid JSON: {e.args[0]})") from None
    for name, data in blobs.items():
        want = sums.get(name)
        if want is not None and _sha256(data) != want:
            raise CheckpointError(f"{path / name}: damaged (checksum mismatch: truncated or changed)")
    try:
        params = st_load(blobs["model.safetensors"])
        optimizer = st_load(blobs["optimizer.safetensors"]) if with_optimizer else {}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad file
        raise CheckpointError(f"{path}: damaged safetensors file ({type(e).__name__}: {e})") from None
    if not all(np.isfinite(v).all() for v in params.values()):
        raise CheckpointError(f"{path / 'model.safetensors'}: holds non-finite weights (a diverged run)")
    return Checkpoint(path, params, optimizer, state, blobs.get(TOKENIZER))


def load_newest_intact(run_dir: Path, warn: Callable[[str], None], with_optimizer: bool = True) -> Checkpoint:
    """The newest checkpoint that verifies; each damaged newer one is reported through `warn`.
    One that disappears while it is read (a running trainer rotated it away) is not damaged: the
    newer one that replaced it is tried instead. CheckpointError if there is none."""
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint found (expected RUN_DIR/checkpoints/step_*/)")
    tried: set[Path] = set()
    errors = []
    while untried := [p for p in list_checkpoints(run_dir) if p not in tried]:
        path = untried[-1]
        tried.add(path)
        try:
            ckpt = load(path, with_optimizer)
        except CheckpointError as e:
            if path.exists():  # damaged, not rotated away
                errors.append(str(e))
            continue
        for msg in errors:
            warn(f"skipping a damaged checkpoint: {msg}; using {path.name}")
        return ckpt
    newest = errors[0] if errors else "each was removed while it was read"
    raise CheckpointError(f"{run_dir}: no intact checkpoint ({len(found)} found; newest: {newest})")
