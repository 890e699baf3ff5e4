"""The picker: choose a shipped (or any) config, edit its fields with inline validation, see its
cache fit, and start training; `r` lists past runs to view, compare or resume."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from rich.table import Table
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, OptionList, Static

from .. import analyze, machine
from ..config import (
    CONFIG_DIR,
    Config,
    ConfigError,
    from_dict,
    load_config,
    saved_configs,
    shipped_configs,
    user_config_dir,
)
from ..model.layout import parameter_count, training_flops_per_token
from ..train.launch import default_run_dir
from ..train.runs import RUNS
from .dashboard import DashboardScreen
from .runner import TrainingRunner
from .runs_screen import RunsScreen
from .widgets import caches_line, fill_cache_fit

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


class PickerScreen(Screen):
    BINDINGS = [
        Binding("enter", "start", "Start", show=True),
        Binding("r", "runs", "Runs (view, resume)"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, caches: machine.Caches, extra: list[Path] | None = None):
        """extra: config files from anywhere, listed after the shipped and saved ones (by path)."""
        super().__init__()
        self.caches = caches
        self.named = shipped_configs() + saved_configs()  # listed by name
        self.configs = self.named + [Path(p) for p in (extra or [])]
        self.cfg: Config | None = None
        self.invalid: dict[str, str] = {}  # field -> why its text is not usable (Start is refused)

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="picker"):
            with Vertical(id="picker-left"):
                yield Label("Configs", classes="title")
                yield OptionList(*[p.stem if p in self.named else str(p) for p in self.configs], id="config-list")
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
                yield Label(f"Cache fit on this machine: {caches_line(self.caches)}", classes="title")
                table: DataTable = DataTable(zebra_stripes=True, cursor_type="none", id="cachefit")
                table.add_columns("buffer", "size", "fits")
                yield table
        yield Footer()

    def action_runs(self) -> None:
        """The runs under runs/ (where trainings started here go): view or overlay them."""
        self.app.push_screen(RunsScreen(RUNS))

    def on_resize(self) -> None:
        """At 80×24: two columns of fields (whole labels) and a shorter config list (Start in view)."""
        self.query_one("#fields").styles.grid_size_columns = 2 if self.size.width < 110 else 3
        self.query_one("#config-list").styles.max_height = 6 if self.size.height < 30 else 12

    def on_mount(self) -> None:
        self.title = "loop_tui — pick a config"
        names = [p.stem for p in self.configs]
        extra = len(self.configs) > len(self.named)
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
        path = user_config_dir() / f"{name}.json"
        if path.exists() or (CONFIG_DIR / path.name).exists():
            err.update(f"[red]save as: {name} exists; shipped and saved configs are never overwritten[/]")
            return
        data = {k: v for k, v in self.cfg.replace(name=name).to_dict().items() if v is not None}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        except OSError as e:
            err.update(f"[red]save as: {path}: {e.strerror or e}[/]")
            return
        err.update(f"[green]saved {path} (`loop train {name}` finds it)[/]")

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
        self.app.push_screen(
            DashboardScreen(TrainingRunner(self.cfg, default_run_dir(self.cfg.name), data=data), self.caches)
        )
