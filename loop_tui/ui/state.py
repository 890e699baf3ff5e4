"""What the dashboard shows, filled by the training thread's events and read by the UI thread.

The UI is a view of the run: the same events also write metrics.jsonl, so nothing here is a
second source of truth."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class RunState:
    config_name: str = ""
    run_dir: str = ""
    device: str = ""  # e.g. "CPU, avx512, 2 threads"
    backend: str = "c"
    status: str = "starting"  # starting | training | paused | stopping | done | error
    preparing: str = ""  # data preparation progress while starting, e.g. "encoding training text 45%"
    step: int = 0
    total_steps: int = 0
    loss: float = float("nan")
    lr: float = 0.0
    grad_norm: float = 0.0
    tokens_per_s_now: float = 0.0  # last step alone
    tokens_per_s_avg: float = 0.0  # moving average, warm-up steps excluded
    mfu: float = float("nan")
    elapsed_s: float = 0.0
    eta_s: float = float("nan")
    val_loss: float | None = None
    sample: str = ""
    error: str | None = None
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    val_history: list[tuple[int, float]] = field(default_factory=list)
    speed_history: deque = field(default_factory=lambda: deque(maxlen=120))
    events: list[str] = field(default_factory=list)
    tokens_per_step: int = 1
    world_size: int = 1  # MPI ranks (the figures above count the whole world)
    rank_tokens_per_s: list[float] = field(default_factory=list)  # each rank's own speed, last logged step
    allreduce_s: float = 0.0  # gradient all-reduce time of the last logged step
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def log(self, text: str) -> str:
        with self.lock:
            self.events.append(time.strftime("%H:%M:%S ") + text)
            return self.events[-1]

    def on_event(self, kind: str, p: dict) -> str | None:
        """Trainer callback (runs on the training thread). Steady metrics update fields the UI
        polls; a rare event is also kept as a time-stamped line, which is returned."""
        with self.lock:
            if kind == "step":
                self.status = "training" if self.status in ("starting", "paused", "training") else self.status
                self.step, self.loss, self.lr, self.grad_norm = p["step"], p["loss"], p["lr"], p["grad_norm"]
                self.tokens_per_s_avg, self.mfu = p["tokens_per_s"], p["mfu"]
                self.tokens_per_s_now = self.tokens_per_step / p["step_time_s"] if p["step_time_s"] > 0 else 0.0
                self.elapsed_s, self.eta_s = p["elapsed_s"], p["eta_s"]
                self.loss_history.append((p["step"], p["loss"]))
                self.speed_history.append(self.tokens_per_s_now)
                return None
            if kind == "log":
                if "world_size" in p:
                    self.world_size, self.rank_tokens_per_s = p["world_size"], p["rank_tokens_per_s"]
                    self.allreduce_s = p["allreduce_s"]
                return None
            if kind == "progress":
                pct = 100 * p["done"] / max(1, p["total"])
                rate = f", {p['bytes_per_s'] / 1e6:.1f} MB/s" if p["bytes_per_s"] else ""
                self.preparing = f"{p['phase']} {pct:.0f}%{rate}"
                return None
            if kind == "eval":
                self.val_loss = p["val_loss"]
                self.val_history.append((p["step"], p["val_loss"]))
                text = f"eval at step {p['step']}: val loss {p['val_loss']:.4f} (perplexity {p['val_ppl']:.1f})"
            elif kind == "sample":
                self.sample = p["text"]
                text = f"sample at step {p['step']}"
            elif kind == "checkpoint":
                text = f"checkpoint ({p['reason']}) at step {p['step']}: {p['path']}"
            elif kind == "done":
                self.status = "done" if self.status != "error" else self.status
                text = f"training stopped at step {p['step']}"
            elif kind in ("info", "warning"):
                if p["message"] in ("paused", "resumed"):
                    self.status = "paused" if p["message"] == "paused" else "training"
                text = ("warning: " if kind == "warning" else "") + p["message"]
            else:
                return None
            self.events.append(time.strftime("%H:%M:%S ") + text)
            return self.events[-1]
