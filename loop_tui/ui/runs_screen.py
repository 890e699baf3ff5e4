"""The runs screen: `loop runs`'s table inside the app, refreshed every 2 s. Enter views the run
under the cursor; space marks runs and `v` overlays the marked ones in the view screen."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label

from ..train.runs import COLUMNS, STATUS_STYLE, cells, scan
from .view import ViewScreen


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "view", "View"),
        Binding("space", "mark", "Mark"),
        Binding("v", "view_marked", "Overlay marked"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)
        self.paths: list[Path] = []
        self.marked: set[Path] = set()

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Label("", id="runs-note")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"loop_tui — runs in {self.folder}"
        table = self.query_one("#runs", DataTable)
        table.add_columns("", *COLUMNS)
        self.fill()
        self.set_interval(2.0, self.fill)

    def fill(self) -> None:
        table = self.query_one("#runs", DataTable)
        row = table.cursor_row
        table.clear()
        runs = scan(self.folder) if self.folder.is_dir() else []
        self.paths = [r.path for r in runs]
        for r in runs:
            *shown, status = cells(r)
            table.add_row("●" if r.path in self.marked else "", *shown, Text(status, style=STATUS_STYLE[r.status]))
        if runs:
            table.move_cursor(row=min(row, len(runs) - 1))
        note = f"{len(runs)} runs · Enter views one · space marks · v overlays the marked" if runs else "no runs here"
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
