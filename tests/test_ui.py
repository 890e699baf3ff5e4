"""The Textual app: Pilot flows, snapshots of both screens, and the real app in tmux."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from loop_tui import machine
from loop_tui.config import load_config
from loop_tui.train import checkpoint
from loop_tui.ui.app import LoopApp
from loop_tui.ui.dashboard import DashboardScreen
from loop_tui.ui.picker import PickerScreen
from loop_tui.ui.runner import TrainingRunner
from loop_tui.ui.state import RunState

from .terminal import wait_pane

# snapshot inputs independent of this machine's sysfs
FIXED_CACHES = machine.detect_caches("L1=48K,L2=2M,L3=32M", root=Path("/nonexistent"))


@pytest.fixture
def pinned_kernels():
    """The cache-fit panel shows the GEMM and attention blocking, which follow the micro-kernel
    (the ISA's MR x NR, the bf16 path) and the thread count as well as the caches: pin them to
    what every CPU runs, so a snapshot does not depend on this machine."""
    from loop_tui import kernels as K

    before = K.isa(), K.bf16_path(), K.get_num_threads()
    K.set_isa("generic")
    K.set_bf16_path("portable")
    K.set_num_threads(2)
    yield
    K.set_isa(before[0])
    K.set_bf16_path(before[1])
    K.set_num_threads(before[2])


async def wait_for(predicate, pilot, timeout=60.0):
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.1)


def screen_text(app) -> str:
    """The screen as plain text, as the snapshot's SVG shows it."""
    import io

    from rich.console import Console

    w, h = app.size
    console = Console(width=w, height=h, file=io.StringIO(), record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def quick_smoke(**kw):
    return load_config("smoke").replace(**{**dict(eval_every=1000, sample_every=1000, checkpoint_every=1000), **kw})


async def highlight(app, pilot, name: str) -> PickerScreen:
    """The picker with config `name` highlighted in its list."""
    picker = app.screen
    picker.query_one("#config-list").highlighted = [p.stem for p in picker.configs].index(name)
    await pilot.pause()
    return picker


async def test_pick_smoke_start_metrics_pause_save_quit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = LoopApp(lambda: PickerScreen(FIXED_CACHES))
    async with app.run_test(size=(120, 40)) as pilot:
        picker = await highlight(app, pilot, "smoke")
        assert picker.cfg.name == "smoke"
        picker.query_one("#f-max_steps").value = "100000"  # edit inline: a long run to pause
        await pilot.pause()
        assert picker.cfg.max_steps == 100000
        await pilot.click("#start")
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        state = dash.state
        await wait_for(lambda: state.step >= 3, pilot)  # metrics appear
        await pilot.pause(0.5)
        assert state.tokens_per_s_avg > 0 and state.loss_history
        await pilot.press("p")
        await wait_for(lambda: state.status == "paused", pilot)
        paused_at = state.step
        await pilot.pause(1.0)
        assert state.step == paused_at  # pause stops the step counter
        await pilot.press("s")
        run_dir = Path(state.run_dir)
        # s saves the paused step (a periodic checkpoint may already exist from an earlier step)
        await wait_for(lambda: (checkpoint.latest(run_dir) or run_dir).name == f"step_{paused_at:08d}", pilot)
        # the checkpoint reached the events log as a TrainingEvent message (a live dashboard does not
        # copy polled events into the log)
        log = dash.query_one("#events")
        await wait_for(lambda: any("checkpoint (requested)" in line.text for line in log.lines), pilot)
        await pilot.press("p")
        await wait_for(lambda: state.step > paused_at, pilot)
        await pilot.press("q")
        await wait_for(lambda: not dash.runner.running, pilot)
    saved = checkpoint.load(checkpoint.latest(run_dir)).state
    # the final step is saved: by the quit, or by a periodic save that happened to land on that step
    assert saved["step"] == state.step and saved["reason"] in ("quit", "periodic")


async def test_picker_validates_inline_and_never_overwrites(tmp_path, monkeypatch):
    """save as writes to the user's config folder (never the package), refuses a shipped or saved name,
    and the saved config is then listed and found by name."""
    from loop_tui.config import CONFIG_DIR

    saved = tmp_path / "user-configs"
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(saved))
    shipped_before = sorted(CONFIG_DIR.iterdir())
    default_before = (CONFIG_DIR / "default.json").read_bytes()
    app = LoopApp(lambda: PickerScreen(FIXED_CACHES))
    async with app.run_test(size=(120, 40)) as pilot:
        picker = app.screen
        await pilot.pause()
        picker.query_one("#f-num_heads").value = "7"
        await pilot.pause()
        assert "divisible" in str(picker.query_one("#picker-error").render())
        picker.query_one("#f-num_heads").value = "4"
        await pilot.pause()
        assert picker.cfg.num_heads == 4
        picker.query_one("#save-name").value = "default"
        picker.query_one("#save").press()
        await pilot.pause()
        assert "never overwritten" in str(picker.query_one("#picker-error").render())
        assert (CONFIG_DIR / "default.json").read_bytes() == default_before and not saved.exists()
        picker.query_one("#save-name").value = "mine"
        picker.query_one("#save").press()
        await pilot.pause()
        assert load_config("mine").num_heads == 4, str(picker.query_one("#picker-error").render())
        assert (saved / "mine.json").is_file() and sorted(CONFIG_DIR.iterdir()) == shipped_before
        (saved / "mine.json").write_text("{}")
        picker.query_one("#save").press()  # the same name again: refused, the file is untouched
        await pilot.pause()
        assert "never overwritten" in str(picker.query_one("#picker-error").render())
        assert (saved / "mine.json").read_text() == "{}"
    (saved / "mine.json").unlink()
    (saved / "listed.json").write_bytes((CONFIG_DIR / "smoke.json").read_bytes())
    assert [p.stem for p in PickerScreen(FIXED_CACHES).configs][-1] == "listed"


async def test_picker_errors_clear_when_fixed_and_block_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = LoopApp(lambda: PickerScreen(FIXED_CACHES))
    async with app.run_test(size=(120, 40)) as pilot:
        picker = app.screen
        await pilot.pause()
        error = lambda: str(picker.query_one("#picker-error").render())
        heads = picker.query_one("#f-num_heads")
        before = picker.cfg.num_heads
        heads.value = "x"
        await pilot.pause()
        assert "num_heads" in error() and "not a number" in error()
        heads.value = str(before)  # back to the valid value it had: the error goes
        await pilot.pause()
        assert error() == ""
        heads.value = "7"  # invalid: d_model is not divisible by 7
        await pilot.pause()
        assert "divisible" in error()
        await pilot.click("#start")  # refused, naming the field: the last valid config is not trained
        await pilot.pause()
        assert isinstance(app.screen, PickerScreen) and "not started: fix num_heads" in error()
        heads.value = str(before)
        await pilot.pause()
        assert error() == "" and picker.cfg.num_heads == before


async def test_enter_on_a_config_starts_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = LoopApp(lambda: PickerScreen(FIXED_CACHES))
    async with app.run_test(size=(120, 40)) as pilot:
        picker = await highlight(app, pilot, "smoke")
        picker.query_one("#config-list").focus()
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, DashboardScreen), pilot)
        dash = app.screen
        assert dash.runner.trainer.cfg.name == "smoke"
        await pilot.press("q")
        await wait_for(lambda: not dash.runner.running, pilot)


async def test_picker_lists_a_config_from_any_path(tmp_path):
    mine = tmp_path / "elsewhere.json"
    mine.write_bytes(orjson.dumps(load_config("smoke").replace(name="", d_model=96).to_dict()))
    app = LoopApp(lambda: PickerScreen(FIXED_CACHES, [mine]))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.screen.cfg.d_model == 96 and app.screen.cfg.name == "elsewhere"


async def test_ctrl_c_quits_like_q(tmp_path):
    runner = TrainingRunner(quick_smoke(max_steps=100000), tmp_path / "run")
    app = LoopApp(lambda: DashboardScreen(runner, FIXED_CACHES))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(lambda: runner.state.step >= 2, pilot)
        await pilot.press("ctrl+c")
        await wait_for(lambda: not runner.running, pilot)
    assert checkpoint.latest(tmp_path / "run") is not None


async def test_resize_never_crashes(tmp_path):
    runner = TrainingRunner(quick_smoke(max_steps=30), tmp_path / "run")
    app = LoopApp(lambda: DashboardScreen(runner, FIXED_CACHES))
    async with app.run_test(size=(120, 40)) as pilot:
        for size in ((80, 24), (40, 12), (200, 60), (80, 24)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.3)
        await pilot.press("q")
        await wait_for(lambda: not runner.running, pilot)


def test_the_runner_lowers_the_starting_threads_priority_not_trainings(tmp_path):
    """The thread that starts a run (the UI's) drops to UI_NICE; the training thread, started
    before that, keeps the priority it had. Run on a thread of its own: an unprivileged process
    cannot raise its nice again."""
    import threading

    from loop_tui.ui.runner import UI_NICE

    runner = TrainingRunner(quick_smoke(max_steps=100000), tmp_path / "run")
    seen: dict[str, int] = {}

    def ui() -> None:
        me = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, me)
        runner.start()
        seen["ui"] = os.getpriority(os.PRIO_PROCESS, me)
        seen["training"] = os.getpriority(os.PRIO_PROCESS, runner.thread.native_id)
        runner.request("quit")

    starter = threading.Thread(target=ui)
    starter.start()
    starter.join()
    runner.thread.join()
    assert seen["ui"] == max(UI_NICE, seen["before"]) and seen["training"] == seen["before"]


# ---------------------------------------------------------------- snapshots (no live timers)
def recorded_state() -> RunState:
    s = RunState(
        config_name="smoke",
        run_dir="runs/smoke-example",
        device="CPU, avx512, 2 threads",
        status="training",
        step=120,
        total_steps=200,
        loss=5.12,
        lr=1.2e-3,
        tokens_per_s_now=85000,
        tokens_per_s_avg=84000,
        mfu=0.146,
        elapsed_s=3.2,
        eta_s=2.1,
        val_loss=5.24,
        sample="The list of the object is returned.",
        tokens_per_step=256,
    )
    s.loss_history = [(i, 6.2 - 1.1 * (1 - 0.97**i)) for i in range(1, 121)]
    s.val_history = [(50, 5.32), (100, 5.24)]
    s.speed_history.extend([80000 + (i * 37) % 9000 for i in range(60)])
    s.events = [
        "12:00:00 tokenizer: byte-level BPE, 512 ids (0.4s); 1,234,567 train tokens, 12,345 validation tokens; "
        "encoded into /root/.cache/loop_tui/tokens/3f2a9c0d1e7b.bin",
        "12:00:03 eval at step 100: val loss 5.2400",
    ]
    return s


def recorded_kernels():
    from loop_tui.backend import KernelStat

    names = ("gemm", "attention_fwd", "attention_bwd", "crossentropy", "adamw", "layernorm_fwd", "gelu_bwd")
    return [KernelStat(n, 60 * (i + 1), 10**9 // (i + 1), 40e9 / (i + 1), 2e9) for i, n in enumerate(names)]


def dashboard_app():
    return LoopApp(
        lambda: DashboardScreen(
            None,
            FIXED_CACHES,
            state=recorded_state(),
            live=False,
            cfg=load_config("smoke"),
            kernel_stats=recorded_kernels(),
        )
    )


def picker_app():
    return LoopApp(lambda: PickerScreen(FIXED_CACHES))


def recorded_runs(root: Path) -> list[Path]:
    """Three runs as the trainer writes them (fixed numbers, so snapshots are stable): finished,
    interrupted, and one whose lock the caller may hold (running)."""
    runs = []
    for name, config, planned, done, speed in (
        ("smoke-20261124-101500", "smoke", 200, 200, 84000.0),
        ("wiki_cache_optimized-20261124-103000", "wiki_cache_optimized", 300, 120, 2100.0),
        ("default-20261124-110000", "default", 300, 40, 30500.0),
    ):
        run = root / name
        run.mkdir(parents=True)
        hms = name[-6:]
        meta = {"config": config, "started": f"2026-11-24T{hms[:2]}:{hms[2:4]}:{hms[4:]}", "planned_steps": planned}
        (run / "run.json").write_bytes(orjson.dumps({**meta, "precision": "fp32", "world_size": 1}))
        lines = []
        for step in range(10, done + 1, 10):
            loss = 3.0 + 3.2 * 0.985**step + 0.05 * ((step * 7) % 5) / 5
            tps = speed * (1 + 0.02 * ((step * 3) % 7) / 7)
            rec = {"step": step, "loss": loss, "tokens_per_s": tps, "mfu": 0.7, "elapsed_s": step * 0.5}
            lines.append(orjson.dumps(rec))
            if step % 50 == 0:
                lines.append(orjson.dumps({"step": step, "val_loss": loss + 0.2, "elapsed_s": step * 0.5}))
        (run / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        (run / ".lock").touch()
        runs.append(run)
    return runs


@pytest.fixture
def runs_folder(tmp_path, monkeypatch):
    """runs/ of recorded_runs in the working directory, the third one held by a 'trainer'."""
    import fcntl

    monkeypatch.chdir(tmp_path)
    runs = recorded_runs(Path("runs"))
    with open(runs[2] / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield runs


def runs_app():
    from loop_tui.ui.runs_screen import RunsScreen

    return LoopApp(lambda: RunsScreen(Path("runs")))


def view_app(runs):
    from loop_tui.ui.view import ViewScreen

    return LoopApp(lambda: ViewScreen(runs[:2]))


SIZES = [(80, 24), (160, 50)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.usefixtures("pinned_kernels")
def test_snapshot_dashboard(snap_compare, size):
    assert snap_compare(dashboard_app(), terminal_size=size)


@pytest.mark.parametrize("panel", ["2", "3", "4"])
@pytest.mark.usefixtures("pinned_kernels")
def test_snapshot_dashboard_compact_panels(snap_compare, panel):
    assert snap_compare(dashboard_app(), terminal_size=(80, 24), press=[panel])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.usefixtures("pinned_kernels")
def test_snapshot_picker(snap_compare, size):
    assert snap_compare(picker_app(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.usefixtures("pinned_kernels")
def test_snapshot_runs(snap_compare, runs_folder, size):
    assert snap_compare(runs_app(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.usefixtures("pinned_kernels")
def test_snapshot_view(snap_compare, runs_folder, size):
    assert snap_compare(view_app(runs_folder), terminal_size=size)


def panels_whole(text: str, width: int) -> None:
    """Nothing drawn right of a panel's border, and every bordered row closed by one."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("╭", "│", "╰")):
            assert len(line) <= width and line.rstrip()[-1] in "╮│╯", f"row {i} drawn past its border: {line!r}"


@pytest.mark.parametrize("size", [*SIZES, (120, 40)])
async def test_dashboard_shows_every_panel_whole(size):
    """At 80×24 one panel at a time (1-4), at 160×50 all four: names, numbers, the status word and
    the long event line whole, nothing outside a border."""
    app = dashboard_app()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        compact = size == (80, 24)
        assert app.screen.has_class("compact") == compact
        seen = ""
        for key in ("1", "2", "3", "4") if compact else ("",):
            if key:
                await pilot.press(key)
            await pilot.pause()
            text = screen_text(app)
            panels_whole(text, size[0])
            seen += text
        flat = re.sub(r"[│\s]+", " ", seen)
        for whole in ("attention_fwd", "attention_bwd", "GFLOP/s", "· training", "84,000 avg", "MFU 14.6%"):
            assert whole in seen, whole
        assert "bias/LayerNorm vectors" in seen and "L1d 48 KiB · L2 2 MiB · L3 32 MiB" in seen
        # the long tokenizer event wrapped, not clipped: its end is on screen
        assert "validation tokens;" in flat and "3f2a9c0d1e7b.bin" in flat


@pytest.mark.parametrize("size", SIZES)
async def test_runs_and_view_screens_fit(size, runs_folder):
    app = runs_app()
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        text = screen_text(app)
        for word in ("smoke-20261124-101500", "wiki_cache_optimized-20261124-103000", "finished", "interrupted"):
            assert word in text, word
        assert "running" in text and "200/200" in text and "120/300" in text and "…" not in text
    app = view_app(runs_folder)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "smoke-20261124-101500" in text and "wiki_cache_optimized-20261124-103000" in text
        assert "200/200" in text and "120/300" in text and "…" not in text


# ---------------------------------------------------------------- the real app in tmux
def test_real_app_in_tmux(tmp_path):
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    session = f"loop-test-{os.getpid()}"
    cmd = f"{sys.executable} -m loop_tui train smoke --steps 100000 --out {tmp_path / 'run'}"
    env_prefix = f"cd {tmp_path} && LOOP_CACHE_DIR={os.environ['LOOP_CACHE_DIR']} RAYON_NUM_THREADS=1 "
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", env_prefix + cmd], check=True)
    try:
        # a step has finished (on a fresh clone the tokenizer is trained first; quitting before any
        # step leaves nothing to save)
        wait_pane(session, lambda s: bool(re.search(r"step [1-9]\d*/100000", s)) and "Quit" in s, 60)
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        for _ in range(60):
            time.sleep(0.5)
            if subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode:
                break
        else:
            raise AssertionError("the app did not exit on q")
        assert checkpoint.latest(tmp_path / "run") is not None
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_closing_the_terminal_saves_like_q(tmp_path):
    """SIGHUP (the terminal or SSH session closed) once killed the dashboard with 129, unsaved,
    leaving a .tmp-step_* folder; and Textual cannot shut down on a closed terminal."""
    import psutil

    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    session = f"loop-hup-{os.getpid()}"
    run = tmp_path / "run"
    cmd = f"{sys.executable} -m loop_tui train smoke --steps 100000 --checkpoint-every 100000 --out {run}"
    env_prefix = (
        f"cd {tmp_path} && echo $$ > pid && LOOP_CACHE_DIR={os.environ['LOOP_CACHE_DIR']} RAYON_NUM_THREADS=1 exec "
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", env_prefix + cmd], check=True)
    try:
        wait_pane(session, lambda s: bool(re.search(r"step [1-9]\d*/100000", s)), 60)
        app = psutil.Process(int((tmp_path / "pid").read_text()))
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)  # the terminal closes
    gone, _ = psutil.wait_procs([app], timeout=60)
    assert gone, "the app did not exit when its terminal closed"
    saved = checkpoint.latest(run)
    assert saved is not None and checkpoint.load(saved).state["reason"] == "quit"
    best = checkpoint.best(run)  # the best's own folder is hidden too: only temporary ones must not be left
    kept = {best.resolve()} if best is not None else set()
    assert not [p for p in (run / "checkpoints").glob(".*") if p.resolve() not in kept]


BROKEN_DASHBOARD = """
import sys
from loop_tui import cli
from loop_tui.ui import dashboard


drawn = dashboard.budget_line


def broken(minutes, elapsed_s):
    if elapsed_s > 0:  # a step has been trained
        raise RuntimeError("drawing failed")
    return drawn(minutes, elapsed_s)


dashboard.budget_line = broken  # the header's budget, drawn each tick
sys.exit(cli.main(["train", "smoke", "--steps", "100000", "--out", sys.argv[1], "--set", "budget_minutes=60"]))
"""


def test_a_dashboard_that_fails_saves_and_exits_with_one_error_line(tmp_path):
    """The dashboard raised (a budget it could not draw): Textual printed its traceback, training
    saved and the process exited 0, as if all was well."""
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    session = f"loop-broken-{os.getpid()}"
    run = tmp_path / "run"
    (tmp_path / "broken.py").write_text(BROKEN_DASHBOARD)
    cmd = f"{sys.executable} broken.py {run}; echo EXIT=$?; sleep 60"
    env_prefix = f"cd {tmp_path} && LOOP_CACHE_DIR={os.environ['LOOP_CACHE_DIR']} RAYON_NUM_THREADS=1 "
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", env_prefix + cmd], check=True)
    try:
        pane = "".join(wait_pane(session, lambda s: "EXIT=" in s, 120).split())
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert "EXIT=70" in pane and "loop:error:thedashboardfailed(RuntimeError:drawingfailed)" in pane, pane
    said = re.search(r"trainingstoppedandsavedatstep(\d+);", pane)
    saved = checkpoint.latest(run)  # the step it stopped at, saved (periodically, or as the app closed)
    assert said and saved is not None and checkpoint.load(saved).state["step"] == int(said.group(1)), pane


# ---------------------------------------------------------------------------- loop view
def train_run(path: Path, steps: int) -> Path:
    from loop_tui import cli

    assert cli.main(["train", "smoke", "--out", str(path), "--no-tui", "--steps", str(steps)]) == 0
    return path


def legend_text(view) -> str:
    import io

    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(view.legend)
    return console.export_text()


async def test_view_rebuilds_a_finished_run_and_overlays_two(tmp_path):
    from loop_tui.ui.view import ViewScreen

    a, b = train_run(tmp_path / "a", 30), train_run(tmp_path / "b", 20)
    app = LoopApp(lambda: ViewScreen([a, b]))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        view = app.screen
        sa, sb = view.series
        assert sa.steps == [10, 20, 30] and sb.steps == [10, 20] and sa.val and sb.val
        text = legend_text(view)
        assert "a" in text and "b" in text and "finished" in text and "30/30" in text
        await pilot.press("x")  # wall time on the x axis
        await pilot.pause()
        assert view.by_time


async def test_view_follows_a_run_another_process_is_training(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from loop_tui.ui.view import ViewScreen

    run = tmp_path / "live"
    cfg = tmp_path / "live.json"
    cfg.write_bytes(orjson.dumps(quick_smoke(max_steps=100000, log_every=5, name="live").to_dict()))
    proc = subprocess.Popen(
        [sys.executable, "-m", "loop_tui", "train", str(cfg), "--out", str(run), "--no-tui", "--threads", "1"],
        env={**os.environ, "RAYON_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            if (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size:
                break
            await asyncio.sleep(0.05)
        app = LoopApp(lambda: ViewScreen([run]))
        async with app.run_test(size=(80, 24)) as pilot:
            view = app.screen
            await pilot.pause()
            first = view.series[0].steps[-1]
            await wait_for(lambda: view.series[0].steps[-1] >= first + 10, pilot)  # new records arrive live
            assert "running" in legend_text(view)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def test_view_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    from loop_tui import cli

    assert cli.main(["view", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


async def test_cache_fit_panel_groups_with_totals_and_the_machine_caches():
    app = LoopApp(lambda: PickerScreen(FIXED_CACHES))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        table = app.screen.query_one("#cachefit")
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert "Cache fit on this machine: L1d 48 KiB · L2 2 MiB · L3 32 MiB" in screen_text(app)
        names = [r[0] for r in rows]
        for label in ("weights", "gradients + AdamW", "activations, the batch", "attention"):
            assert label in names
        assert sum("bias/LayerNorm vectors" in n for n in names) == 1  # not one row per bias
        weights = names.index("weights")
        assert rows[weights][1].endswith(("KiB", "MiB", "GiB"))


def test_kernel_table_keeps_names_and_numbers_whole_in_a_narrow_panel():
    import io

    from rich.console import Console

    from loop_tui.backend import KernelStat
    from loop_tui.ui.widgets import kernel_table

    stats = [
        KernelStat("attention_fwd", 120, 2_000_000_000, 60e9, 1e9),  # 30 GFLOP/s
        KernelStat("attention_bwd", 120, 4_000_000_000, 112e9, 1e9),  # 28 GFLOP/s
        KernelStat("gemm", 900, 10_000_000_000, 1594e9, 20e9),  # 159.4 GFLOP/s
    ]
    for width in (36, 56, 76):
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(kernel_table(stats, width))
        text = console.export_text()
        assert "attention_fwd" in text and "attention_bwd" in text and "159.4" in text and "…" not in text
        assert ("calls" in text) == (width >= 56)


async def test_runs_screen_lists_runs_and_opens_the_view(tmp_path):
    from loop_tui.ui.runs_screen import RunsScreen
    from loop_tui.ui.view import ViewScreen

    train_run(tmp_path / "a", 10)
    train_run(tmp_path / "b", 20)
    app = LoopApp(lambda: RunsScreen(tmp_path))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        screen = app.screen
        table = screen.query_one("#runs")
        assert table.row_count == 2 and {p.name for p in screen.paths} == {"a", "b"}
        await pilot.press("space", "down", "space", "v")  # mark both, overlay them
        await pilot.pause()
        assert isinstance(app.screen, ViewScreen) and len(app.screen.series) == 2
        app.pop_screen()
        await pilot.pause()
        table.focus()
        await pilot.press("enter")  # the run under the cursor alone
        await pilot.pause()
        assert isinstance(app.screen, ViewScreen) and len(app.screen.series) == 1


async def test_runs_screen_resumes_an_interrupted_run_and_refuses_a_finished_one(tmp_path):
    from loop_tui.train.trainer import Trainer
    from loop_tui.ui.dashboard import DashboardScreen as Dash
    from loop_tui.ui.runs_screen import RunsScreen

    done = train_run(tmp_path / "done", 10)
    holder: list[Trainer] = []

    def quit_at_3(kind, p):
        if kind == "step" and p["step"] == 3:
            holder[0].request("quit")

    stopped = tmp_path / "stopped"
    holder.append(Trainer(quick_smoke(max_steps=8, log_every=1), stopped, on_event=quit_at_3))
    holder[0].setup()
    holder[0].run()
    holder[0].close()
    app = LoopApp(lambda: RunsScreen(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        table = screen.query_one("#runs")
        table.focus()
        table.move_cursor(row=screen.paths.index(done))
        await pilot.press("t")
        await pilot.pause()
        assert app.screen is screen  # refused: nothing to resume
        table.move_cursor(row=screen.paths.index(stopped))
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, Dash)
        runner = app.screen.runner
        await wait_for(lambda: runner.ready.is_set() and not runner.running, pilot)
        assert runner.state.error is None and runner.state.step == 8
    assert checkpoint.latest(stopped) is not None
    steps = [orjson.loads(line)["step"] for line in (stopped / "metrics.jsonl").read_bytes().splitlines()]
    assert steps[:3] == [1, 2, 3] and steps[-1] == 8
