"""The live dashboard of one training run: progress, speed and loss, CPU and kernels, cache fit,
samples and events; four panels in a 2×2 grid, or one at a time on a small terminal."""

from __future__ import annotations

import math
import sys
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, RichLog, Sparkline, Static
from textual_plotext import PlotextPlot

from .. import machine
from ..backend import KernelStat
from ..config import Config
from .runner import TrainingRunner
from .state import RunState
from .widgets import (
    CpuPanel,
    CpuSampler,
    InfoLine,
    KernelPanel,
    SpeedPanel,
    TextLine,
    cache_fit_table,
    caches_line,
)


class TrainingEvent(Message):
    """A rare event of the run (checkpoint, eval, sample, info, warning, done, error), posted by the
    training thread (post_message is thread-safe); steady metrics are polled from RunState."""

    def __init__(self, kind: str, line: str) -> None:
        super().__init__()
        self.kind, self.line = kind, line


TICK_S = 1.0  # text (step, loss, speed, status) refresh
HEAVY_EVERY = 3  # plot, kernel table, CPU bars: every 3rd tick (3 s)
COMPACT_BELOW = (120, 36)  # terminal (columns, rows) under which panels are shown one at a time
PANELS = (("speed-box", "speed"), ("cpu-box", "CPU"), ("cache-box", "caches"), ("log-box", "output"))


def budget_line(minutes: float, elapsed_s: float) -> str:
    left = int(max(0.0, minutes * 60 - elapsed_s))
    clock = f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}" if left >= 3600 else f"{left // 60}:{left % 60:02d}"
    return f"budget {minutes:g} min · {clock} left"


def world_line(size: int, rank_tokens_per_s: list[float], allreduce_s: float) -> str:
    """Under MPI: the world size, each rank's own tokens/s and the all-reduce time per step."""
    if size <= 1:
        return ""
    each = " / ".join(f"{t:,.0f}" for t in rank_tokens_per_s) or "…"
    return f"MPI {size} ranks · per rank {each} tok/s · all-reduce {1e3 * allreduce_s:.0f} ms/step"


class DashboardScreen(Screen):
    """The live dashboard. Training runs on the runner's own long-lived thread rather than a Textual
    worker: it must outlive the app (run_dashboard waits for its final save after the UI closes),
    and libgomp keeps its OpenMP pool per calling thread."""

    BINDINGS = [
        Binding("p", "pause", "Pause"),
        Binding("s", "save", "Save"),
        Binding("g", "generate", "Sample"),
        Binding("q", "quit_training", "Quit (saves)"),
        Binding("tab", "next_panel", "Next panel", priority=True),
        *(Binding(str(i + 1), f"panel({i})", label, show=False) for i, (_, label) in enumerate(PANELS)),
        Binding("ctrl+c", "quit_training", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        runner: TrainingRunner | None,
        caches: machine.Caches,
        state: RunState | None = None,
        live: bool = True,
        cfg: Config | None = None,
        kernel_stats: list[KernelStat] | None = None,
    ):
        """live=False (snapshot tests): render `state` (and `kernel_stats`) once, start no thread
        and no timer."""
        super().__init__()
        self.runner, self.caches, self.live = runner, caches, live
        shown_state, shown_cfg = (runner.state, runner.trainer.cfg) if runner else (state, cfg)
        if shown_state is None or shown_cfg is None:
            raise ValueError("DashboardScreen needs a runner, or a state and a config to show")
        self.state: RunState = shown_state
        self.cfg: Config = shown_cfg
        self.shown_events = 0
        self.ticks = 0
        self.drawn_losses = (-1, -1)  # (loss points, val points) the plot last showed
        self.sampler: CpuSampler | None = None
        self.shown = 0  # the panel shown in the compact layout
        self.recorded_kernels = kernel_stats or []
        self.shown_sample: str | None = None
        self.drawing = True  # False: the timer leaves the screen as it is (benchmarks/dashboard_overhead.py)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Vertical(id="dash"):
            yield InfoLine(id="run-info")
            with Horizontal(id="progress-row"):
                yield ProgressBar(id="progress", show_eta=False)
                yield TextLine(id="status")
            yield Static(id="panel-tabs")
            with Grid(id="panels"):
                with Vertical(classes="panel", id="speed-box"):
                    yield SpeedPanel(id="speed")
                    yield Sparkline([], id="speed-history")
                    yield PlotextPlot(id="loss-plot")
                with VerticalScroll(classes="panel", id="cpu-box"):
                    yield CpuPanel(id="cpu")
                    yield KernelPanel(id="kernels")
                with Vertical(classes="panel", id="cache-box"):
                    yield cache_fit_table(self.cfg, self.caches)
                with Vertical(classes="panel", id="log-box"):
                    yield Label("Latest sample", classes="title")
                    yield Static("", id="sample")
                    yield Label("Events", classes="title")
                    yield RichLog(id="events", wrap=True, markup=False, max_lines=500, min_width=20)
        yield Footer()

    def on_resize(self) -> None:
        """Below 120×36 one panel at a time (keys 1-4 or tab), else all four in a 2×2 grid: a
        panel never scrolls the screen, and its text is never cut."""
        self.set_class(self.size.width < COMPACT_BELOW[0] or self.size.height < COMPACT_BELOW[1], "compact")
        self.show_panel(self.shown)
        self.refresh_bindings()
        self.call_after_refresh(self.rewrap_events)

    def append_events(self) -> None:
        """The run's events not yet in the log (RunState keeps them all; messages only wake us)."""
        with self.state.lock:
            new = self.state.events[self.shown_events :]
            self.shown_events = len(self.state.events)
        log = self.query_one("#events", RichLog)
        for line in new:
            log.write(line)

    def rewrap_events(self) -> None:
        """RichLog wraps a line once, at the width it has when written: after a resize, write the
        recent events again at the new width."""
        log = self.query_one("#events", RichLog)
        if log.size.width == 0:  # hidden (another panel shown): done when shown
            return
        log.clear()
        with self.state.lock:
            self.shown_events = max(0, len(self.state.events) - 500)
        self.append_events()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Panel keys only in the compact layout (the footer hides them otherwise)."""
        if action in ("next_panel", "panel"):
            return self.has_class("compact")
        return True

    def show_panel(self, index: int) -> None:
        self.shown = index % len(PANELS)
        for i, (panel_id, _) in enumerate(PANELS):
            self.query_one(f"#{panel_id}").set_class(i == self.shown, "shown")
        tabs = Text()
        for i, (_, label) in enumerate(PANELS):
            tabs.append(f" {i + 1} {label} ", style="reverse bold" if i == self.shown else "dim")
            tabs.append(" ")
        tabs.append("(tab: next)", style="dim")
        self.query_one("#panel-tabs", Static).update(tabs)
        self.call_after_refresh(self.refresh_view)  # a panel shown again is drawn at its new width
        self.call_after_refresh(self.rewrap_events)

    def action_panel(self, index: int) -> None:
        self.show_panel(index)

    def action_next_panel(self) -> None:
        self.show_panel(self.shown + 1)

    def on_mount(self) -> None:
        self.title = f"loop_tui — {self.cfg.name}"
        self.query_one("#speed-box").border_title = "speed"
        self.query_one("#cpu-box").border_title = "CPU"
        self.query_one("#cache-box").border_title = f"cache fit · {caches_line(self.caches)}"
        self.query_one("#log-box").border_title = "output"
        self.show_panel(0)
        if self.runner:
            self.runner.listeners.append(self.post_training_event)
            self.runner.start()  # and this (UI) thread yields the cores to it
            self.sampler = CpuSampler(self.runner.thread_stats)
        self.refresh_view()
        if self.live:
            # the training thread needs the GIL for a moment between kernel calls: hand it over
            # after 1 ms of UI work instead of Python's default 5 ms
            sys.setswitchinterval(0.001)
            self.set_interval(TICK_S, self.tick)

    def on_unmount(self) -> None:
        if self.runner:
            self.runner.restore_caller_priority()

    def tick(self) -> None:
        # an exception escaping a timer callback would kill the app: report it instead
        try:
            self.ticks += 1
            if self.drawing:
                self.refresh_view(heavy=self.ticks % HEAVY_EVERY == 0)
            if self.runner and self.runner.quit_requested and not self.runner.running:
                self.app.exit(0)
        except Exception as e:  # noqa: BLE001 - an exception in a timer callback would kill the app
            self.query_one("#events", RichLog).write(f"UI error: {type(e).__name__}: {e}")

    def refresh_view(self, heavy: bool = True) -> None:
        """Cheap text every tick; the plot, the kernel table and the CPU bars (`heavy`) every
        HEAVY_EVERY ticks, the plot only when it has new points: the UI thread shares the GIL and
        the cores with training, and every millisecond it renders is taken from the kernels."""
        st = self.state
        with st.lock:
            snap: dict[str, Any] = dict(
                step=st.step,
                total=st.total_steps,
                status=st.status,
                now=st.tokens_per_s_now,
                avg=st.tokens_per_s_avg,
                mfu=st.mfu,
                eta=st.eta_s,
                elapsed=st.elapsed_s,
                loss=st.loss,
                val=st.val_loss,
                device=st.device,
                error=st.error,
                world=world_line(st.world_size, st.rank_tokens_per_s, st.allreduce_s),
            )
            if heavy:  # the histories are copied only when drawn (they grow with the run)
                drawn = (len(st.loss_history), len(st.val_history))
                snap.update(
                    sample=st.sample,
                    speeds=list(st.speed_history),
                    losses=list(st.loss_history) if drawn != self.drawn_losses else None,
                    vals=list(st.val_history),
                )
        # TextLine and SpeedPanel repaint themselves alone; a Static.update would re-layout the screen
        self.query_one(
            "#run-info", InfoLine
        ).text = f"[b]{self.cfg.name}[/b] · backend {st.backend} · {snap['device'] or 'starting…'} · run {st.run_dir}"
        if self.cfg.budget_minutes:  # a `loop plan` config: its time budget, counted down in training time
            self.sub_title = budget_line(self.cfg.budget_minutes, snap["elapsed"])
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=max(1, snap["total"]), progress=snap["step"])
        val = f" · val {snap['val']:.3f}" if snap["val"] is not None else ""
        loss = "" if math.isnan(snap["loss"]) else f" · loss {snap['loss']:.3f}"
        preparing = f"preparing data: {st.preparing}…" if st.preparing else "preparing data…"
        status = {"starting": preparing, "stopping": "finishing the step and saving…"}.get(
            snap["status"], snap["status"]
        )
        self.query_one("#status", TextLine).text = escape(
            f"  step {snap['step']}/{snap['total']}{loss}{val} · {status}"
            + (f" · {snap['error']}" if snap["error"] else "")
        )
        sp = self.query_one(SpeedPanel)
        sp.now, sp.avg, sp.mfu, sp.eta, sp.elapsed = snap["now"], snap["avg"], snap["mfu"], snap["eta"], snap["elapsed"]
        sp.world = snap["world"]
        if not heavy:
            return
        self.query_one("#speed-history", Sparkline).data = snap["speeds"] or [0]
        if snap["losses"] is not None:
            self.draw_loss(snap["losses"], snap["vals"])
            self.drawn_losses = (len(snap["losses"]), len(snap["vals"]))
        if self.sampler and self.runner:
            cores, threads = self.sampler.sample()
            cpu = self.query_one(CpuPanel)
            cpu.show(cores, threads)
        stats = self.runner.kernel_stats() if self.runner else self.recorded_kernels
        if stats:
            width = self.query_one("#cpu-box").content_region.width
            self.query_one("#kernels", KernelPanel).show(stats, width)
        sample = snap["sample"] or "(first sample after sample_every steps; g for one now)"
        if sample != self.shown_sample:  # its height may change: the one update that re-lays out
            self.shown_sample = sample
            self.query_one("#sample", Static).update(sample)
        self.append_events()

    def post_training_event(self, kind: str, line: str) -> None:
        """Called on the training thread; post_message is thread-safe."""
        self.post_message(TrainingEvent(kind, line))

    def on_training_event(self, event: TrainingEvent) -> None:
        self.append_events()
        if event.kind in ("sample", "done", "error"):
            self.refresh_view()

    def draw_loss(self, losses, vals) -> None:
        widget = self.query_one("#loss-plot", PlotextPlot)
        plt = widget.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("loss (raw faint · smoothed · validation ●)")
        if losses:
            xs, ys = [s for s, _ in losses], [l for _, l in losses]
            plt.plot(xs, ys, color="gray", marker="braille")
            ema, smooth = ys[0], []
            for y in ys:
                ema = 0.9 * ema + 0.1 * y
                smooth.append(ema)
            plt.plot(xs, smooth, color="orange", marker="braille")
        if vals:
            plt.scatter([s for s, _ in vals], [v for _, v in vals], color="cyan", marker="●")
        widget.refresh()

    # -- keys
    def action_pause(self) -> None:
        if self.runner:
            self.runner.request("toggle_pause")

    def action_save(self) -> None:
        if self.runner:
            self.runner.request("save")

    def action_generate(self) -> None:
        if self.runner:
            self.runner.request("sample")

    def action_quit_training(self) -> None:
        if not self.runner or not self.runner.running:
            self.app.exit(0)
            return
        if self.runner.quit_requested:  # pressed again while the step finishes: abort without saving
            self.runner.trainer.abort = True
            self.runner.aborted = True
            self.app.exit(130)
            return
        self.runner.request("quit")
        self.notify("finishing this step and saving; press Ctrl-C again to abort without saving")
