"""What the dashboard costs: the same training run headless and with the real app drawing it (the
Textual app under its headless test driver at 160×50, which renders every frame as a terminal
would, minus the terminal's own work), alternated, in one process each time.

    .venv/bin/python benchmarks/dashboard_overhead.py [--config wiki_cache_optimized] [--steps 12] [--rounds 2]
    .venv/bin/python benchmarks/dashboard_overhead.py --interleave 3 [--steps 36]

tokens/s = batch × seq / median step time over the steps after the first 2 (log_every 1). The
rounds' result is the median of each round's ratio (its two runs ran one after the other), and the
UI thread's CPU time per second shows what the app takes from the kernels on any CPU.

Separate processes differ by ±10% on a shared VM (run to run, whatever runs in them), more than
the effect measured. --interleave K measures inside one run instead: the app is up all along and
draws for K steps, then stops drawing for K steps (the state of a headless run: nothing renders),
and so on; the medians of the two sets of steps are compared, so drift hits both alike."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIKI = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wiki"


def median_step(run: Path) -> float:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median([r["step_time_s"] for r in recs if "loss" in r][2:])


async def with_dashboard(cfg, run: Path, steps: int) -> None:
    """The app drawing the whole run; the UI thread's CPU seconds per second of wall time from the
    end of step 2 to the end go to RUN/ui_cpu.json."""
    from loop_tui import machine
    from loop_tui.ui.app import LoopApp
    from loop_tui.ui.dashboard import DashboardScreen
    from loop_tui.ui.runner import TrainingRunner

    runner = TrainingRunner(cfg, run, steps=steps)
    app = LoopApp(lambda: DashboardScreen(runner, machine.detect_caches()))
    start: tuple[float, float] | None = None
    async with app.run_test(size=(160, 50)) as pilot:
        while runner.running or not runner.ready.is_set():
            if start is None and runner.state.step >= 2:
                start = (time.thread_time(), time.perf_counter())
            await pilot.pause(0.2)
    if start is not None:
        share = (time.thread_time() - start[0]) / (time.perf_counter() - start[1])
        (run / "ui_cpu.json").write_text(json.dumps(share))


async def interleaved(cfg, run: Path, steps: int, every: int) -> None:
    """The app up for the whole run, drawing in alternate blocks of `every` steps; which steps it
    drew during goes to RUN/drawing.json."""
    from loop_tui import machine
    from loop_tui.ui.app import LoopApp
    from loop_tui.ui.dashboard import DashboardScreen
    from loop_tui.ui.runner import TrainingRunner

    runner = TrainingRunner(cfg, run, steps=steps)
    app = LoopApp(lambda: DashboardScreen(runner, machine.detect_caches()))
    drawing, last = {}, -1
    async with app.run_test(size=(160, 50)) as pilot:
        while runner.running or not runner.ready.is_set():
            step = runner.state.step
            if step != last:  # step `step` ended: step + 1 runs in this block's mode
                last = step
                app.screen.drawing = (step // every) % 2 == 0
                drawing[step + 1] = app.screen.drawing
            await pilot.pause(0.01)
    (run / "drawing.json").write_text(json.dumps(drawing))


def child(mode: str, config: str, run: Path, steps: int, every: int = 0) -> None:
    from loop_tui.config import load_config
    from loop_tui.train.trainer import Trainer

    data = str(WIKI) if WIKI.is_dir() else None
    cfg = load_config(config).replace(
        log_every=1, eval_every=10**6, sample_every=10**6, checkpoint_every=10**6, data=data
    )
    if mode == "interleaved":
        asyncio.run(interleaved(cfg, run, steps, every))
    elif mode == "dashboard":
        asyncio.run(with_dashboard(cfg, run, steps))
    else:
        t = Trainer(cfg, run)
        t.setup()
        t.run(steps=steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="wiki_cache_optimized")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--interleave", type=int, default=0, help="K: one run, drawing in alternate blocks of K steps")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.config, Path(args.child[1]), args.steps, args.interleave)
        return
    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import cpu_line

    from loop_tui.config import load_config

    cfg = load_config(args.config)
    print(cpu_line())
    if args.interleave:
        report_interleaved(args, cfg)
        return
    print(f"{args.config}, {args.steps} steps per run, median step after 2 warm-up, {args.rounds} alternating rounds")
    res: dict[str, list[float]] = {"headless": [], "dashboard": []}
    ui_cpu = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            for mode in list(res) if r % 2 == 0 else list(res)[::-1]:
                run = Path(d) / f"{mode}-{r}"
                cmd = [sys.executable, __file__, "--config", args.config, "--steps", str(args.steps), "--child", mode]
                env = {**os.environ, "RAYON_NUM_THREADS": "1"}
                subprocess.run([*cmd, str(run)], check=True, capture_output=True, env=env)
                res[mode].append(median_step(run))
                if (run / "ui_cpu.json").exists():
                    ui_cpu.append(json.loads((run / "ui_cpu.json").read_text()))
    for mode, ts in res.items():
        each = ", ".join(f"{cfg.tokens_per_step / t:,.0f}" for t in ts)
        print(f"{mode:10s} {cfg.tokens_per_step / statistics.median(ts):9,.0f} tokens/s  (each run: {each})")
    # the VM's speed drifts between runs by more than the effect: compare the two runs of each round
    ratios = [h / t for h, t in zip(res["headless"], res["dashboard"], strict=True)]
    each = ", ".join(f"{x:.3f}" for x in ratios)
    print(f"dashboard / headless: {statistics.median(ratios):.3f}x (median of the rounds' ratios: {each})")
    if ui_cpu:
        print(f"UI thread CPU while training: {1000 * statistics.median(ui_cpu):.0f} ms per second (median of runs)")


def report_interleaved(args, cfg) -> None:
    k = args.interleave
    print(f"{args.config}, one run of {args.steps} steps, the app drawing in alternate blocks of {k} steps")
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        cmd = [sys.executable, __file__, "--config", args.config, "--steps", str(args.steps)]
        cmd += ["--interleave", str(k), "--child", "interleaved", str(run)]
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "RAYON_NUM_THREADS": "1"})
        drawing = {int(s): on for s, on in json.loads((run / "drawing.json").read_text()).items()}
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        times = {r["step"]: r["step_time_s"] for r in recs if "loss" in r and r["step"] > 2}
    split = {
        "not drawing": [t for s, t in times.items() if drawing.get(s) is False],
        "drawing": [t for s, t in times.items() if drawing.get(s) is True],
    }
    base = cfg.tokens_per_step / statistics.median(split["not drawing"])
    for mode, ts in split.items():
        tps = cfg.tokens_per_step / statistics.median(ts)
        print(f"{mode:12s} {tps:9,.0f} tokens/s  (median of {len(ts)} steps)  {tps / base:.3f}x")


if __name__ == "__main__":
    main()
