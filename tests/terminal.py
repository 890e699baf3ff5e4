"""Reading a tmux pane in tests that drive the real app on a terminal."""

from __future__ import annotations

import subprocess
import time


def tmux_pane(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def wait_pane(session: str, predicate, timeout: float = 120) -> str:
    """The pane's text once predicate(text) holds; AssertionError showing the pane after timeout."""
    deadline, pane = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        pane = tmux_pane(session)
        if predicate(pane):
            return pane
        time.sleep(0.3)
    raise AssertionError(f"timed out; the terminal shows:\n{pane}")
