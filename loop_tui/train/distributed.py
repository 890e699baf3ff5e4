"""Data parallelism over MPI: `mpirun -np N loop train CONFIG --no-tui` runs N copies of the
trainer, one per rank, each on its slice of one global batch, and keeps them one model:

- weights are broadcast from rank 0 at the start and compared (SHA-256) at every checkpoint;
- after each backward, the flat gradient arena is averaged in place with one Allreduce, so every
  rank applies the same AdamW step to the same weights (the kernels are deterministic);
- the step's loss and a stop flag travel in one more tiny Allreduce, so Ctrl-C/SIGTERM (which
  mpirun passes to every rank) stops all ranks after the same step.

MPI is only touched when the process was started by an MPI launcher (its environment says so);
a plain `loop train` never imports mpi4py. `World` is the single-process stand-in."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import EXIT_INTERNAL, EXIT_OS, EXIT_RANK_LOST, LoopError

# set by Open MPI, MPICH/Hydra and PMIx launchers in every rank's environment
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")
_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
_active: World | None = None  # the world connect() made, for abort_world


def _env_int(names: tuple[str, ...], default: int) -> int:
    for var in names:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return default


def launched_size() -> int:
    """Ranks the launcher started (1 outside mpirun)."""
    return _env_int(_SIZE_VARS, 1)


def launched_rank() -> int:
    return _env_int(_RANK_VARS, 0)


def abort_world(code: int) -> None:
    """After a failure on this rank (already reported): under MPI, end every rank (MPI_Abort)
    rather than leave the others blocked in a collective; a no-op in a single process."""
    if isinstance(_active, MPIWorld):
        _active.mark_done()
        _active.claim_report()
        _active.abort(code)


_restore_terminal: list = []  # set by the dashboard on rank 0: puts the terminal back before os._exit
_terminal_note: dict = {}  # {"path", "attrs"} of the terminal rank 0's dashboard took over


def note_terminal(path: str, attrs: list, restore) -> None:
    """Rank 0's dashboard took over the terminal `path` (saved termios `attrs`): if this rank is
    killed, the rank watcher puts it back (it reads MARKERS/terminal-RANK.json, written now or once
    watch_peers has made MARKERS); if it exits because a peer died, `restore` runs first."""
    _restore_terminal[:] = [restore]
    _terminal_note.update(path=path, attrs=attrs[:6] + [[c if isinstance(c, int) else c.hex() for c in attrs[6]]])
    _write_terminal_note()


def _write_terminal_note() -> None:
    markers = getattr(_active, "markers", None)
    if markers is None or not _terminal_note:
        return
    try:
        (markers / f"terminal-{getattr(_active, 'rank', 0)}.json").write_text(json.dumps(_terminal_note))
    except OSError:
        pass


def mark_done() -> None:
    """This process ends on purpose: the rank watcher must not report it as died."""
    if _active is not None:
        _active.mark_done()


class World:
    """One process: every collective is the identity."""

    size = 1
    rank = 0
    peers: list[tuple[str, int]] = []  # (host, PID) of every rank, known once watch_peers ran
    allreduce_s = 0.0  # seconds spent in gradient all-reduces since the last take_allreduce_s()

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def average_(self, buf: np.ndarray) -> None:
        """buf (float32, in place) becomes the mean of every rank's buf."""

    def sum(self, values: list[float]) -> list[float]:
        return list(values)

    def bcast_(self, buf: np.ndarray) -> None:
        """buf (in place) becomes rank 0's buf."""

    def bcast_obj(self, obj):
        return obj

    def gather_obj(self, obj) -> list:
        return [obj]

    def same_everywhere(self, arrays: list[np.ndarray]) -> bool:
        return True

    markers: Path | None = None  # MPI: where ranks say they ended on purpose (see rank_watch.py)

    def watch_peers(self, run_dir: Path) -> None:
        """Under MPI: report and end the job when a rank dies (see MPIWorld)."""

    def mark_done(self) -> None:
        """Under MPI: this rank ends on purpose (a normal end, or an error it reported)."""

    def take_allreduce_s(self) -> float:
        s, self.allreduce_s = self.allreduce_s, 0.0
        return s

    @contextmanager
    def together(self) -> Iterator[None]:
        """Run a block every rank enters, where any rank may fail (a refused resume, a checkpoint
        that cannot be written): at its end every rank learns whether one failed. The lowest rank
        that failed raises its error (the one line the user sees); the others raise PeerStopped
        with its exit code and say nothing. So all ranks end together and cleanly, instead of one
        aborting (or, worse, starting a collective) while the others wait in another one.
        An error raised this way has `every_rank_stopped` set (see stopped_together)."""
        error = None
        try:
            yield
        except Exception as e:  # noqa: BLE001 - any failure: settle() re-raises it on the rank that had it
            error = e
        self.settle(error)

    def settle(self, error: Exception | None) -> None:
        if error is not None:
            error.every_rank_stopped = True  # type: ignore[attr-defined]
            raise error


class MPIWorld(World):
    def __init__(self):
        from mpi4py import MPI

        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        # a rank that raises must take the job down, not leave the others waiting in a collective
        self.comm.Set_errhandler(MPI.ERRORS_ARE_FATAL)

    def average_(self, buf: np.ndarray) -> None:
        t0 = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        buf *= np.float32(1.0 / self.size)
        self.allreduce_s += time.perf_counter() - t0

    def sum(self, values: list[float]) -> list[float]:
        out = np.array(values, np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, out, op=self.MPI.SUM)
        return out.tolist()

    def bcast_(self, buf: np.ndarray) -> None:
        self.comm.Bcast(buf, root=0)

    def bcast_obj(self, obj):
        return self.comm.bcast(obj, root=0)

    def gather_obj(self, obj) -> list:
        return self.comm.allgather(obj)

    def same_everywhere(self, arrays: list[np.ndarray]) -> bool:
        h = hashlib.sha256()
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
        return len(set(self.comm.allgather(h.hexdigest()))) == 1

    def watch_peers(self, run_dir: Path) -> None:
        """Make a rank's death visible and final. The lowest rank on each machine starts
        rank_watch.py in a session of its own: when a local rank ends without having said it is
        done (mark_done), it prints one line naming that rank, its PID and the newest intact
        checkpoint, even as the launcher kills the rest. And a thread here ends this rank (exit 6)
        if a local peer dies, for launchers that would leave the survivors waiting."""
        import socket
        import subprocess
        import tempfile
        import threading

        from .rank_watch import open_end_watch

        host = socket.gethostname()
        # the life pipe: never written, it reaches end-of-file as the kernel closes this rank's files,
        # when MPICH's launcher sees the PMI socket close (see rank_watch.py); not inherited by children
        life_read, self._life_write = os.pipe()
        os.close(life_read)  # the watchers open readers of their own through /proc
        gathered = self.comm.allgather((host, os.getpid(), self._life_write))
        peers = self.peers = [(h, pid) for h, pid, _ in gathered]
        life = {r: fd for r, (_, _, fd) in enumerate(gathered)}
        local = [(r, pid) for r, (h, pid) in enumerate(peers) if h == host]
        markers = self.markers = Path(tempfile.gettempdir()) / f"loop-mpi-{peers[0][1]}"
        markers.mkdir(exist_ok=True)
        _write_terminal_note()
        if not hasattr(os, "pidfd_open"):  # Linux 5.3+: elsewhere the ranks run unwatched
            if self.rank == local[0][0]:
                sys.stderr.write("loop: note: no pidfd_open on this OS: a rank that dies will not be named\n")
        elif self.rank == local[0][0]:
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "loop_tui.train.rank_watch",
                    str(self.markers),
                    str(Path(run_dir).resolve()),
                    host,
                ]
                + [f"{r}:{pid}:{life[r]}" for r, pid in local],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        others = [(r, pid) for r, pid in local if r != self.rank]

        def watch() -> None:
            import select

            fds = {}
            for r, pid in others:
                try:
                    fds[open_end_watch(pid, life[r])] = r
                except OSError:  # gone already: the rank watcher names it, the launcher ends this rank
                    continue
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            while fds:
                for fd, _ in poller.poll():
                    rank = fds.pop(fd)
                    poller.unregister(fd)
                    if not (markers / f"done-{rank}").exists():
                        for restore in _restore_terminal:
                            restore()
                        # this rank's end is not the failure: on a loaded machine the rank watcher
                        # may see it before the dead peer's, and must name the peer
                        self.mark_done()
                        os._exit(EXIT_RANK_LOST)

        if others and hasattr(os, "pidfd_open"):
            threading.Thread(target=watch, name="loop-peer-watch", daemon=True).start()

    def settle(self, error: Exception | None) -> None:
        codes = self.comm.allgather(None if error is None else exit_code_of(error))
        failed = [rank for rank, code in enumerate(codes) if code is not None]
        if not failed:
            return
        if error is not None and self.rank == failed[0]:
            error.every_rank_stopped = True  # type: ignore[attr-defined]
            raise error
        raise PeerStopped(f"rank {failed[0]} failed and reported why", codes[failed[0]])

    def mark_done(self) -> None:
        if self.markers is not None:
            try:
                (self.markers / f"done-{self.rank}").touch()
            except OSError:
                pass

    def claim_report(self) -> None:
        """This rank has printed why the job ends: the rank watcher must not add a line about
        the ranks the launcher kills next."""
        if self.markers is not None:
            try:
                (self.markers / "reported").touch()
            except OSError:
                pass

    def abort(self, code: int) -> None:
        sys.stderr.flush()
        self.comm.Abort(code)


def stopped_together(error: BaseException) -> bool:
    """Whether every rank stopped at the point where `error` was raised (World.together), so
    they can still meet in another collective."""
    return isinstance(error, PeerStopped) or getattr(error, "every_rank_stopped", False)


def exit_code_of(error: BaseException) -> int:
    """The exit code the CLI gives `error` (LoopError and ConfigError carry theirs)."""
    return getattr(error, "exit_code", EXIT_OS if isinstance(error, OSError) else EXIT_INTERNAL)


class PeerStopped(LoopError):
    """Another rank failed at a point every rank passes together and reported it; this rank ends
    with the same exit code and prints nothing."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
        self.every_rank_stopped = True


class MPIUnavailable(LoopError):
    """Started by mpirun without mpi4py."""


def connect() -> World:
    """The MPI world when started by an MPI launcher with more than one rank, else World()."""
    n = launched_size()
    if n <= 1:
        return World()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise MPIUnavailable(
            f"started by an MPI launcher with {n} ranks, but mpi4py is not installed: "
            "pip install -e '.[mpi]' (mpi4py and the MPICH wheel; `make install` does it)"
        ) from None
    global _active
    _active = MPIWorld()
    return _active
