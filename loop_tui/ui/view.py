"""`loop view RUN [RUN ...]`: runs rebuilt from their metrics.jsonl, overlaid: loss and validation
loss against step (or wall time, key `x`), tokens/s, with a legend (for an MPI run: the world size,
each rank's tokens/s and the all-reduce time; `mpiexec` gives ranks pipes, not a terminal, so this
is how an MPI run is watched live). A run that is still training
is followed live: its file is read on from where the last read stopped, once a second. The viewer
only reads, so it can watch a run another process is training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Static
from textual_plotext import PlotextPlot

from ..train.runs import fmt, summarize

LEGEND_COLUMNS = ("", "run", "config", "steps", "loss", "best val", "tok/s", "status")
NARROW_LEGEND_COLUMNS = ("", "run", "steps", "best val", "status")  # below 120 columns: what fits 80 whole
COLORS = ("orange", "cyan", "green", "magenta", "yellow", "blue", "red", "white")


@dataclass
class Series:
    """One run's metrics, read incrementally."""

    path: Path
    offset: int = 0  # bytes of metrics.jsonl already read
    steps: list[int] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    tps: list[float] = field(default_factory=list)
    val: list[tuple[int, float, float]] = field(default_factory=list)  # step, elapsed, val loss
    ranks: str = ""  # under MPI: world size, each rank's tokens/s, all-reduce time (last record)

    def read_more(self) -> bool:
        """Records appended since the last call (a line still being written waits); True if any."""
        try:
            with open(self.path / "metrics.jsonl", "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return False
        end = data.rfind(b"\n") + 1
        self.offset += end
        got = False
        for line in data[:end].splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            got = True
            if "loss" in rec:
                self.steps.append(rec["step"])
                self.elapsed.append(rec.get("elapsed_s", 0.0))
                self.loss.append(rec["loss"])
                self.tps.append(rec.get("tokens_per_s", 0.0))
                if "world_size" in rec:
                    each = "/".join(f"{t:,.0f}" for t in rec["rank_tokens_per_s"])
                    self.ranks = (
                        f"{rec['world_size']} ranks: {each} tok/s, all-reduce {1e3 * rec['allreduce_s']:.0f} ms"
                    )
            elif "val_loss" in rec:
                self.val.append((rec["step"], rec.get("elapsed_s", 0.0), rec["val_loss"]))
        return got


class ViewScreen(Screen):
    BINDINGS = [Binding("x", "toggle_x", "Step / time"), Binding("q", "app.quit", "Quit")]

    def __init__(self, runs: list[Path]):
        super().__init__()
        self.series = [Series(Path(r)) for r in runs]
        self.by_time = False
        self.drawn = False

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Vertical(id="view"):
            yield Static(id="legend")
            yield PlotextPlot(id="view-loss")
            yield PlotextPlot(id="view-speed")
        yield Footer()

    def on_mount(self) -> None:
        names = [s.path.name for s in self.series]
        self.title = f"loop_tui — {names[0]}" if len(names) == 1 else f"loop_tui — {len(names)} runs"
        self.poll()
        self.set_interval(1.0, self.poll)

    def on_resize(self) -> None:
        if self.drawn:
            self.redraw()

    def action_toggle_x(self) -> None:
        self.by_time = not self.by_time
        self.redraw()

    def poll(self) -> None:
        """Read what the runs appended; redraw only when something arrived (or on the first call)."""
        changed = [s.read_more() for s in self.series]
        if any(changed) or not self.drawn:
            self.redraw()

    def redraw(self) -> None:
        self.drawn = True
        legend = Table(box=None, padding=(0, 1), expand=True)
        mpi = any(s.ranks for s in self.series)
        wide = self.size.width >= 120
        columns = LEGEND_COLUMNS if wide else NARROW_LEGEND_COLUMNS
        for col in columns + (("MPI",) if mpi and wide else ()):
            legend.add_column(col, no_wrap=True, overflow="ellipsis")
        for i, s in enumerate(self.series):
            info = summarize(s.path)
            cells: dict[str, Text | str] = {
                "": Text("━━", style=COLORS[i % len(COLORS)]),
                "run": s.path.name,
                "config": info.config if info else "?",
                "steps": f"{info.step}/{info.planned or '?'}" if info else "?",
                "loss": fmt(info.loss, ".4f") if info else "—",
                "best val": fmt(info.best_val, ".4f") if info else "—",
                "tok/s": fmt(info.tokens_per_s, ",.0f") if info else "—",
                "status": info.status if info else "no metrics",
                "MPI": s.ranks,
            }
            legend.add_row(*(cells[c] for c in columns + (("MPI",) if mpi and wide else ())))
        self.legend = legend
        self.query_one("#legend", Static).update(legend)
        xlabel = "wall time (s)" if self.by_time else "step"
        for widget_id, title in (("#view-loss", "loss — validation ●"), ("#view-speed", "tokens/s")):
            widget = self.query_one(widget_id, PlotextPlot)
            plt = widget.plt
            plt.clear_data()
            plt.clear_figure()
            plt.title(f"{title} against {xlabel}")
            for i, s in enumerate(self.series):
                xs = s.elapsed if self.by_time else s.steps
                color = COLORS[i % len(COLORS)]
                ys = s.loss if widget_id == "#view-loss" else s.tps
                if xs:
                    plt.plot(xs, ys, color=color, marker="braille")
                if widget_id == "#view-loss" and s.val:
                    plt.scatter([v[1] if self.by_time else v[0] for v in s.val], [v[2] for v in s.val], color=color)
            widget.refresh()
