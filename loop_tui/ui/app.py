"""loop_tui's terminal app: pick a config, start training, watch it.

loop tui                 -> PickerScreen
loop train CONFIG        -> DashboardScreen, training starts at once (on a terminal)
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import orjson
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    OptionList,
    ProgressBar,
    RichLog,
    Sparkline,
    Static,
)
from textual_plotext import PlotextPlot

from .. import analyze, machine
from ..config import CONFIG_DIR, Config, ConfigError, from_dict, load_config, shipped_configs
from ..model.layout import parameter_count, training_flops_per_token
from .runner import TrainingRunner
from .state import RunState
from .widgets import CpuPanel, CpuSampler, SpeedPanel, kernel_table

EDITABLE = (
    "d_model",
    "num_heads",
    "num_layers",
    "d_ff",
    "batch_size",
    "max_length",
    "vocab_size",
    "max_steps",
    "learning_rate",
)


def cache_fit_table(cfg: Config, caches: machine.Caches) -> DataTable:
    t: DataTable = DataTable(zebra_stripes=True, cursor_type="none", id="cachefit")
    t.add_columns("buffer", "size", "fits")
    fill_cache_fit(t, cfg, caches)
    return t


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
    LayerNorm) folded into one row; the machine's caches on the first line."""
    t.clear()
    colors = {"L1d": "green", "L2": "cyan", "L3": "yellow", "DRAM": "red", "saved": "dim"}
    rep = analyze.report(cfg, caches)
    levels = " · ".join(f"{lv.name} {analyze.human_bytes(lv.size)}" for lv in caches.levels)
    t.add_row(Text(f"this machine: {levels}", style="bold"), "", "")
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
            t.add_row(f"  {n} vectors (biases, LayerNorm)", analyze.human_bytes(size), fits)


def summary(cfg: Config) -> Table:
    mem = analyze.training_memory(cfg)
    t = Table(box=None, show_header=False, padding=(0, 1))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("model", f"d {cfg.d_model} · heads {cfg.num_heads} · layers {cfg.num_layers} · d_ff {cfg.d_ff}")
    t.add_row("batch", f"{cfg.batch_size} × {cfg.max_length} tokens · vocab {cfg.vocab_size:,}")
    t.add_row("parameters", f"{parameter_count(cfg) / 1e6:.2f} M")
    t.add_row("FLOPs/token", f"{training_flops_per_token(cfg) / 1e6:.1f} M (training)")
    t.add_row("memory", f"{analyze.human_bytes(mem['total'])} (weights, grads, AdamW, activations)")
    t.add_row("training", f"{cfg.max_steps} steps · lr {cfg.learning_rate:g} · backend {cfg.backend}")
    return t


# ---------------------------------------------------------------------------- picker
class PickerScreen(Screen):
    BINDINGS = [
        Binding("enter", "start", "Start", show=True),
        Binding("r", "runs", "Runs"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, caches: machine.Caches, extra: list[Path] | None = None):
        """extra: config files from anywhere, listed after the shipped ones (by path)."""
        super().__init__()
        self.caches = caches
        self.configs = shipped_configs() + [Path(p) for p in (extra or [])]
        self.cfg: Config | None = None
        self.invalid: dict[str, str] = {}  # field -> why its text is not usable (Start is refused)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="picker"):
            with Vertical(id="picker-left"):
                yield Label("Configs", classes="title")
                yield OptionList(
                    *[p.stem if p.parent == CONFIG_DIR else str(p) for p in self.configs], id="config-list"
                )
                yield Button("Start training (Enter)", id="start", variant="success")
                yield Label("Data folder", classes="title")
                yield Input(placeholder="blank: Python's docs", id="data")
                yield Label("Save edited config as", classes="title")
                with Horizontal(classes="row"):
                    yield Input(placeholder="my_config", id="save-name")
                    yield Button("Save", id="save")
            with VerticalScroll(id="picker-right"):
                yield Static(id="preview")
                yield Label("", id="picker-error")
                with Vertical(id="fields"):
                    for name in EDITABLE:
                        field = Input(id=f"f-{name}", classes="field")
                        field.border_title = name
                        yield field
                yield Label("Cache fit on this machine", classes="title")
                table: DataTable = DataTable(zebra_stripes=True, cursor_type="none", id="cachefit")
                table.add_columns("buffer", "size", "fits")
                yield table
        yield Footer()

    def action_runs(self) -> None:
        """The runs under runs/ (where trainings started here go): view or overlay them."""
        from ..train.runs import RUNS
        from .runs_screen import RunsScreen

        self.app.push_screen(RunsScreen(RUNS))

    def on_resize(self) -> None:
        """At 80×24: two columns of fields (whole labels) and a shorter config list (Start in view)."""
        self.query_one("#fields").styles.grid_size_columns = 2 if self.size.width < 110 else 3
        self.query_one("#config-list").styles.max_height = 6 if self.size.height < 30 else 12

    def on_mount(self) -> None:
        self.title = "loop_tui — pick a config"
        names = [p.stem for p in self.configs]
        extra = len(self.configs) > len(shipped_configs())
        self.query_one(OptionList).highlighted = (
            len(names) - 1 if extra else names.index("default") if "default" in names else 0
        )

    @on(OptionList.OptionHighlighted)
    def chosen(self, event: OptionList.OptionHighlighted) -> None:
        self.set_config(load_config(str(self.configs[event.option_index])), fill=True)

    def set_config(self, cfg: Config, fill: bool = False) -> None:
        self.cfg = cfg
        self.query_one("#preview", Static).update(summary(cfg))
        fill_cache_fit(self.query_one("#cachefit", DataTable), cfg, self.caches)
        if fill:
            self.invalid.clear()
            for name in EDITABLE:
                self.query_one(f"#f-{name}", Input).value = str(getattr(cfg, name))
        self.show_errors()

    def show_errors(self) -> None:
        """The error line lists what is wrong now: a fixed field's error goes away."""
        text = "; ".join(self.invalid.values())
        self.query_one("#picker-error", Label).update(f"[red]{text}[/]" if text else "")

    @on(Input.Changed)
    def edited(self, event: Input.Changed) -> None:
        input_id = event.input.id or ""
        if not input_id.startswith("f-") or self.cfg is None:
            return
        name = input_id[2:]
        raw = event.value.strip()
        self.invalid.pop(name, None)
        try:
            value = float(raw) if name == "learning_rate" else int(raw)
        except ValueError:
            self.invalid[name] = f"{name}: {raw!r} is not a number"
            self.show_errors()
            return
        if getattr(self.cfg, name) == value:
            self.show_errors()
            return
        try:
            cfg = from_dict({**self.cfg.to_dict(), name: value}, "edited config")
        except ConfigError as e:
            self.invalid[name] = str(e).replace("edited config: field ", "")
            self.show_errors()
            return
        self.set_config(cfg)

    @on(OptionList.OptionSelected)
    def picked(self, event: OptionList.OptionSelected) -> None:
        """Enter on a config starts it (the list takes Enter before the screen's binding)."""
        self.action_start()

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        if (event.input.id or "").startswith("f-") or event.input.id == "data":
            self.action_start()

    @on(Button.Pressed, "#save")
    def save(self) -> None:
        name = self.query_one("#save-name", Input).value.strip()
        err = self.query_one("#picker-error", Label)
        if self.cfg is None:
            return
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name or ""):
            err.update("[red]save as: use letters, digits, _ and - only[/]")
            return
        path = CONFIG_DIR / f"{name}.json"
        if path.exists():
            err.update(f"[red]save as: {path} exists; shipped and saved configs are never overwritten[/]")
            return
        data = {k: v for k, v in self.cfg.replace(name=name).to_dict().items() if v is not None}
        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        err.update(f"[green]saved {path}[/]")

    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        if self.cfg is None:
            return
        if self.invalid:  # never train the last valid config behind a field that shows an error
            fields = ", ".join(self.invalid)
            self.query_one("#picker-error", Label).update(
                f"[red]not started: fix {fields} first ({'; '.join(self.invalid.values())})[/]"
            )
            return
        data = self.query_one("#data", Input).value.strip() or None
        if data and not Path(data).is_dir():
            self.query_one("#picker-error", Label).update(f"[red]data folder {data} does not exist[/]")
            return
        from ..train.runs import default_run_dir

        self.app.push_screen(
            DashboardScreen(TrainingRunner(self.cfg, default_run_dir(self.cfg.name), data=data), self.caches)
        )


# ---------------------------------------------------------------------------- dashboard
class TrainingEvent(Message):
    """A rare event of the run (checkpoint, eval, sample, info, warning, done, error), posted by the
    training thread (post_message is thread-safe); steady metrics are polled from RunState."""

    def __init__(self, kind: str, line: str) -> None:
        super().__init__()
        self.kind, self.line = kind, line


TICK_S = 0.5  # text (step, loss, speed, status) refresh
HEAVY_EVERY = 4  # plot, kernel table, CPU bars: every 4th tick (2 s)


class DashboardScreen(Screen):
    """The live dashboard. Training runs on the runner's own long-lived thread rather than a Textual
    worker: it must outlive the app (run_dashboard waits for its final save after the UI closes),
    and libgomp keeps its OpenMP pool per calling thread."""

    BINDINGS = [
        Binding("p", "pause", "Pause/resume"),
        Binding("s", "save", "Save checkpoint"),
        Binding("g", "generate", "Generate sample"),
        Binding("q", "quit_training", "Quit (saves)"),
        Binding("ctrl+c", "quit_training", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        runner: TrainingRunner | None,
        caches: machine.Caches,
        state: RunState | None = None,
        live: bool = True,
        cfg: Config | None = None,
    ):
        """live=False (snapshot tests): render `state` once, start no thread and no timer."""
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

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with VerticalScroll(id="dash"):
            yield Static(id="run-info")
            with Horizontal(id="progress-row"):
                yield ProgressBar(id="progress", show_eta=False)
                yield Label("", id="status")
            with Horizontal(classes="row"):
                with Vertical(classes="panel", id="speed-box"):
                    yield SpeedPanel(id="speed")
                    yield Sparkline([], id="speed-history")
                    yield PlotextPlot(id="loss-plot")
                with Vertical(classes="panel", id="cpu-box"):
                    yield CpuPanel(id="cpu")
                    yield Static(id="kernels")
            with Horizontal(classes="row"):
                with Vertical(classes="panel", id="cache-box"):
                    yield Label("Cache fit of this config", classes="title")
                    yield cache_fit_table(self.cfg, self.caches)
                with Vertical(classes="panel", id="log-box"):
                    yield Label("Latest sample", classes="title")
                    yield Static("", id="sample")
                    yield Label("Events", classes="title")
                    yield RichLog(id="events", wrap=True, markup=False, max_lines=500)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"loop_tui — {self.cfg.name}"
        self.query_one("#speed-box").border_title = "speed"
        self.query_one("#cpu-box").border_title = "CPU"
        self.query_one("#cache-box").border_title = "caches"
        self.query_one("#log-box").border_title = "output"
        if self.runner:
            self.runner.listeners.append(self.post_training_event)
            self.runner.start()
            from .. import kernels

            self.sampler = CpuSampler(kernels.thread_stats)
        self.refresh_view()
        if self.live:
            # the training thread needs the GIL for a moment between kernel calls: hand it over
            # after 1 ms of UI work instead of Python's default 5 ms
            sys.setswitchinterval(0.001)
            self.set_interval(TICK_S, self.tick)

    def tick(self) -> None:
        # an exception escaping a timer callback would kill the app: report it instead
        try:
            self.ticks += 1
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
                lr=st.lr,
                val=st.val_loss,
                sample=st.sample,
                device=st.device,
                error=st.error,
                losses=list(st.loss_history),
                vals=list(st.val_history),
                speeds=list(st.speed_history),
                events=st.events[self.shown_events :],
            )
            self.shown_events = len(st.events)
        info = Text()
        info.append(f"{self.cfg.name}", style="bold")
        info.append(f" · backend {st.backend} · {snap['device'] or 'starting…'} · run {st.run_dir}")
        self.query_one("#run-info", Static).update(info)
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=max(1, snap["total"]), progress=snap["step"])
        val = f" · val {snap['val']:.3f}" if snap["val"] is not None else ""
        loss = "" if math.isnan(snap["loss"]) else f" · loss {snap['loss']:.3f}"
        preparing = f"preparing data: {st.preparing}…" if st.preparing else "preparing data…"
        status = {"starting": preparing, "stopping": "finishing the step and saving…"}.get(
            snap["status"], snap["status"]
        )
        self.query_one("#status", Label).update(
            f"  step {snap['step']}/{snap['total']}{loss}{val} · {status}"
            + (f" · {snap['error']}" if snap["error"] else "")
        )
        sp = self.query_one(SpeedPanel)
        sp.now, sp.avg, sp.mfu, sp.eta, sp.elapsed = snap["now"], snap["avg"], snap["mfu"], snap["eta"], snap["elapsed"]
        if not heavy:
            return
        self.query_one("#speed-history", Sparkline).data = snap["speeds"] or [0]
        if (len(snap["losses"]), len(snap["vals"])) != self.drawn_losses:
            self.draw_loss(snap["losses"], snap["vals"])
            self.drawn_losses = (len(snap["losses"]), len(snap["vals"]))
        if self.sampler and self.runner:
            cores, threads = self.sampler.sample()
            cpu = self.query_one(CpuPanel)
            cpu.cores, cpu.threads = cores, threads
            self.query_one("#kernels", Static).update(kernel_table(self.runner.kernel_stats(), self.size.width))
        self.query_one("#sample", Static).update(
            snap["sample"] or "(first sample after sample_every steps; g for one now)"
        )
        if not self.runner:  # a static view (snapshots) shows the recorded events; a live one gets messages
            log = self.query_one("#events", RichLog)
            for e in snap["events"]:
                log.write(e)

    def post_training_event(self, kind: str, line: str) -> None:
        """Called on the training thread; post_message is thread-safe."""
        self.post_message(TrainingEvent(kind, line))

    def on_training_event(self, event: TrainingEvent) -> None:
        self.query_one("#events", RichLog).write(event.line)
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
