"""What differs between platforms: the ISAs a build offers, cache sizes without sysfs (macOS
sysctl), and the Linux/POSIX-only paths degrading with one line where the OS lacks them."""

from __future__ import annotations

import platform
import sys
from types import SimpleNamespace

from loop_tui import machine
from loop_tui.train import runs
from loop_tui.train.trainer import Trainer


def test_isas_offered_are_this_architectures():
    from loop_tui import kernels as K

    isas = K.available_isas()
    assert isas[0] == "generic"
    arch = platform.machine().lower()
    if arch in ("x86_64", "amd64"):
        assert "neon" not in isas
    elif arch in ("aarch64", "arm64"):
        assert isas == ["generic", "neon"]


def test_no_sysfs_reads_sysctl_and_says_what_it_lacks(tmp_path):
    values = {"hw.l1dcachesize": 128 * 1024, "hw.l2cachesize": 4 * 1024**2}  # an M1 names no L3
    c = machine.detect_caches(root=tmp_path / "nothing", sysctl=values.get)
    assert c.source == "sysctl+fallback"
    assert [(lv.name, lv.size) for lv in c.levels] == [
        ("L1d", 128 * 1024),
        ("L2", 4 * 1024**2),
        ("L3", machine.FALLBACK["L3"]),
    ]
    assert c.notes == (f"L3 not in sysctl: assumed {machine.FALLBACK['L3'] // 1024} KiB",)


def test_sysfs_wins_over_sysctl_and_neither_gives_the_defaults(tmp_path):
    d = tmp_path / "cpu0" / "cache" / "index0"
    d.mkdir(parents=True)
    for name, text in (("level", "1"), ("type", "Data"), ("size", "48K")):
        (d / name).write_text(text + "\n")
    c = machine.detect_caches(root=tmp_path, sysctl=lambda key: 1 << 20)
    assert c.source == "sysfs+fallback" and c.size("L1d") == 48 * 1024
    c = machine.detect_caches(root=tmp_path / "nothing", sysctl=lambda key: None)
    assert c.source == "fallback" and c.size("L2") == machine.FALLBACK["L2"]


def test_sysctl_is_asked_only_on_macos():
    if sys.platform == "darwin":
        assert machine.sysctl_int("hw.l1dcachesize")
    else:
        assert machine.sysctl_int("hw.l1dcachesize") is None


def test_without_file_locks_a_trainer_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fcntl", None)  # `import fcntl` now raises ImportError, as on Windows
    run = tmp_path / "run"
    holder = SimpleNamespace(run_dir=run)
    Trainer._lock_run_dir(holder)  # type: ignore[arg-type]
    holder._lock_file.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no file locks" in err
    assert (run / ".lock").exists() and not runs.is_running(run)


def test_without_pidfd_open_the_rank_watcher_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    import os
    import shutil
    import subprocess

    from loop_tui.train.distributed import MPIWorld

    def no_watcher(*args, **kwargs):
        raise AssertionError("the rank watcher needs pidfd_open; it must not start without it")

    monkeypatch.delattr(os, "pidfd_open", raising=False)  # as on macOS
    monkeypatch.setattr(subprocess, "Popen", no_watcher)
    world = object.__new__(MPIWorld)  # one rank, no MPI: allgather returns this rank's value
    world.rank, world.size = 0, 1
    world.comm = SimpleNamespace(allgather=lambda obj: [obj])
    try:
        world.watch_peers(tmp_path)
    finally:
        shutil.rmtree(world.markers, ignore_errors=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no pidfd_open" in err
