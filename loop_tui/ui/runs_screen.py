"""The runs screen: `loop runs`'s table inside the app, refreshed every 2 s. Enter views the run
under the cursor; space marks runs and `v` overlays the marked ones in the view screen; `t`
resumes training an interrupted run in the dashboard."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label

from .. import machine
from ..config import ConfigError
from ..train import checkpoint
from ..train.launch import run_config
from ..train.runs import COLUMNS, STATUS_STYLE, cells, scan, summarize
from .dashboard import DashboardScreen
from .runner import TrainingRunner
from .view import ViewScreen

NARROW_COLUMNS = ("run", "steps", "loss", "best val", "status")  # what fits 80 columns


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "view", "View"),
        Binding("space", "mark", "Mark"),
        Binding("v", "view_marked", "Overlay marked"),
        Binding("t", "resume", "Resume training"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)
        self.paths: list[Path] = []
        self.marked: set[Path] = set()
        self.columns: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Label("", id="runs-note")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"loop_tui — runs in {self.folder}"
        self.fill()
        self.set_interval(2.0, self.fill)

    def on_resize(self) -> None:
        self.fill()

    def fill(self) -> None:
        """The table, rebuilt: below 120 columns only the columns that fit 80 whole (the view
        shows the rest)."""
        table = self.query_one("#runs", DataTable)
        row = table.cursor_row
        columns = COLUMNS if self.size.width >= 120 else NARROW_COLUMNS
        if columns != self.columns:
            table.clear(columns=True)
            table.add_columns("", *columns)
            self.columns = columns
        table.clear()
        runs = scan(self.folder) if self.folder.is_dir() else []
        self.paths = [r.path for r in runs]
        for r in runs:
            shown = dict(zip(COLUMNS, cells(r), strict=True))
            status = Text(shown["status"], style=STATUS_STYLE[r.status])
            table.add_row("●" if r.path in self.marked else "", *(shown[c] for c in columns[:-1]), status)
        if runs:
            table.move_cursor(row=min(row, len(runs) - 1))
        note = (
            f"{len(runs)} runs · Enter views one · space marks · v overlays the marked · t resumes one"
            if runs
            else "no runs here"
        )
        self.query_one("#runs-note", Label).update(note)

    def current(self) -> Path | None:
        row = self.query_one("#runs", DataTable).cursor_row
        return self.paths[row] if 0 <= row < len(self.paths) else None

    def action_view(self) -> None:
        run = self.current()
        if run is not None:
            self.app.push_screen(ViewScreen([run]))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_view()

    def action_mark(self) -> None:
        run = self.current()
        if run is not None:
            self.marked ^= {run}
            self.fill()

    def action_view_marked(self) -> None:
        runs = [p for p in self.paths if p in self.marked] or [p for p in [self.current()] if p]
        if runs:
            self.app.push_screen(ViewScreen(runs))

    def action_resume(self) -> None:
        """Continue the run under the cursor from its newest checkpoint, with its own config and
        data; refused in one line when another process trains it, it is finished, or it has no
        checkpoint."""
        run = self.current()
        info = summarize(run) if run is not None else None
        if run is None or info is None:
            return
        why = ""
        if info.status == "running":
            why = f"{run.name} is training in another process"
        elif info.status == "finished":
            why = f"{run.name} is finished ({info.step}/{info.planned}); train further with loop train --steps N"
        elif info.status == "stopped early":
            why = f"{run.name} stopped early (patience); train on with loop train --resume --set patience=null"
        elif info.status == "out of time":
            why = f"{run.name} spent its time budget; train on with loop train --resume --set budget_minutes=M"
        elif checkpoint.latest(run) is None:
            why = f"{run.name} has no checkpoint to resume from"
        if not why:
            try:
                cfg = run_config(run, warn=lambda message: self.notify(message, severity="warning"))
            except ConfigError as e:
                why = f"{run.name}: cannot read its config ({e})"
        if why:
            self.notify(why, severity="error")
            return
        self.app.push_screen(DashboardScreen(TrainingRunner(cfg, run, resume=True), machine.detect_caches()))
