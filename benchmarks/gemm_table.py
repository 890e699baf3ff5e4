"""Print loop_tui GEMM vs a yardstick in GFLOP/s on every GEMM of a training step of each seed
config, at 1 and 2 threads, measured side by side (alternating blocks of 3 calls after a 0.3 s pause, so
the other library's spinning idle threads never share the cores; median of 6).

    .venv/bin/python benchmarks/gemm_table.py [--threads 1,2] [--config NAME] [--precision fp32|bf16]

fp32: against numpy's OpenBLAS. bf16: our bf16 GEMM (fp32 arrays in, rounded while packing)
against torch.matmul on bf16 tensors (oneDNN; inputs converted beforehand, not timed).
OpenBLAS fixes its thread count at import, so each thread count runs in its own process."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def measure(threads: int, configs: list[str], precision: str = "fp32") -> list[tuple]:
    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import native_bf16
    from shapes import step_gemms

    from loop_tui import kernels as K
    from loop_tui.ops_table import cost

    K.set_num_threads(threads)
    rows = []
    seen = set()
    for cfg in configs:
        for name, M, N, Kd, ta, tb in step_gemms(cfg):
            if (M, N, Kd, ta, tb) in seen:
                continue
            seen.add((M, N, Kd, ta, tb))
            rng = np.random.default_rng(0)
            a = rng.standard_normal((Kd, M) if ta else (M, Kd), dtype=np.float32)
            b = rng.standard_normal((N, Kd) if tb else (Kd, N), dtype=np.float32)
            c = K.empty((M, N))  # 64-byte aligned, as the model's buffers are
            A, B = (a.T if ta else a), (b.T if tb else b)
            ours = lambda: K.matmul(a, b, out=c, transpose_a=bool(ta), transpose_b=bool(tb), precision=precision)
            if precision == "bf16" and native_bf16():
                import torch

                torch.set_num_threads(threads)
                a16, b16 = torch.from_numpy(a).to(torch.bfloat16), torch.from_numpy(b).to(torch.bfloat16)
                A16, B16 = (a16.T if ta else a16), (b16.T if tb else b16)
                c16 = torch.empty((M, N), dtype=torch.bfloat16)
                blas = lambda: torch.matmul(A16, B16, out=c16)
            else:
                blas = lambda: np.matmul(A, B, out=c)
            t_ours, t_blas = [], []
            for fn, ts in ((ours, t_ours), (blas, t_blas), (ours, t_ours), (blas, t_blas)):
                time.sleep(0.3)  # let the other library's spinning worker threads go idle
                fn()
                for _ in range(3):
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
            flops = cost("matmul", M=M, N=N, K=Kd, ta=ta, tb=tb, accumulate=0, bias=0)[0]
            go, gb = flops / np.median(t_ours) / 1e9, flops / np.median(t_blas) / 1e9
            rows.append((cfg, name, M, N, Kd, threads, float(go), float(gb), float(go / gb)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--config", action="append")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    configs = args.config or ["wiki_gpu_optimized", "wiki_cache_optimized", "wiki_performance_tuned"]
    if args.child:
        import orjson

        print(orjson.dumps(measure(args.child, configs, args.precision)).decode())
        return
    import orjson

    from loop_tui import kernels as K

    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import cpu_line, native_bf16

    print(cpu_line())
    if args.precision == "bf16" and not native_bf16():
        yard = "OpenBLAS"
        print(
            f"bf16 GEMM: loop_tui ({K.isa()}, bf16 path {K.bf16_path()}, micro-kernel {K.gemm_kernel_name('bf16')}) "
            f"vs numpy {__import__('numpy').__version__} OpenBLAS fp32, GFLOP/s, median of 6 (alternating blocks): "
            "this CPU has no AVX512-BF16 or AMX, where PyTorch's bf16 matmul runs a reference path (one "
            "16384x512x2048 product took 25 s on a 2-core AMD EPYC, ours 0.4 s), so the yardstick is fp32"
        )
    elif args.precision == "bf16":
        try:
            import torch
        except ImportError:
            print("bf16 GEMM table needs PyTorch (the yardstick): pip install torch==2.13.0")
            return
        yard = "OneDNN"
        print(
            f"bf16 GEMM: loop_tui ({K.isa()}, bf16 path {K.bf16_path()}, micro-kernel {K.gemm_kernel_name('bf16')}) "
            f"vs torch {torch.__version__} matmul on bf16 tensors, GFLOP/s, median of 6 (alternating blocks)"
        )
    else:
        yard = "OpenBLAS"
        print(
            f"GEMM: loop_tui ({K.isa()}) vs numpy {__import__('numpy').__version__} OpenBLAS, GFLOP/s, "
            "median of 6 (alternating blocks)"
        )
    print(
        f"{'config':24s} {'GEMM':14s} {'M':>6s} {'N':>6s} {'K':>6s} {'thr':>3s} "
        f"{'loop_tui':>9s} {yard:>9s} {'ratio':>6s}"
    )
    worst, ratios = {}, {}
    for t in (int(x) for x in args.threads.split(",")):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(t), "OMP_NUM_THREADS": str(t)}
        cmd = [sys.executable, __file__, "--child", str(t), "--precision", args.precision] + sum(
            (["--config", c] for c in configs), []
        )
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        for cfg, name, M, N, Kd, thr, go, gb, ratio in orjson.loads(out):
            print(f"{cfg:24s} {name:14s} {M:6d} {N:6d} {Kd:6d} {thr:3d} {go:9.1f} {gb:9.1f} {ratio:6.2f}")
            ratios.setdefault(thr, []).append(ratio)
            if thr not in worst or ratio < worst[thr][0]:
                worst[thr] = (ratio, f"{cfg} {name} {M}x{N}x{Kd}")
    for t, (ratio, what) in sorted(worst.items()):
        r = ratios[t]
        print(
            f"{t} thread(s): {sum(x >= 0.9 for x in r)}/{len(r)} shapes >= 0.9x, mean {sum(r) / len(r):.2f}x, "
            f"worst {ratio:.2f}x ({what})"
        )


if __name__ == "__main__":
    main()
