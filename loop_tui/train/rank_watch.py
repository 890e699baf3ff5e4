"""Names the rank that died in an MPI job, in one line.

    python -m loop_tui.train.rank_watch MARKERS RUN_DIR HOST RANK:PID[:FD] [RANK:PID[:FD] ...]

Started by the lowest rank on each machine in a session of its own, so the launcher's clean-up
(MPICH's mpiexec SIGKILLs every rank the moment one dies) does not take it down with the ranks.
It watches each local rank's life pipe (FD: the write end of a pipe the rank holds and never writes,
opened here through /proc), which reaches end-of-file when the kernel closes the rank's files: the
moment MPICH's launcher sees the rank's PMI socket close and kills the others. A pidfd (the fallback)
becomes readable only at the end of the process's exit, so on a loaded machine a rank the launcher
killed a moment later could be seen first. A rank that ends after writing MARKERS/done-RANK (a normal
end, or an error it has already reported) is let go; the first one to end without it is the one
that died (or, when several end by the same wake-up, one of them did), and the watcher that claims
MARKERS/reported prints the line. It exits when every local rank has ended."""

from __future__ import annotations

import os
import re
import select
import stat
import sys
from pathlib import Path


def newest_checkpoint(run_dir: Path) -> str:
    try:
        done = sorted(
            p
            for p in (run_dir / "checkpoints").iterdir()
            if re.fullmatch(r"step_\d+", p.name) and (p / "state.json").exists()
        )
    except OSError:
        done = []
    return f"The newest checkpoint, {done[-1]}, is intact." if done else "No checkpoint was written yet."


# leave the alternate screen, show the cursor, end mouse reporting, bracketed paste, focus events and
# the kitty keyboard protocol: what Textual turned on, undone for a dashboard killed mid-frame
TERMINAL_RESET = "\x1b[?1049l\x1b[?25h\x1b[?1000l\x1b[?1003l\x1b[?1006l\x1b[?1015l\x1b[?2004l\x1b[?1004l\x1b[<u"


def restore_terminal(markers: Path, rank: int) -> None:
    """If `rank` drew the dashboard (MARKERS/terminal-RANK.json), put its terminal back: the
    termios settings it saved, and the screen modes Textual set."""
    import json
    import termios

    try:
        saved = json.loads((markers / f"terminal-{rank}.json").read_text())
        fd = os.open(saved["path"], os.O_WRONLY | os.O_NOCTTY)
    except (OSError, ValueError, KeyError):
        return
    try:
        attrs = saved["attrs"]
        attrs[6] = [c if isinstance(c, int) else bytes.fromhex(c) for c in attrs[6]]
        termios.tcsetattr(fd, termios.TCSADRAIN, attrs)
        os.write(fd, TERMINAL_RESET.encode())
    except (OSError, termios.error, ValueError):
        pass
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    import shutil

    try:
        return watch(Path(argv[0]), Path(argv[1]), argv[2], argv[3:])
    finally:
        shutil.rmtree(argv[0], ignore_errors=True)  # the job's markers: its ranks have all ended


def open_end_watch(pid: int, life_fd: int | None) -> int:
    """A descriptor that becomes readable when process `pid` ends: a reader of its life pipe (the
    pipe behind its descriptor `life_fd`, which gets end-of-file as the kernel closes the process's
    files) or, when there is none, a pidfd. OSError when the process is already gone."""
    if life_fd is not None:
        try:
            fd = os.open(f"/proc/{pid}/fd/{life_fd}", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            pass
        else:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
    return os.pidfd_open(pid)


def watch(markers: Path, run_dir: Path, host: str, argv: list[str]) -> int:
    ranks: dict[int, int] = {}  # rank: PID
    life: dict[int, int | None] = {}  # rank: its life pipe's descriptor number in that process
    for x in argv:
        rank, pid, *life_fd = (int(v) for v in x.split(":"))
        ranks[rank], life[rank] = pid, (life_fd[0] if life_fd else None)
    poller = select.poll()
    fds = {}
    for rank, pid in ranks.items():
        try:
            fd = open_end_watch(pid, life[rank])
        except OSError:  # already gone
            continue
        fds[fd] = rank
        poller.register(fd, select.POLLIN)
    while fds:
        ready = [fd for fd, _ in poller.poll()]
        dead = []
        for fd in ready:
            rank = fds.pop(fd)
            poller.unregister(fd)
            if not (markers / f"done-{rank}").exists():
                dead.append(rank)
        if not dead:
            continue
        for local in ranks:  # a dashboard on a rank the launcher is about to kill: the terminal first
            restore_terminal(markers, local)
        try:  # the first death claims the report; the ranks the launcher kills next do not
            os.close(os.open(markers / "reported", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return 0
        # poll() says that a rank ended, not when: ranks found dead by the same wake-up are all named
        # (one died, the launcher stopped the others at once), not one of them at random
        who = " or ".join(f"rank {r} (PID {ranks[r]} on {host})" for r in sorted(dead))
        sys.stderr.write(f"loop: error: {who} died; the launcher stops the other ranks. {newest_checkpoint(run_dir)}\n")
        sys.stderr.flush()
        for other, other_rank in fds.items():  # the launcher ends the others; the markers go once they have
            select.select([other], [], [], 10)
            if not (markers / f"done-{other_rank}").exists():
                restore_terminal(markers, other_rank)
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
