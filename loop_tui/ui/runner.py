"""Runs a Trainer on one long-lived thread (libgomp keeps its pool, and so the OpenMP thread ids
the dashboard shows, per calling thread) and publishes into a RunState."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from ..backend import KernelStat
from ..config import Config
from ..train.trainer import Trainer
from .state import RunState


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

    def _on_event(self, kind: str, payload: dict) -> None:
        line = self.state.on_event(kind, payload)
        if line is not None:
            for listener in self.listeners:
                listener(kind, line)

    def start(self) -> None:
        self.thread.start()

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
