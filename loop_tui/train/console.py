"""Headless progress: one line per log interval, plus a live status line on a terminal."""

from __future__ import annotations

import math
import sys
import time


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
        self.last_status = 0.0
        self.last_progress_line = 0.0

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, kind: str, p: dict) -> None:
        if kind == "step" and self.tty and time.monotonic() - self.last_status > 0.2:
            self.last_status = time.monotonic()
            frac = p["step"] / max(1, self.total)
            bar = "█" * int(frac * 30) + "░" * (30 - int(frac * 30))
            self.stream.write(
                f"\r\033[K{bar} {p['step']}/{self.total} loss {p['loss']:.3f} "
                f"{p['tokens_per_s']:,.0f} tok/s ETA {fmt_duration(p['eta_s'])}"
            )
            self.stream.flush()
        elif kind == "progress":
            pct = 100 * p["done"] / max(1, p["total"])
            merging = p["phase"] == "training tokenizer" and p["done"] >= p["total"]
            text = (
                f"{p['phase']}: all {p['total'] / 1e6:,.1f} MB read, computing merges…"
                if merging
                else f"{p['phase']}: {pct:3.0f}% of {p['total'] / 1e6:,.1f} MB, {p['bytes_per_s'] / 1e6:,.1f} MB/s, "
                f"ETA {fmt_duration(p['eta_s'])}"
            )
            if self.tty:
                self.stream.write("\r\033[K" + text)
                self.stream.flush()
            elif time.monotonic() - self.last_progress_line > 10 or (p["done"] >= p["total"] and not merging):
                self.last_progress_line = time.monotonic()
                self._line(text)
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
