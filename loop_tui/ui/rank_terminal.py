"""The dashboard on MPI rank 0. `mpiexec` gives its ranks pipes, not the terminal: rank 0's stdin
is fed by mpiexec from the terminal, its output goes back through mpiexec, and (MPICH's Hydra)
the ranks run in sessions of their own, without a controlling terminal. mpiexec's terminal is
still there, named by its stdin: rank 0 opens that device, draws on it, puts it in raw mode (so
keys reach mpiexec at once, and Ctrl-C is a key) and reads the keys mpiexec forwards to its stdin;
SIGWINCH reaches only the terminal's foreground group, so the size is polled instead.

Used only when mpiexec itself runs on that terminal (its stdin and stdout are it): a run launched
with its output sent to a file, or from a batch system, stays headless."""

from __future__ import annotations

import os
import signal
import termios
import threading
import tty
from pathlib import Path

from textual.drivers.linux_driver import LinuxDriver
from textual.geometry import Size

from ..train.rank_watch import TERMINAL_RESET

LAUNCHERS = ("mpiexec", "mpirun", "mpiexec.hydra", "orterun", "prterun")
SIZE_POLL_S = 0.5


def _parent(pid: int) -> tuple[int, str]:
    """(parent pid, command name) of `pid` from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    return int(stat[stat.rindex(")") + 2 :].split()[1]), name


def launcher_terminal() -> str | None:
    """The terminal mpiexec runs on (its stdin and stdout), if this process descends from an
    mpiexec on this machine that has one and can open it; else None."""
    try:
        pid = os.getppid()
        for _ in range(4):  # rank -> hydra proxy -> mpiexec (a wrapper script may add one)
            if pid <= 1:
                return None
            ppid, name = _parent(pid)
            if name in LAUNCHERS:
                return _own_terminal(pid)
            pid = ppid
    except (OSError, ValueError, IndexError):
        return None
    return None


def _own_terminal(launcher: int) -> str | None:
    """The launcher's terminal if its stdin and stdout are the same terminal, ours to open."""
    paths = {os.readlink(f"/proc/{launcher}/fd/{fd}") for fd in (0, 1)}
    path = paths.pop() if len(paths) == 1 else ""
    if not path.startswith(("/dev/pts/", "/dev/tty")) or os.stat(path).st_uid != os.getuid():
        return None
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        return path if os.isatty(fd) else None
    finally:
        os.close(fd)


class RankZeroDriver(LinuxDriver):
    """Textual's Linux driver drawing on mpiexec's terminal and reading keys from stdin (mpiexec's
    pipe). TERMINAL is set by the caller (launcher_terminal())."""

    TERMINAL = ""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tty_fd = os.open(self.TERMINAL, os.O_RDWR | os.O_NOCTTY)
        self._file = os.fdopen(os.dup(self.tty_fd), "w", encoding="utf-8", errors="replace")
        self.tty_attrs: list | None = None
        self.size_stop = threading.Event()

    def _get_terminal_size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.tty_fd)
            return size.columns or 80, size.lines or 25
        except OSError:
            return 80, 25

    def start_application_mode(self) -> None:
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a launcher that keeps the terminal: we are its background
        try:  # the modes Textual sets on its own terminal: keys reach mpiexec (and our stdin) at once,
            self.tty_attrs = termios.tcgetattr(self.tty_fd)  # unechoed, and Ctrl-C is a key
            mode = termios.tcgetattr(self.tty_fd)
            mode[tty.LFLAG] = self._patch_lflag(mode[tty.LFLAG])
            mode[tty.IFLAG] = self._patch_iflag(mode[tty.IFLAG])
            mode[tty.CC][termios.VMIN] = 1
            termios.tcsetattr(self.tty_fd, termios.TCSANOW, mode)
        except termios.error:
            self.tty_attrs = None
        if self.tty_attrs is not None:
            from ..train.distributed import note_terminal

            note_terminal(self.TERMINAL, self.tty_attrs, self.restore_terminal)
        super().start_application_mode()
        threading.Thread(target=self._poll_size, name="tty-size", daemon=True).start()

    def _poll_size(self) -> None:
        last = None  # the first poll always reports: the size sent at start may predate the terminal's own
        while not self.size_stop.wait(SIZE_POLL_S):
            size = self._get_terminal_size()
            if size != last:
                last = size
                self._app.post_message(_resize(size))  # thread-safe

    def stop_application_mode(self) -> None:
        self.size_stop.set()
        super().stop_application_mode()
        self.restore_terminal()

    def restore_terminal(self) -> None:
        """The terminal as it was (also called just before this rank exits because a peer died)."""
        if self.tty_attrs is not None:
            try:
                termios.tcsetattr(self.tty_fd, termios.TCSADRAIN, self.tty_attrs)
                os.write(self.tty_fd, TERMINAL_RESET.encode())
            except (OSError, termios.error):
                pass


def _resize(size: tuple[int, int]):
    from textual import events

    return events.Resize(Size(*size), Size(*size))
