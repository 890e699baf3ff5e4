"""Checkpoints: RUN_DIR/checkpoints/step_NNNNNNNN/{model,optimizer}.safetensors + state.json.

Each is written into a hidden temporary folder, every file fsynced, then renamed into place and
the parent fsynced: a kill -9 at any moment leaves the previous checkpoint whole, and a
half-written one is never seen (its folder name starts with '.'). Only the newest `keep` are
kept."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import orjson
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

PREFIX = "step_"


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
    return sorted(done, key=lambda p: int(p.name[len(PREFIX):]))


def latest(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save(run_dir: Path, step: int, params: dict[str, np.ndarray], optimizer: dict[str, np.ndarray],
         state: dict, keep: int, extra_files: dict[str, Path] | None = None) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _write_synced(tmp / "model.safetensors", st_save({k: np.ascontiguousarray(v) for k, v in params.items()}))
    _write_synced(tmp / "optimizer.safetensors", st_save({k: np.ascontiguousarray(v) for k, v in optimizer.items()}))
    for name, src in (extra_files or {}).items():
        _write_synced(tmp / name, Path(src).read_bytes())
    _write_synced(tmp / "state.json", orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    _fsync_dir(tmp)
    if final.exists():  # same step saved twice (e.g. 's' then quit): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
    return final


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    path = Path(path)
    params = st_load((path / "model.safetensors").read_bytes())
    optimizer = st_load((path / "optimizer.safetensors").read_bytes())
    state = orjson.loads((path / "state.json").read_bytes())
    return params, optimizer, state
