"""The headline table: whole training steps (forward, backward, AdamW) of each seed config with
loop_tui's C kernels and with PyTorch (same model: GPT-2, tied head, same batch, same threads),
on the wiki articles (../shared/data/wiki) or the built-in corpus when they are absent.

    .venv/bin/python benchmarks/train_table.py [--steps 3] [--threads 2] [--config NAME] [--torch-compile]
                                               [--precision fp32,bf16] [--rounds 1]

Rows: loop_tui and PyTorch eager (and torch.compile) in fp32, and in bf16: loop_tui's bf16 GEMMs
(fp32 master weights) against PyTorch under torch.autocast("cpu", dtype=torch.bfloat16). fp32 rows
are compared with PyTorch eager fp32, bf16 rows with PyTorch's best bf16 row. Each run is its own
process, so peak RSS (ru_maxrss) is that implementation's alone; with --rounds N the
implementations run N times in alternating order and the median is kept. tokens/s is
batch*seq / median step time after 2 warm-up steps; MFU is against this machine's measured peak
of the row's precision (FMA for fp32; for bf16 the bf16 GEMM path's own instruction loop)."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

WIKI = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wiki"
WARMUP = 2


def batches(cfg, n):
    from loop_tui.data.batches import BatchSampler
    from loop_tui.data.corpus import load_corpus
    from loop_tui.data.tokens import prepare

    corpus = load_corpus(str(WIKI) if WIKI.is_dir() else None)
    data = prepare(corpus, cfg.vocab_size, cfg.val_fraction, cfg.max_length + 1)
    s = BatchSampler(data.train, cfg.batch_size, cfg.max_length, 0)
    return [s.next() for _ in range(n)], corpus.name


def run_loop(cfg, steps, threads, precision):
    import tempfile

    import numpy as np

    from loop_tui.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as d:
        t = Trainer(
            cfg.replace(
                data=str(WIKI) if WIKI.is_dir() else None,
                eval_every=10**6,
                sample_every=10**6,
                checkpoint_every=10**6,
                log_every=10**6,
                precision=precision,
            ),
            d,
            threads=threads,
        )
        t.setup()
        times = []
        for i in range(WARMUP + steps):
            s = t.train_step()
            if i >= WARMUP:
                times.append(s.step_time_s)
        t.metrics_file.close()
        return float(np.median(times)), t.peak


def run_torch(cfg, steps, threads, compile_, bf16):
    import contextlib

    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    d, nh, L, V, T = cfg.d_model, cfg.num_heads, cfg.num_layers, cfg.vocab_size, cfg.max_length

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
            self.fc, self.fcproj = torch.nn.Linear(d, cfg.d_ff), torch.nn.Linear(cfg.d_ff, d)

        def forward(self, x):
            B, T_, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (t.view(B, T_, nh, d // nh).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T_, d)
            x = x + self.proj(y)
            return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = torch.nn.Embedding(V, d), torch.nn.Embedding(T, d)
            self.blocks = torch.nn.ModuleList(Block() for _ in range(L))
            self.lnf = torch.nn.LayerNorm(d)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for b in self.blocks:
                x = b(x)
            logits = self.lnf(x) @ self.wte.weight.T  # tied head
            return F.cross_entropy(logits.view(-1, V), targets.reshape(-1))

    model = GPT()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    step_fn = torch.compile(model) if compile_ else model
    data, _ = batches(cfg, WARMUP + steps)
    times = []
    for i, (x, y) in enumerate(data):
        x, y = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = step_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)), None


def child(args) -> None:
    import orjson

    from loop_tui.config import load_config

    cfg = load_config(args.config[0])
    bf16 = args.child.endswith("-bf16")
    if args.child.startswith("loop"):
        t, peak = run_loop(cfg, args.steps, args.threads, "bf16" if bf16 else "fp32")
    else:
        t, peak = run_torch(cfg, args.steps, args.threads, args.child.startswith("torch-compile"), bf16)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(orjson.dumps({"step_s": t, "peak_flops": peak, "rss": rss}).decode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", action="append")
    ap.add_argument("--torch-compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16 (default both)")
    ap.add_argument("--rounds", type=int, default=1, help="run every implementation N times, alternating; median")
    ap.add_argument(
        "--child-timeout",
        type=float,
        default=900,
        help="seconds one implementation may take (PyTorch's bf16 autocast on a CPU without native "
        "bf16 runs a reference GEMM at ~1 GFLOP/s)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import statistics

    import orjson

    from loop_tui.config import load_config
    from loop_tui.model.layout import training_flops_per_token

    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import cpu_line, native_bf16

    configs = args.config or ["wiki_cache_optimized", "wiki_performance_tuned", "wiki_gpu_optimized"]
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    try:
        import torch  # noqa: F401

        torch_impls = ["torch"] + (["torch-compile"] if args.torch_compile else [])
    except ImportError:
        torch_impls = []
        print("PyTorch is not installed (pip install torch==2.13.0): showing loop_tui alone")
    # without bf16 instructions PyTorch's bf16 autocast runs a reference GEMM (~1 GFLOP/s): its rows
    # would only time out, so loop_tui's bf16 row is compared with PyTorch's best fp32 row instead
    torch_bf16 = native_bf16()
    impls = []
    for p in precisions:
        sfx = "-bf16" if p == "bf16" else ""
        impls += ["loop" + sfx] + [t + sfx for t in torch_impls if torch_bf16 or p != "bf16"]
    print(cpu_line())
    if "bf16" in precisions and torch_impls and not torch_bf16:
        print(
            "PyTorch bf16 autocast rows left out: this CPU has no AVX512-BF16 or AMX, where oneDNN's bf16 "
            "GEMM runs a reference path; loop_tui's bf16 row is compared with PyTorch's best fp32 row"
        )
    print(
        f"training steps on {'../shared/data/wiki' if WIKI.is_dir() else 'the built-in corpus'}, "
        f"{args.threads} threads, median of {args.steps} steps after {WARMUP} warm-up, {args.rounds} round(s)"
    )
    print(f"{'config':24s} {'impl':20s} {'step s':>7s} {'tokens/s':>9s} {'MFU':>6s} {'peak RSS':>9s} {'ratio':>7s}  vs")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "OPENBLAS_NUM_THREADS": str(args.threads),
        "LOOP_THREADS": str(args.threads),
        "RAYON_NUM_THREADS": "1",
    }
    peaks: dict[str, float] = {}
    for name in configs:
        cfg = load_config(name)
        runs: dict[str, list] = {}
        slower_than: dict[str, float] = {}  # PyTorch rows that timed out: their step time's lower bound
        for r_i in range(args.rounds):
            for impl in impls if r_i % 2 == 0 else impls[::-1]:
                try:
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            impl,
                            "--config",
                            name,
                            "--steps",
                            str(args.steps),
                            "--threads",
                            str(args.threads),
                        ],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=args.child_timeout,
                    )
                except subprocess.TimeoutExpired:
                    per_step = args.child_timeout / (args.steps + WARMUP)
                    slower_than[impl] = per_step  # its step takes at least this: a bound for the ratio
                    print(
                        f"{name:24s} {impl:20s} timed out: {args.steps + WARMUP} steps took over "
                        f"{args.child_timeout:.0f} s (over {per_step:.0f} s per step)"
                    )
                    continue
                if out.returncode:
                    print(f"{name:24s} {impl:20s} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
                    continue
                r = orjson.loads(out.stdout.strip().splitlines()[-1])
                if r["peak_flops"]:
                    peaks["bf16" if impl.endswith("-bf16") else "fp32"] = r["peak_flops"]
                runs.setdefault(impl, []).append(r)
        res = {
            impl: {"step_s": statistics.median(x["step_s"] for x in rs), "rss": max(x["rss"] for x in rs)}
            for impl, rs in runs.items()
        }
        for impl, r in res.items():
            prec = "bf16" if impl.endswith("-bf16") else "fp32"
            if impl.startswith("loop"):  # against PyTorch's best row of the same precision (fp32 when bf16 is left out)
                bf16_rows = prec == "bf16" and torch_bf16
                theirs = [k for k in res if not k.startswith("loop") and k.endswith("-bf16") == bf16_rows]
                base = min(theirs, key=lambda k: res[k]["step_s"]) if theirs else None
            else:
                base = None
            tps = cfg.tokens_per_step / r["step_s"]
            peak = peaks.get(prec)
            mfu = training_flops_per_token(cfg) * tps / peak if peak else float("nan")
            ratio = f"{res[base]['step_s'] / r['step_s']:.2f}x" if base else ""
            bounds = [v for k, v in slower_than.items() if k.endswith("-bf16") == (prec == "bf16")]
            if impl.startswith("loop") and base is None and bounds:  # every PyTorch row timed out
                base, ratio = f"PyTorch {prec} (timed out)", f">{min(bounds) / r['step_s']:.1f}x"
            print(
                f"{name:24s} {impl:20s} {r['step_s']:7.2f} {tps:9,.0f} {100 * mfu:5.1f}% {r['rss'] / 2**20:8,.0f}M "
                f"{ratio:>7s}  {base or ''}"
            )
    for prec, peak in peaks.items():
        print(
            f"MFU denominator for {prec} rows: measured peak {peak / 1e9:.0f} GFLOP/s"
            + (" (the bf16 GEMM path's instruction loop)" if prec == "bf16" else " (FMA loop)")
        )
    print("numerator: 6*matmul_params + 6*L*d*(T+1) FLOPs per token (loop analyze explains)")


if __name__ == "__main__":
    main()
