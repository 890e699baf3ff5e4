"""The cache folder ($LOOP_CACHE_DIR, default the platform's cache folder: $XDG_CACHE_HOME/loop_tui,
~/.cache/loop_tui without it): tokenizers, token ids and per-machine measurements (FMA peak, OpenCL
autotune), each written atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


def cache_dir() -> Path:
    import platformdirs

    d = Path(os.environ.get("LOOP_CACHE_DIR") or platformdirs.user_cache_path("loop_tui"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """A reader sees the old file or the new one, never half of one (and a crash leaves the old)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a Ctrl-C leaves no half-written file behind
        raise


def measured(file: str, key: str, measure: Callable[[], Any]) -> Any:
    """The value stored under `key` in the JSON file `file` of the cache folder; measured (and
    stored) the first time. An unreadable file counts as empty."""
    path = cache_dir() / file
    try:
        table = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        table = {}
    if key not in table:
        table[key] = measure()
        atomic_write_bytes(path, orjson.dumps(table))
    return table[key]
