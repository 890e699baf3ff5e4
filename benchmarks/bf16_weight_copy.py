"""Would a bf16 copy of each weight matrix (refreshed once per step after AdamW) beat rounding the
weights while packing? The most such a copy can save is the time the GEMMs spend rounding their
weight operand. This bounds it from above: on every GEMM of a step, our bf16 GEMM (both operands
rounded while packing) against our fp32 GEMM on the same shapes (no rounding at all), summed over
one step (layer GEMMs times num_layers, head GEMMs times the head's chunks); the share of that
difference on the GEMMs with a weight operand is what a weight copy could at most win.

    .venv/bin/python benchmarks/bf16_weight_copy.py [--config wiki_cache_optimized] [--threads 2]

Alternating blocks of 3 calls, median of 6 per shape and path."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

WEIGHT_OPERAND = ("qkv NN", "fc NN", "fcproj NN", "head NT", "dx qkv NT", "dx fc NT", "dx fcproj NT", "dx head NN")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="wiki_cache_optimized")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import cpu_line
    from shapes import step_gemms

    from loop_tui import kernels as K
    from loop_tui.config import load_config
    from loop_tui.model.layout import head_chunk_rows

    cfg = load_config(args.config)
    K.set_num_threads(args.threads)
    rows = cfg.batch_size * cfg.max_length
    chunks = -(-rows // head_chunk_rows(cfg, rows))
    print(cpu_line())
    print(f"{args.config}, {args.threads} threads; bf16 path: {K.gemm_kernel_name('bf16')}")
    print(f"{'GEMM':14s} {'M×N×K':>18s} {'per step':>8s} {'fp32 ms':>8s} {'bf16 ms':>8s}")
    total = {"fp32": 0.0, "bf16": 0.0}
    weight_side = 0.0
    for name, M, N, Kd, ta, tb in step_gemms(args.config):
        count = chunks if ("head" in name or "dwte" in name) else cfg.num_layers
        rng = np.random.default_rng(0)
        a = rng.standard_normal((Kd, M) if ta else (M, Kd), dtype=np.float32)
        b = rng.standard_normal((N, Kd) if tb else (Kd, N), dtype=np.float32)
        c = K.empty((M, N))
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for precision in ("fp32", "bf16", "fp32", "bf16"):
            K.matmul(a, b, out=c, transpose_a=bool(ta), transpose_b=bool(tb), precision=precision)
            for _ in range(3):
                t0 = time.perf_counter()
                K.matmul(a, b, out=c, transpose_a=bool(ta), transpose_b=bool(tb), precision=precision)
                times[precision].append(time.perf_counter() - t0)
        med = {p: float(np.median(ts)) * count for p, ts in times.items()}
        for p in total:
            total[p] += med[p]
        if name in WEIGHT_OPERAND:
            weight_side += max(0.0, med["bf16"] - med["fp32"])
        print(f"{name:14s} {f'{M}×{N}×{Kd}':>18s} {count:8d} {1e3 * med['fp32']:8.1f} {1e3 * med['bf16']:8.1f}")
    extra = total["bf16"] - total["fp32"]
    print(
        f"GEMM time per step: fp32 {total['fp32']:.3f} s, bf16 (rounding while packing) {total['bf16']:.3f} s; "
        f"rounding costs {extra:.3f} s ({100 * extra / total['bf16']:.1f}% of the bf16 GEMM time)"
    )
    print(
        f"upper bound on what a bf16 weight copy could save: {weight_side:.3f} s per step "
        f"({100 * weight_side / total['bf16']:.1f}% of the bf16 GEMM time), before paying for refreshing the copy"
    )


if __name__ == "__main__":
    main()
