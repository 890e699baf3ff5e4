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
from ..errors import DashboardFailed
from ..train.launch import on_stop_signals
from .dashboard import DashboardScreen
from .picker import PickerScreen
from .runner import TrainingRunner
from .state import RunState


class LoopApp(App):
    CSS_PATH = "loop.tcss"
    TITLE = "loop_tui"

    def __init__(self, screen_factory, driver_class=None):
        super().__init__(driver_class=driver_class)
        self.screen_factory = screen_factory

    def on_mount(self) -> None:
        self.push_screen(self.screen_factory())


def run_dashboard(cfg: Config, run_dir: Path, terminal: str | None = None, **runner_args) -> RunState:
    """Run the dashboard until it closes; the run's final state (cli.py prints the summary).
    runner_args: TrainingRunner's (data, resume, steps, checkpoint_every, threads, device, ...).
    terminal: MPI rank 0 draws on this device, mpiexec's terminal (rank_terminal.py).
    SIGINT/SIGTERM (e.g. forwarded by mpiexec) and SIGHUP (the terminal closed) act like q: finish
    the step, save, exit; a second one aborts without saving."""
    caches = machine.detect_caches()
    runner = TrainingRunner(cfg, run_dir, **runner_args)
    driver = None
    if terminal:
        from .rank_terminal import RankZeroDriver

        driver = type("RankZeroDriverOn", (RankZeroDriver,), {"TERMINAL": terminal})
    app = LoopApp(lambda: DashboardScreen(runner, caches), driver_class=driver)

    def abort(signum: int) -> None:
        runner.trainer.abort = True
        runner.aborted = True
        app.call_later(app.exit, 130)

    def hang_up() -> bool:
        hung_up(runner)
        return True

    on_stop_signals(lambda signum: runner.request("quit"), abort, lambda: runner.quit_requested, hang_up)
    app.run()
    if runner.aborted:
        print(f"aborted without saving; {run_dir} keeps its last checkpoint", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # the training thread is mid-step in C: leave without waiting for it
    if runner.running:  # the app closed some other way: stop and save like q
        runner.request("quit")
        runner.thread.join()
    failure = getattr(app, "_exception", None)  # Textual keeps what ended the app; it printed the traceback
    if app.return_code == 1 and failure is not None:
        st = runner.state
        where = f"training stopped and saved at step {st.step}" if st.step else "nothing was trained"
        raise DashboardFailed(
            f"the dashboard failed ({type(failure).__name__}: {failure}); {where}; "
            "`loop train ... --no-tui` trains without it"
        )
    return runner.state


def hung_up(runner: TrainingRunner) -> None:
    """The terminal closed (SIGHUP): save like q, then leave. Textual can neither draw nor shut
    down on a closed terminal (its writer thread dies on EIO and the shutdown waits on it), and
    no one sees the app any more, so the process exits once the training thread has saved."""
    import threading

    from ..train.console import detach_from_terminal
    from ..train.distributed import mark_done

    detach_from_terminal()
    runner.request("quit")

    def leave() -> None:
        if runner.running:
            runner.thread.join()
        mark_done()
        os._exit(1 if runner.state.error else 0)

    threading.Thread(target=leave, name="loop-hangup", daemon=True).start()


def run_picker(extra: list[Path] | None = None) -> int:
    caches = machine.detect_caches()
    app = LoopApp(lambda: PickerScreen(caches, extra))
    app.run()
    return 0
