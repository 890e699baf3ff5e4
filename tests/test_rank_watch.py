"""The MPI rank watcher (loop_tui/train/rank_watch.py) on plain processes: which ranks its one line
names. The real job, under mpiexec, is in test_mpi.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from loop_tui.train.rank_watch import watch

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open (Linux)")


def sleepers(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(n)]


def run_watch(tmp_path, procs, capsys) -> list[str]:
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    watch(markers, tmp_path / "run", "host", [f"{r}:{p.pid}" for r, p in enumerate(procs)])
    return [x for x in capsys.readouterr().err.splitlines() if x.startswith("loop: error")]


def ended(p: subprocess.Popen) -> None:
    """Wait until p has ended, leaving it a zombie (not reaped): its pidfd is then readable."""
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)


def test_one_dead_rank_is_named_alone(tmp_path, capsys):
    procs = sleepers(2)
    try:
        procs[1].kill()
        ended(procs[1])
        later = threading.Timer(1.0, procs[0].kill)  # as the launcher ends the others, a moment later
        later.start()
        lines = run_watch(tmp_path, procs, capsys)
        later.join()
        assert len(lines) == 1 and f"rank 1 (PID {procs[1].pid} on host) died;" in lines[0], lines
        assert "rank 0" not in lines[0] and "No checkpoint was written yet" in lines[0]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_ranks_found_dead_by_one_wake_up_are_all_named(tmp_path, capsys):
    procs = sleepers(2)
    try:
        for p in procs:
            p.kill()
            ended(p)  # both ended before the watcher starts: its first poll() finds both
        lines = run_watch(tmp_path, procs, capsys)
        want = f"rank 0 (PID {procs[0].pid} on host) or rank 1 (PID {procs[1].pid} on host) died"
        assert len(lines) == 1 and want in lines[0], lines
    finally:
        for p in procs:
            p.wait()


def test_a_rank_that_ended_after_its_done_marker_is_not_named(tmp_path, capsys):
    procs = sleepers(2)
    (tmp_path / "markers").mkdir()
    (tmp_path / "markers" / "done-0").touch()
    (tmp_path / "markers" / "done-1").touch()
    for p in procs:
        p.kill()
        ended(p)
    try:
        assert run_watch(tmp_path, procs, capsys) == []
    finally:
        for p in procs:
            p.wait()


# a rank as the watcher sees it through its life pipe: it holds the write end, and closes it (as the
# kernel closes a dying process's files, when MPICH's launcher sees its PMI socket close) on a line
# on stdin while it stays alive, like a dying process that has not finished its exit
LIVING = (
    "import os, sys, time; r, w = os.pipe(); os.close(r); print(w, flush=True); "
    "sys.stdin.readline(); os.close(w); time.sleep(60)"
)


def opened_here() -> set[str]:
    """What this process's descriptors point to ("pipe:[INODE]", ...)."""
    here = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            here.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return here


def test_the_rank_whose_files_closed_first_is_named_though_the_next_one_exits_first(tmp_path, capsys):
    procs = [
        subprocess.Popen([sys.executable, "-c", LIVING], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        life = [int(p.stdout.readline()) for p in procs]
        markers = tmp_path / "markers"
        markers.mkdir()
        argv = [f"{r}:{p.pid}:{life[r]}" for r, p in enumerate(procs)]
        watcher = threading.Thread(target=watch, args=(markers, tmp_path / "run", "host", argv))
        watcher.start()
        pipes = {os.readlink(f"/proc/{p.pid}/fd/{life[r]}") for r, p in enumerate(procs)}
        deadline = time.monotonic() + 30
        while not pipes <= opened_here() and time.monotonic() < deadline:  # the watcher has its readers
            time.sleep(0.01)
        procs[1].stdin.write("\n")  # rank 1 dies: its files close, its exit is not yet complete
        procs[1].stdin.flush()
        deadline = time.monotonic() + 30
        while not (markers / "reported").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        procs[0].kill()  # the launcher kills rank 0, which ends completely before rank 1 does
        ended(procs[0])
        watcher.join(30)
        lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("loop: error")]
        assert len(lines) == 1 and f"rank 1 (PID {procs[1].pid} on host) died;" in lines[0], lines
        assert "rank 0" not in lines[0]
    finally:
        for p in procs:
            p.kill()
            p.wait()
