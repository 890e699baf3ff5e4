"""Dashboard widgets. Names avoid Textual's own (a class named `Bar` would take ProgressBar's CSS)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import psutil
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable, Static

from .. import analyze, machine
from ..config import Config
from ..train.console import fmt_duration


def meter(fractions: list[tuple[float, str]], width: int) -> Text:
    """A horizontal bar made of stacked segments (fraction of full width, style)."""
    text, used = Text(), 0
    for frac, style in fractions:
        n = max(0, min(width - used, round(frac * width)))
        text.append("█" * n, style=style)
        used += n
    text.append("░" * (width - used), style="dim")
    return text


@dataclass
class CoreSample:
    user: float
    system: float
    steal: float


@dataclass
class ThreadSample:
    index: int
    os_tid: int
    busy: float  # kernel work / wall time (barrier waits excluded)
    os_cpu: float  # OS-reported CPU time / wall time (spin-waits included)


class CpuSampler:
    """Measures per-core user/system/steal and per-kernel-thread busy vs OS CPU between calls."""

    def __init__(self, thread_stats):
        self.thread_stats = thread_stats  # callable -> list of loop_tui.backend.ThreadStat (a Backend.thread_stats)
        self.proc = psutil.Process(os.getpid())
        self.last_cores = psutil.cpu_times(percpu=True)
        self.last_time = time.monotonic()
        self.last_busy: dict[int, int] = {}
        self.last_os: dict[int, float] = {}

    def sample(self) -> tuple[list[CoreSample], list[ThreadSample]]:
        now, cores = time.monotonic(), psutil.cpu_times(percpu=True)
        wall = max(now - self.last_time, 1e-6)
        out_cores = []
        for a, b in zip(self.last_cores, cores, strict=False):
            total = max(sum(b) - sum(a), 1e-9)
            out_cores.append(
                CoreSample(
                    (b.user - a.user + b.nice - a.nice) / total,
                    (b.system - a.system) / total,
                    (getattr(b, "steal", 0) - getattr(a, "steal", 0)) / total,
                )
            )
        os_times = {t.id: t.user_time + t.system_time for t in self.proc.threads()}
        threads = []
        for ts in self.thread_stats():
            busy = (ts.busy_ns - self.last_busy.get(ts.index, ts.busy_ns)) / 1e9 / wall
            cpu = os_times.get(ts.os_tid)
            os_cpu = (cpu - self.last_os.get(ts.os_tid, cpu)) / wall if cpu is not None else float("nan")
            threads.append(ThreadSample(ts.index, ts.os_tid, min(busy, 1.0), min(os_cpu, 1.0)))
            self.last_busy[ts.index] = ts.busy_ns
            if cpu is not None:
                self.last_os[ts.os_tid] = cpu
        self.last_cores, self.last_time = cores, now
        return out_cores, threads


class CpuPanel(Static):
    """Per-core bars (user / system / steal) and per-kernel-thread bars (busy vs OS CPU)."""

    cores: list = []
    threads: list = []

    def show(self, cores: list, threads: list) -> None:
        """New samples: a repaint, and a layout only when the number of lines changes."""
        lines = (len(self.cores), len(self.threads))
        self.cores, self.threads = cores, threads
        self.refresh(layout=lines != (len(cores), len(threads)))

    def render(self) -> Text:
        width = max(10, self.size.width - 26)
        t = Text()
        t.append("cores ", style="bold")
        t.append("user", style="green")
        t.append(" / ")
        t.append("system", style="red")
        t.append(" / ")
        t.append("steal", style="magenta")
        t.append("\n")
        for i, c in enumerate(self.cores):
            t.append(f"cpu{i:<2d} ")
            t.append_text(meter([(c.user, "green"), (c.system, "red"), (c.steal, "magenta")], width))
            t.append(f" {100 * (c.user + c.system):3.0f}% st{100 * c.steal:2.0f}\n")
        t.append("kernel threads ", style="bold")
        t.append("busy in kernels", style="cyan")
        t.append(" vs ")
        t.append("OS CPU", style="yellow")
        t.append(" (OS CPU includes spin-waits)\n", style="dim")
        for s in self.threads:
            t.append(f"omp{s.index:<2d}")
            t.append_text(meter([(s.busy, "cyan")], width // 2))
            t.append_text(meter([(0 if math.isnan(s.os_cpu) else s.os_cpu, "yellow")], width - width // 2))
            os_txt = "  ?" if math.isnan(s.os_cpu) else f"{100 * s.os_cpu:3.0f}"
            t.append(f" {100 * s.busy:3.0f}%/{os_txt}% tid {s.os_tid}\n")
        if not self.threads:
            t.append("(no kernel work yet)\n", style="dim")
        return t


class TextLine(Static):
    """One line of markup that changes often (step, loss, status): setting `text` repaints this
    widget alone, where Static.update would lay the whole screen out again."""

    text: reactive[str] = reactive("")

    def render(self) -> Text:
        text = Text.from_markup(self.text, overflow="ellipsis")
        text.no_wrap = True
        return text


class InfoLine(Static):
    """Markup that rarely changes and may wrap (config, device, run folder): a change re-lays out."""

    text: reactive[str] = reactive("", layout=True)

    def render(self) -> Text:
        return Text.from_markup(self.text)


class SpeedPanel(Static):
    now: reactive[float] = reactive(0.0)
    avg: reactive[float] = reactive(0.0)
    mfu: reactive[float] = reactive(float("nan"))
    eta: reactive[float] = reactive(float("nan"))
    elapsed: reactive[float] = reactive(0.0)
    world: reactive[str] = reactive("", layout=True)  # under MPI: ranks, each rank's tokens/s, all-reduce time

    def render(self) -> Text:
        t = Text()
        t.append(f"{self.now:>9,.0f}", style="bold green")
        t.append(" tok/s now   ")
        t.append(f"{self.avg:,.0f}", style="bold")
        t.append(" avg\n")
        mfu = "n/a (no measured peak for this backend)" if math.isnan(self.mfu) else f"{100 * self.mfu:.1f}%"
        t.append(f"MFU {mfu} ", style="bold cyan")
        t.append(" of this machine's measured peak\n", style="dim")
        t.append(f"elapsed {fmt_duration(self.elapsed)}   ETA {fmt_duration(self.eta)}")
        if self.world:
            t.append("\n" + self.world, style="magenta")
        return t


FULL_KERNEL_TABLE = 56  # panel columns the five-column kernel table needs with every name whole


class KernelPanel(Static):
    """The kernel table: a repaint per update, a layout only when its number of rows changes."""

    table: Table | None = None

    def show(self, stats, width: int) -> None:
        rows = self.table.row_count if self.table is not None else -1
        self.table = kernel_table(stats, width)
        self.refresh(layout=rows != self.table.row_count)

    def render(self) -> Table | str:
        return self.table if self.table is not None else ""


def kernel_table(stats, width: int) -> Table:
    """Per-kernel share of time and speed in a panel `width` columns wide. Below FULL_KERNEL_TABLE
    only kernel, share of time and GFLOP/s are shown, so names and numbers stay whole."""
    total = sum(s.ns for s in stats) or 1
    narrow = width < FULL_KERNEL_TABLE
    tbl = Table(expand=True, box=None, padding=(0, 1), header_style="bold")
    tbl.add_column("kernel", justify="left", no_wrap=True, min_width=13)
    cols = (("time", 5), ("GFLOP/s", 7)) if narrow else (("calls", 7), ("time", 5), ("GFLOP/s", 7), ("GB/s", 6))
    for col, w in cols:
        tbl.add_column(col, justify="right", no_wrap=True, min_width=w)
    for s in sorted(stats, key=lambda s: -s.ns):
        if not s.calls:
            continue
        share, speed = f"{100 * s.ns / total:4.1f}%", f"{s.gflops:6.1f}"
        if narrow:
            tbl.add_row(s.name, share, speed)
        else:
            tbl.add_row(s.name, f"{s.calls:,}", share, speed, f"{s.gbytes:5.1f}")
    return tbl


def cache_fit_table(cfg: Config, caches: machine.Caches) -> DataTable:
    t: DataTable = DataTable(zebra_stripes=True, cursor_type="none", id="cachefit")
    t.add_columns("buffer", "size", "fits")
    fill_cache_fit(t, cfg, caches)
    return t


def caches_line(caches: machine.Caches) -> str:
    return " · ".join(f"{lv.name} {analyze.human_bytes(lv.size)}" for lv in caches.levels)


GROUP_LABELS = {
    "weights": "weights",
    "optimizer": "gradients + AdamW",
    "activations (sequence)": "activations, one sequence",
    "activations (batch)": "activations, the batch",
    "gemm": "GEMM panels",
    "attention": "attention",
}


def fill_cache_fit(t: DataTable, cfg: Config, caches: machine.Caches) -> None:
    """`loop analyze`'s groups, each with its total first; the weights' vectors (biases and
    LayerNorm) folded into one row. The machine's caches go in the title above (caches_line)."""
    t.clear()
    colors = {"L1d": "green", "L2": "cyan", "L3": "yellow", "DRAM": "red", "saved": "dim"}
    rep = analyze.report(cfg, caches)
    groups: dict[str, list[dict]] = {}
    for b in rep["buffers"]:
        groups.setdefault(b["group"], []).append(b)
    for group, rows in groups.items():
        total = sum(b["bytes"] * b["count"] for b in rows if b["fits"] != "saved")
        t.add_row(
            Text(GROUP_LABELS.get(group, group), style="bold"), Text(analyze.human_bytes(total), style="bold"), ""
        )
        vectors = [b for b in rows if group == "weights" and "×" not in b["shape"]]
        for b in rows:
            if b in vectors:
                continue
            count = f" ×{b['count']}" if b["count"] > 1 else ""
            fits = Text(b["fits"], style=colors[b["fits"]])
            t.add_row(f"  {b['name']}{count}", analyze.human_bytes(b["bytes"]), fits)
        if vectors:
            n = sum(b["count"] for b in vectors)
            size = sum(b["bytes"] * b["count"] for b in vectors)
            largest = max(vectors, key=lambda b: b["bytes"])
            fits = Text(largest["fits"], style=colors[largest["fits"]])
            t.add_row(f"  {n} bias/LayerNorm vectors", analyze.human_bytes(size), fits)
