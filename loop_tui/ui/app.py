"""loop_tui's terminal app: one App whose first screen is the picker, the dashboard, the runs
table or the view.

loop tui                 -> PickerScreen
loop train CONFIG        -> DashboardScreen, training starts at once (on a terminal)
loop runs --app          -> RunsScreen
loop view RUN [RUN ...]  -> ViewScreen
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from textual.app import App

from .. import machine
from ..config import Config
from .dashboard import DashboardScreen
from .picker import PickerScreen
from .runner import TrainingRunner
from .state import RunState


class LoopApp(App):
    CSS_PATH = "loop.tcss"
    TITLE = "loop_tui"

    def __init__(self, screen_factory):
        super().__init__()
        self.screen_factory = screen_factory

    def on_mount(self) -> None:
        self.push_screen(self.screen_factory())


def run_dashboard(
    cfg: Config, run_dir: Path, data=None, resume=False, steps=None, checkpoint_every=None, device=None
) -> RunState:
    """Run the dashboard until it closes; the run's final state (cli.py prints the summary)."""
    caches = machine.detect_caches()
    runner = TrainingRunner(
        cfg, run_dir, data=data, resume=resume, steps=steps, checkpoint_every=checkpoint_every, device=device
    )
    app = LoopApp(lambda: DashboardScreen(runner, caches))
    app.run()
    if runner.aborted:
        print(f"aborted without saving; {run_dir} keeps its last checkpoint", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # the training thread is mid-step in C: leave without waiting for it
    if runner.running:  # the app closed some other way: stop and save like q
        runner.request("quit")
        runner.thread.join()
    return runner.state


def run_picker(extra: list[Path] | None = None) -> int:
    caches = machine.detect_caches()
    app = LoopApp(lambda: PickerScreen(caches, extra))
    app.run()
    return 0
