"""OpenCL backend against the C backend, measured in one run: GFLOP/s on the GEMM shapes of a
training step of each seed config, and whole training steps (tokens/s).

    .venv/bin/python benchmarks/opencl_table.py [--config NAME] [--steps 2] [--device NAME]

On a machine without a GPU the OpenCL device is PoCL on the same CPU cores, so this measures the
OpenCL kernels' code quality, not a GPU."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from loop_tui.ops_table import cost

sys.path.insert(0, os.path.dirname(__file__))


def gemm_rows(be, configs):
    from shapes import step_gemms

    from loop_tui import kernels as K

    rows = []
    for cfg in configs:
        for name, M, N, Kd, ta, tb in step_gemms(cfg):
            rng = np.random.default_rng(0)
            a = rng.standard_normal((Kd, M) if ta else (M, Kd), dtype=np.float32)
            b = rng.standard_normal((N, Kd) if tb else (Kd, N), dtype=np.float32)
            c = np.empty((M, N), np.float32)
            da, db = be.cla.to_device(be.queue, a), be.cla.to_device(be.queue, b)
            dc = be.cla.empty(be.queue, (M, N), np.float32)

            def ocl():
                be.matmul(da, db, out=dc, transpose_a=bool(ta), transpose_b=bool(tb))
                be.queue.finish()

            def cpu():
                K.matmul(a, b, out=c, transpose_a=bool(ta), transpose_b=bool(tb))

            res = []
            for fn in (cpu, ocl):
                fn()
                ts = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
                res.append(cost("matmul", M=M, N=N, K=Kd, ta=ta, tb=tb, accumulate=0, bias=0)[0] / np.median(ts) / 1e9)
            be.pending.clear()
            rows.append((cfg, name, M, N, Kd, *res))
    return rows


def step_rate(cfg_name, backend, steps, device):
    from loop_tui.config import load_config
    from loop_tui.train.trainer import Trainer

    cfg = load_config(cfg_name).replace(
        backend=backend, eval_every=10**6, sample_every=10**6, checkpoint_every=10**6, log_every=10**6
    )
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg, d, device=device)
        t.setup()
        t.train_step()
        times = [t.train_step().step_time_s for _ in range(steps)]
        t.metrics_file.close()
        return cfg.tokens_per_step / float(np.median(times)), t.backend.device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device")
    args = ap.parse_args()
    from loop_tui import kernels as K
    from loop_tui.opencl.backend import OpenCLBackend

    be = OpenCLBackend(args.device)
    configs = args.config or ["wiki_cache_optimized"]
    print(f"OpenCL device: {be.device}; large-GEMM kernel chosen by autotune: {be.large_gemm}")
    print(f"C backend: {K.isa()}, {K.get_num_threads()} threads. GEMM GFLOP/s, median of 3:")
    print(f"{'config':22s} {'GEMM':14s} {'M':>6s} {'N':>6s} {'K':>6s} {'C':>8s} {'OpenCL':>8s} {'OCL/C':>6s}")
    for cfg, name, M, N, Kd, gc, go in gemm_rows(be, configs):
        print(f"{cfg:22s} {name:14s} {M:6d} {N:6d} {Kd:6d} {gc:8.1f} {go:8.1f} {go / gc:6.2f}")
    print(f"whole training steps (tokens/s, median of {args.steps} after 1 warm-up):")
    for cfg in ["smoke"] + configs:
        c_tps, _ = step_rate(cfg, "c", args.steps, None)
        o_tps, dev = step_rate(cfg, "opencl", args.steps, args.device)
        print(f"  {cfg:22s} C {c_tps:10,.0f}   OpenCL {o_tps:10,.0f}   OpenCL/C {o_tps / c_tps:.2f}  ({dev})")


if __name__ == "__main__":
    main()
