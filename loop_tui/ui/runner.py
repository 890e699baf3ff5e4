"""Runs a Trainer on one long-lived thread (libgomp keeps its pool, and so the OpenMP thread ids
the dashboard shows, per calling thread) and publishes into a RunState; the thread that starts it
(the UI's) yields the cores to training."""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from ..backend import KernelStat, ThreadStat
from ..config import Config
from ..train.trainer import Trainer
from .state import RunState

UI_NICE = int(os.environ.get("LOOP_UI_NICE", "19"))  # the UI thread's nice value while training runs


def yield_cores_to_training() -> int | None:
    """Lower this thread's CPU priority (Linux: nice is per thread). Training keeps every core busy
    and its OpenMP threads wait for each other at barriers, so each millisecond the UI takes from
    one of them costs the whole step a millisecond (measured: ~7% of tokens/s at normal priority).
    At nice 19 the UI draws in the gaps instead. Its previous nice value, or None if not changed."""
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, UI_NICE)
    except (OSError, AttributeError):
        return None
    return before


def restore_nice(value: int) -> None:
    """Back to `value` (allowed for root; an unprivileged process keeps 19 until it exits)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), value)
    except OSError:
        pass


class TrainingRunner:
    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        data: str | None = None,
        resume: bool = False,
        steps: int | None = None,
        checkpoint_every: int | None = None,
        threads: int | None = None,
        device: str | None = None,
        force: bool = False,
        new_data: bool = False,
    ):
        self.state = RunState(
            config_name=cfg.name,
            run_dir=str(run_dir),
            backend=cfg.backend,
            total_steps=steps or cfg.max_steps,
            tokens_per_step=cfg.tokens_per_step,
        )
        self.trainer = Trainer(
            cfg,
            run_dir,
            data=data,
            resume=resume,
            threads=threads,
            on_event=self._on_event,
            device=device,
            force=force,
            new_data=new_data,
        )
        # called on the training thread with (kind, time-stamped line) for each rare event; the
        # dashboard posts them to itself as Textual messages
        self.listeners: list[Callable[[str, str], None]] = []
        self.steps, self.checkpoint_every = steps, checkpoint_every
        self.thread = threading.Thread(target=self._main, name="loop-train", daemon=True)
        self.ready = threading.Event()
        self.quit_requested = False
        self.aborted = False  # a second quit: the process leaves without the final save
        self.caller_nice: int | None = None  # the starting thread's nice value before start()

    def _on_event(self, kind: str, payload: dict) -> None:
        line = self.state.on_event(kind, payload)
        if line is not None:
            for listener in self.listeners:
                listener(kind, line)

    def start(self) -> None:
        """Start training, then lower the calling thread's priority (after: threads inherit their
        creator's nice, and training must keep its own)."""
        self.thread.start()
        self.caller_nice = yield_cores_to_training()

    def restore_caller_priority(self) -> None:
        """On the thread that called start(), once it stops drawing."""
        if self.caller_nice is not None:
            restore_nice(self.caller_nice)
            self.caller_nice = None

    def _main(self) -> None:
        try:
            self.trainer.setup()
            with self.state.lock:
                self.state.device = self.trainer.backend.device
                self.state.total_steps = (
                    self.trainer.step + self.steps if self.steps else max(self.trainer.cfg.max_steps, self.trainer.step)
                )
                self.state.step = self.trainer.step
                # under MPI every step trains the whole world's batch: "tok/s now" counts it all
                self.state.tokens_per_step = self.trainer.cfg.tokens_per_step * self.trainer.world.size
            self.ready.set()
            self.trainer.run(steps=self.steps, checkpoint_every=self.checkpoint_every)
        except Exception as e:  # noqa: BLE001 - shown in the UI; the run folder keeps the last checkpoint
            with self.state.lock:
                self.state.status = "error"
                self.state.error = f"{type(e).__name__}: {e}"
            line = self.state.log("error: " + "".join(traceback.format_exception_only(type(e), e)).strip())
            for listener in self.listeners:
                listener("error", line)
        finally:
            self.ready.set()

    def request(self, command: str) -> None:
        if command == "quit":
            self.quit_requested = True
            with self.state.lock:
                if self.state.status not in ("done", "error"):
                    self.state.status = "stopping"
        self.trainer.request(command)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def kernel_stats(self) -> list[KernelStat]:
        backend = getattr(self.trainer, "backend", None)  # set once setup has made it
        return backend.kernel_stats() if backend is not None else []

    def thread_stats(self) -> list[ThreadStat]:
        backend = getattr(self.trainer, "backend", None)
        return backend.thread_stats() if backend is not None else []
