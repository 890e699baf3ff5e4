"""Data parallelism on one machine: `mpiexec -n 2` ranks × 1 kernel thread against one process ×
2 threads, the same global batch, on the wiki articles (or the built-in corpus).

    .venv/bin/python benchmarks/mpi_table.py [--config wiki_cache_optimized] [--steps 12] [--rounds 2]

Both sides run `loop train --no-tui` with log_every 1; tokens/s is the median over the steps after
the first 2 (warm-up), all-reduce seconds per step the median of what rank 0 measured around its
gradient Allreduce. Rounds alternate the order."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WIKI = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wiki"


def run(cmd: list[str], run_dir: Path) -> dict:
    env = {**os.environ, "RAYON_NUM_THREADS": "1"}
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "loss" in r][2:]
    step_s = statistics.median(r["step_time_s"] for r in steps)
    return {
        "step_s": step_s,
        "allreduce_s": statistics.median(r.get("allreduce_s", 0.0) for r in steps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="wiki_cache_optimized")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import cpu_line

    from loop_tui.config import load_config

    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
    if mpiexec is None:
        print("mpiexec not found: pip install -e '.[mpi]' (mpi4py and MPICH)")
        return
    cfg = load_config(args.config)
    if cfg.batch_size % 2:
        raise SystemExit(f"{args.config}: batch_size {cfg.batch_size} does not split over 2 ranks")
    data = ["--data", str(WIKI)] if WIKI.is_dir() else []
    print(cpu_line())
    print(
        f"{args.config} on {'../shared/data/wiki' if data else 'the built-in corpus'}: global batch "
        f"{cfg.batch_size} × {cfg.max_length}, median step after 2 warm-up of {args.steps}, {args.rounds} rounds"
    )
    res: dict[str, list[dict]] = {"1 process × 2 threads": [], "2 ranks × 1 thread": []}
    with tempfile.TemporaryDirectory() as d:
        base = {**cfg.to_dict(), "log_every": 1, "eval_every": 10**6, "sample_every": 10**6, "checkpoint_every": 10**6}
        one, two = Path(d) / "one.json", Path(d) / "two.json"
        one.write_text(json.dumps(base))
        two.write_text(json.dumps({**base, "batch_size": cfg.batch_size // 2}))
        py = [sys.executable, "-m", "loop_tui", "train"]
        for r in range(args.rounds):
            order = list(res) if r % 2 == 0 else list(res)[::-1]
            for impl in order:
                run_dir = Path(d) / f"run-{r}-{impl[0]}"
                tail = ["--no-tui", "--steps", str(args.steps), "--out", str(run_dir), *data]
                if impl.startswith("1"):
                    cmd = [*py, str(one), "--threads", "2", *tail]
                else:
                    cmd = [mpiexec, "-n", "2", *py, str(two), "--threads", "1", *tail]
                res[impl].append(run(cmd, run_dir))
    print(f"{'run':24s} {'step s':>7s} {'tokens/s':>9s} {'all-reduce ms':>14s} {'ratio':>6s}")
    base_tps = None
    for impl, rs in res.items():
        step = statistics.median(x["step_s"] for x in rs)
        tps = cfg.tokens_per_step / step
        base_tps = base_tps or tps
        ar = 1e3 * statistics.median(x["allreduce_s"] for x in rs)
        print(f"{impl:24s} {step:7.3f} {tps:9,.0f} {ar:14.1f} {tps / base_tps:5.2f}x")


if __name__ == "__main__":
    main()
