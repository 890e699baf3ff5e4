"""The cache folder ($LOOP_CACHE_DIR, default the platform's cache folder: $XDG_CACHE_HOME/loop_tui,
~/.cache/loop_tui without it): tokenizers, token ids and per-machine measurements (FMA peak, OpenCL
autotune), each written atomically. Work folders carry their process's host and PID, so those of
a killed process can be found and removed (`remove_stale`)."""

from __future__ import annotations

import os
import re
import shutil
import socket
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


def work_folder(job: str) -> str:
    """The name prefix of a temporary work folder in the cache folder: it carries the host and PID
    of its process, so remove_stale can tell a dead process's folder (the cache may be shared by
    several machines, whose PIDs mean nothing here)."""
    return f".{job}-{socket.gethostname()}-{os.getpid()}-"


_WORK_FOLDER = re.compile(r"\.[a-z]+-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale(folder: Path | None = None) -> None:
    """Remove the work folders that processes of this machine left in the cache folder when they
    died (a kill -9 gives them no chance to clean up)."""
    host = socket.gethostname()
    for p in (folder or cache_dir()).iterdir():
        m = _WORK_FOLDER.fullmatch(p.name)
        if m and m["host"] == host and not pid_alive(int(m["pid"])) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def measured(file: str, key: str, measure: Callable[[], Any], keep: Callable[[Any], bool] = lambda _: True) -> Any:
    """The value stored under `key` in the JSON file `file` of the cache folder; measured (and
    stored) the first time. A measurement `keep` refuses is returned but not stored (measured again
    next time). An unreadable file counts as empty."""
    path = cache_dir() / file
    try:
        table = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        table = {}
    if key in table:
        return table[key]
    value = measure()
    if keep(value):
        table[key] = value
        atomic_write_bytes(path, orjson.dumps(table))
    return value
