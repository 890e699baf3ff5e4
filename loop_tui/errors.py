"""Failures a user can cause, each with the exit code `loop` ends with (README lists them).

str() of each is the one line the CLI prints; no traceback unless --debug or LOOP_DEBUG=1."""

from __future__ import annotations

EXIT_OK = 0
EXIT_DIVERGED = 1  # loss or gradient norm not finite: training stopped, last good weights kept
EXIT_USAGE = 2  # bad arguments, config, data folder or resume mismatch
EXIT_LOCKED = 3  # another trainer holds the run folder
EXIT_CHECKPOINT = 4  # no intact checkpoint to load, or a checkpoint could not be written
EXIT_OS = 5  # the OS refused: disk full, read-only or missing folder, permissions
EXIT_RANK_LOST = 6  # under MPI: another rank died (killed, out of memory); every rank stopped
EXIT_INTERNAL = 70  # a bug: run again with --debug for the traceback
EXIT_ABORTED = 130  # a second Ctrl-C: stopped without saving


class LoopError(Exception):
    """Base of the user-facing failures; `exit_code` is what the CLI returns."""

    exit_code = EXIT_USAGE


class RunLocked(LoopError):
    exit_code = EXIT_LOCKED


class NonFiniteError(LoopError):
    exit_code = EXIT_DIVERGED


class StorageError(LoopError):
    """An OS error while writing the run folder, with the path and the OS's reason."""

    exit_code = EXIT_OS


class DashboardFailed(LoopError):
    """The dashboard itself raised (Textual has printed the traceback); training stopped and saved."""

    exit_code = EXIT_INTERNAL
