"""A paper estimate of data-parallel scaling to 8 and 64 nodes for the three seed configs, from
one measured number per config: this machine's step time (fp32, all cores, median of --steps after
2 warm-up). Assumptions, stated where the table prints them:

- every node is this machine and runs the config's batch per step (weak scaling: the global
  batch grows with the nodes);
- one flat ring all-reduce of the fp32 gradients per step, not overlapped with backward:
  time = 2 (N - 1) / N * bytes / bandwidth + 2 (N - 1) * latency;
- effective bandwidth 1.1 GB/s on 10 GbE and 11 GB/s on 100 GbE (TCP, about 90% of line rate),
  latency 50 us and 10 us per hop.

    .venv/bin/python benchmarks/mpi_scaling.py [--steps 4] [--config NAME]"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

WIKI = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wiki"
CONFIGS = ("wiki_gpu_optimized", "wiki_cache_optimized", "wiki_performance_tuned")
NETWORKS = {"10 GbE": (1.1e9, 50e-6), "100 GbE": (11e9, 10e-6)}


def step_time(cfg, steps: int) -> float:
    from loop_tui.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as d:
        t = Trainer(
            cfg.replace(data=str(WIKI) if WIKI.is_dir() else None, eval_every=10**6, sample_every=10**6), Path(d)
        )
        t.setup()
        times = [t.train_step().step_time_s for _ in range(steps + 2)][2:]
        t.close()
        return statistics.median(times)


def allreduce_s(nbytes: float, nodes: int, bandwidth: float, latency: float) -> float:
    return 2 * (nodes - 1) / nodes * nbytes / bandwidth + 2 * (nodes - 1) * latency


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--config", action="append", help="configs to estimate (default: the three seed configs)")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import cpu_line

    from loop_tui.config import load_config
    from loop_tui.model.layout import parameter_count

    print(cpu_line())
    print("weak scaling, one ring all-reduce of fp32 gradients per step, not overlapped (see --help)")
    print(
        f"{'config':24s} {'grad MB':>8s} {'step s':>7s} {'network':>8s} {'nodes':>5s} {'all-reduce s':>12s} "
        f"{'efficiency':>10s} {'speed-up':>8s}"
    )
    for name in args.config or CONFIGS:
        cfg = load_config(name)
        nbytes = 4.0 * parameter_count(cfg)
        step = step_time(cfg, args.steps)
        for net, (bw, lat) in NETWORKS.items():
            for nodes in (8, 64):
                ar = allreduce_s(nbytes, nodes, bw, lat)
                eff = step / (step + ar)
                print(
                    f"{name:24s} {nbytes / 1e6:8.1f} {step:7.2f} {net:>8s} {nodes:5d} {ar:12.3f} "
                    f"{100 * eff:9.1f}% {nodes * eff:7.1f}x"
                )


if __name__ == "__main__":
    main()
