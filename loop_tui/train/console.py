"""Headless progress: one line per log interval (and per evaluation, sample, checkpoint), plus, on a
terminal, a live rich.progress bar under them (step, loss, tokens/s, ETA; during data preparation
the phase, MB/s and its ETA). Piped or redirected output gets the lines only, whole and unwrapped,
with data preparation at most every 10 s, so logs stay one line per event."""

from __future__ import annotations

import math
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

REFRESH_S = 0.2  # the bar is redrawn at most this often (no refresh thread: training owns the cores)


def fmt_duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class ConsoleReporter:
    def __init__(self, total_steps_hint: int, stream=None):
        self.stream = stream or sys.stdout  # looked up now: sys.stdout may have been replaced since import
        self.tty = self.stream.isatty()
        self.total = total_steps_hint
        self.last_refresh = 0.0
        self.last_progress_line = 0.0
        self.progress: Progress | None = None  # the live bar, while one is shown (terminal only)
        self.task = TaskID(0)

    def _bar(self) -> Progress:
        if self.progress is None:
            console = Console(file=self.stream, force_terminal=True, highlight=False)
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=30),
                TextColumn("{task.fields[status]}"),
                console=console,
                auto_refresh=False,
                transient=True,
            )
            self.task = self.progress.add_task("", total=1, status="")
            self.progress.start()
        return self.progress

    def _show(self, description: str, done: float, total: float, status: str) -> None:
        bar = self._bar()
        bar.update(self.task, description=description, completed=done, total=max(total, 1), status=status)
        if time.monotonic() - self.last_refresh > REFRESH_S or done >= total:
            self.last_refresh = time.monotonic()
            bar.refresh()

    def close(self) -> None:
        """Take the bar off the terminal (the lines stay)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _line(self, text: str) -> None:
        if self.progress is not None:  # printed above the live bar
            self.progress.console.print(text, markup=False, soft_wrap=True)
            self.progress.refresh()
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def __call__(self, kind: str, p: dict) -> None:
        if kind == "step" and self.tty:
            self._show(
                f"step {p['step']}/{self.total}",
                p["step"],
                self.total,
                f"loss {p['loss']:.3f} · {p['tokens_per_s']:,.0f} tok/s · ETA {fmt_duration(p['eta_s'])}",
            )
        elif kind == "progress":
            pct = 100 * p["done"] / max(1, p["total"])
            merging = p["phase"] == "training tokenizer" and p["done"] >= p["total"]
            status = (
                f"all {p['total'] / 1e6:,.1f} MB read, computing merges…"
                if merging
                else f"{pct:3.0f}% of {p['total'] / 1e6:,.1f} MB, {p['bytes_per_s'] / 1e6:,.1f} MB/s, "
                f"ETA {fmt_duration(p['eta_s'])}"
            )
            if self.tty:
                self._show(p["phase"], p["done"], p["total"], status)
            elif time.monotonic() - self.last_progress_line > 10 or (p["done"] >= p["total"] and not merging):
                self.last_progress_line = time.monotonic()
                self._line(f"{p['phase']}: {status}")
        elif kind == "log":
            mfu = f"{100 * p['mfu']:.1f}%" if math.isfinite(p["mfu"]) else "n/a"
            self._line(
                f"step {p['step']:>6}/{self.total} | loss {p['loss']:.4f} | lr {p['lr']:.2e} | "
                f"{p['tokens_per_s']:,.0f} tok/s | MFU {mfu} | elapsed {fmt_duration(p['elapsed_s'])} | "
                f"ETA {fmt_duration(p['eta_s'])}"
                + (
                    f" | {p['world_size']} ranks "
                    + "/".join(f"{t:,.0f}" for t in p["rank_tokens_per_s"])
                    + f" tok/s, all-reduce {1e3 * p['allreduce_s']:.1f} ms"
                    if "world_size" in p
                    else ""
                )
            )
        elif kind == "eval":
            self._line(f"eval  step {p['step']}: val loss {p['val_loss']:.4f}, perplexity {p['val_ppl']:.1f}")
        elif kind == "sample":
            text = p["text"].replace("\n", " ⏎ ")
            self._line(f"sample step {p['step']}: {text[:300]}")
        elif kind == "checkpoint":
            self._line(f"checkpoint ({p['reason']}) step {p['step']} -> {p['path']}")
        elif kind in ("info", "warning"):
            self._line(("warning: " if kind == "warning" else "") + p["message"])
        elif kind == "done":
            self.close()


def detach_from_terminal() -> None:
    """After SIGHUP the terminal is gone and writing to it fails (EIO): what this process still
    writes (progress, the dashboard's last frames, the summary) goes to /dev/null instead; output
    to pipes and files is kept."""
    import os
    import stat

    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        try:  # a hung-up terminal no longer passes isatty(): keep only what is not a device
            mode = os.fstat(fd).st_mode
        except OSError:
            mode = 0
        if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)):
            os.dup2(devnull, fd)
    os.close(devnull)
