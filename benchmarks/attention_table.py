"""Causal attention, forward + backward: loop_tui's flash-style kernels against PyTorch's
`scaled_dot_product_attention(is_causal=True)` (its CPU flash kernel), same shapes, same threads,
measured alternately in one run.

    .venv/bin/python benchmarks/attention_table.py [--threads 2] [--heads 12] [--batch 4] [--repeat 5]

GFLOP/s count the causal half only: forward 4 * hs FLOPs per (query, key) pair (q.k and p.v),
backward twice that, over T(T+1)/2 pairs per head, as loop_tui/ops_table.py counts them. Median of
--repeat timings of forward + backward; peak extra memory is what the kernels keep between
forward and backward (ours: out + lse; the previous kernels kept the T x T probabilities)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def flops(B: int, NH: int, T: int, hs: int) -> float:
    from loop_tui.ops_table import cost

    shape = dict(B=B, T=T, C=NH * hs, NH=NH)
    return cost("attention_forward", **shape)[0] + cost("attention_backward", **shape)[0]


def time_ours(B, NH, T, hs, repeat):
    from loop_tui import kernels as K

    C = NH * hs
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((B, T, 3 * C)).astype(np.float32)
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    out, lse, dqkv = np.empty((B, T, C), np.float32), np.empty((B, NH, T), np.float32), np.empty_like(qkv)

    def step():
        K.attention_forward(out, lse, qkv, NH)
        K.attention_backward(dqkv, dout, qkv, out, lse, NH)

    step()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    return ts


def time_torch(B, NH, T, hs, repeat):
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, NH, T, hs, generator=g, requires_grad=True) for _ in range(3))
    dout = torch.randn(B, NH, T, hs, generator=g)

    def step():
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y.backward(dout)

    step()
    ts = []
    for _ in range(repeat):
        q.grad = k.grad = v.grad = None
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    return ts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seq", type=int, action="append", help="sequence lengths (default 128, 512, 1024)")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import cpu_line

    from loop_tui import kernels

    kernels.set_num_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
        have_torch = True
    except ImportError:
        have_torch = False
        print("PyTorch is not installed (pip install torch==2.13.0): showing loop_tui alone")
    B, NH, hs = args.batch, args.heads, args.head_size
    print(cpu_line())
    print(
        f"causal attention forward + backward, B {B}, {NH} heads of {hs}, {args.threads} threads, "
        f"median of {args.repeat}, alternating"
    )
    print(f"{'T':>5s} {'ours ms':>8s} {'GFLOP/s':>8s} {'SDPA ms':>8s} {'GFLOP/s':>8s} {'ratio':>6s}  kept for backward")
    for T in args.seq or [128, 512, 1024]:
        ours: list[float] = []
        theirs: list[float] = []
        for r in range(3):  # rounds in alternating order, so drift hits both sides alike
            order = [("ours", ours), ("torch", theirs)] if r % 2 == 0 else [("torch", theirs), ("ours", ours)]
            for name, ts in order:
                if name == "ours":
                    ts += time_ours(B, NH, T, hs, args.repeat)
                elif have_torch:
                    ts += time_torch(B, NH, T, hs, args.repeat)
        f = flops(B, NH, T, hs)
        mo = statistics.median(ours)
        kept = 4 * (B * T * NH * hs + B * NH * T)
        before = 4 * B * NH * T * T
        row = f"{T:5d} {1e3 * mo:8.1f} {f / mo / 1e9:8.1f}"
        if theirs:
            mt = statistics.median(theirs)
            row += f" {1e3 * mt:8.1f} {f / mt / 1e9:8.1f} {mt / mo:5.2f}x"
        print(f"{row}  {kept / 2**20:.1f} MiB (T x T probabilities were {before / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
