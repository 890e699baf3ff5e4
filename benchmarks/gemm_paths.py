"""A/B of the GEMM's two special paths, each against itself switched off and against OpenBLAS, in one
process (alternating blocks of 3 calls after a 0.3 s pause; median of 9):

  streaming   a C over 32 MiB written once (the LM head) with non-temporal stores, vs regular stores
  short M     M small enough that packed A stays in L2 (weight gradients): threads split N,
              vs the M-blocked path (MC forced to M / threads, what it used before)
  step        whole wiki_cache_optimized training steps with streaming on vs off (alternating steps)

    .venv/bin/python benchmarks/gemm_paths.py [--threads 2] [--no-step]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from loop_tui.ops_table import cost


def timed(fns: dict, reps: int = 3) -> dict[str, float]:
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            time.sleep(0.3)  # let the other library's spinning worker threads go idle
            fn()
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                ts[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in ts.items()}


def operands(M, N, Kd, ta, tb):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((Kd, M) if ta else (M, Kd), dtype=np.float32)
    b = rng.standard_normal((N, Kd) if tb else (Kd, N), dtype=np.float32)
    return a, b, (a.T if ta else a), (b.T if tb else b)


def gemm_ab(K, title, shapes, on, off, labels):
    print(f"\n{title}: GFLOP/s")
    print(
        f"{'M':>6s} {'N':>6s} {'K':>6s} op {labels[0]:>10s} {labels[1]:>10s} {'OpenBLAS':>9s}  "
        f"{labels[0]}/{labels[1]}  {labels[0]}/OpenBLAS"
    )
    for M, N, Kd, ta, tb in shapes:
        a, b, A, B = operands(M, N, Kd, ta, tb)
        c = K.empty((M, N))
        run = lambda: K.matmul(a, b, out=c, transpose_a=bool(ta), transpose_b=bool(tb))
        t = timed(
            {"on": lambda: (on(M), run()), "off": lambda: (off(M), run()), "blas": lambda: np.matmul(A, B, out=c)}
        )
        on(M)
        flops = cost("matmul", M=M, N=N, K=Kd, ta=ta, tb=tb, accumulate=0, bias=0)[0]
        g = {k: flops / v / 1e9 for k, v in t.items()}
        op = ("T" if ta else "N") + ("T" if tb else "N")
        print(
            f"{M:6d} {N:6d} {Kd:6d} {op} {g['on']:10.1f} {g['off']:10.1f} {g['blas']:9.1f}  "
            f"{g['on'] / g['off']:9.2f}x  {g['on'] / g['blas']:12.2f}x"
        )


def step_ab(K, steps: int) -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    from train_table import WIKI

    from loop_tui.config import load_config
    from loop_tui.train.trainer import Trainer

    cfg = load_config("wiki_cache_optimized")
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(
            cfg.replace(
                data=str(WIKI) if WIKI.is_dir() else None,
                eval_every=10**6,
                sample_every=10**6,
                checkpoint_every=10**6,
                log_every=10**6,
            ),
            d,
            threads=K.get_num_threads(),
        )
        t.setup()
        times = {True: [], False: []}
        for i in range(2 + 2 * steps):
            on = i % 2 == 0
            K.set_gemm_streaming(on)
            s = t.train_step()
            if i >= 2:
                times[on].append(s.step_time_s)
        t.metrics_file.close()
    K.set_gemm_streaming(True)
    tok = cfg.batch_size * cfg.max_length
    on, off = (tok / np.median(times[x]) for x in (True, False))
    print(
        f"\nwhole wiki_cache_optimized steps ({steps} each, alternating): streaming {on:,.0f} tokens/s, "
        f"regular stores {off:,.0f} tokens/s, {on / off:.3f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="whole steps per side in the step A/B")
    ap.add_argument("--no-step", action="store_true", help="skip the whole-step A/B")
    args = ap.parse_args()
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):  # OpenBLAS reads it at import
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    from loop_tui import kernels as K

    K.set_num_threads(args.threads)
    blk = K.gemm_blocking()
    print(
        f"loop_tui GEMM paths ({K.isa()}, {args.threads} threads, numpy {np.__version__} OpenBLAS); "
        f"short M <= {blk.short_m_rows}, streaming C > {blk.stream_min_mib} MiB"
    )
    gemm_ab(
        K,
        "streaming stores (64-byte aligned C)",
        [(1024, 16000, 320, 0, 1), (1024, 16000, 384, 0, 1), (1024, 16000, 512, 0, 1)],
        lambda M: K.set_gemm_streaming(True),
        lambda M: K.set_gemm_streaming(False),
        ("stream", "regular"),
    )
    mr = blk.mr
    split_m = lambda M: K.set_gemm_blocking(mc=-(-M // args.threads // mr) * mr)
    gemm_ab(
        K,
        "short-M path (threads split N) vs M-blocked",
        [
            (320, 960, 3840, 1, 0),
            (320, 1280, 3840, 1, 0),
            (384, 1152, 4096, 1, 0),
            (384, 1536, 4096, 1, 0),
            (512, 1536, 16384, 1, 0),
            (512, 2048, 16384, 1, 0),
        ],
        lambda M: K.set_gemm_blocking(0, 0, 0),
        split_m,
        ("short-M", "M-blocked"),
    )
    if not args.no_step:
        step_ab(K, args.steps)


if __name__ == "__main__":
    main()
