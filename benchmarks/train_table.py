"""The headline table: whole training steps (forward, backward, AdamW) of each seed config with
loop_tui's C kernels and with PyTorch (same model: GPT-2, tied head, same batch, same threads),
on the wiki articles (../shared/data/wiki) or the built-in corpus when they are absent.

    .venv/bin/python benchmarks/train_table.py [--steps 3] [--threads 2] [--config NAME] [--torch-compile]

Each run is its own process, so peak RSS (ru_maxrss) is that implementation's alone. tokens/s is
batch*seq / median step time after 2 warm-up steps; MFU uses this machine's measured FMA peak."""
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


def run_loop(cfg, steps, threads):
    import numpy as np

    from loop_tui.train.trainer import Trainer

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(cfg.replace(data=str(WIKI) if WIKI.is_dir() else None, eval_every=10**6, sample_every=10**6,
                                checkpoint_every=10**6, log_every=10**6), d, threads=threads)
        t.setup()
        times = []
        for i in range(WARMUP + steps):
            s = t.train_step()
            if i >= WARMUP:
                times.append(s.step_time_s)
        t.metrics_file.close()
        return float(np.median(times)), t.peak


def run_torch(cfg, steps, threads, compile_):
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
    if args.child == "loop":
        t, peak = run_loop(cfg, args.steps, args.threads)
    else:
        t, peak = run_torch(cfg, args.steps, args.threads, args.child == "torch-compile")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(orjson.dumps({"step_s": t, "peak_flops": peak, "rss": rss}).decode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", action="append")
    ap.add_argument("--torch-compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import orjson

    from loop_tui.config import load_config
    from loop_tui.model.layout import training_flops_per_token

    configs = args.config or ["wiki_cache_optimized", "wiki_performance_tuned", "wiki_gpu_optimized"]
    try:
        import torch  # noqa: F401
        impls = ["loop", "torch"] + (["torch-compile"] if args.torch_compile else [])
    except ImportError:
        impls = ["loop"]
        print("PyTorch is not installed (pip install -e '.[torch]'): showing loop_tui alone")
    print(f"training steps on {'../shared/data/wiki' if WIKI.is_dir() else 'the built-in corpus'}, "
          f"{args.threads} threads, median of {args.steps} steps after {WARMUP} warm-up")
    print(f"{'config':24s} {'impl':14s} {'step s':>7s} {'tokens/s':>9s} {'MFU':>6s} {'peak RSS':>9s} {'vs torch':>8s}")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "LOOP_THREADS": str(args.threads), "RAYON_NUM_THREADS": "1"}
    peak = None
    for name in configs:
        cfg = load_config(name)
        res = {}
        for impl in impls:
            out = subprocess.run([sys.executable, __file__, "--child", impl, "--config", name, "--steps", str(args.steps),
                                  "--threads", str(args.threads)], env=env, capture_output=True, text=True)
            if out.returncode:
                print(f"{name:24s} {impl:14s} failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            r = orjson.loads(out.stdout.strip().splitlines()[-1])
            peak = r["peak_flops"] or peak
            res[impl] = r
        base = res.get("torch")
        for impl, r in res.items():
            tps = cfg.tokens_per_step / r["step_s"]
            mfu = training_flops_per_token(cfg) * tps / peak if peak else float("nan")
            ratio = f"{base['step_s'] / r['step_s']:.2f}x" if base else "-"
            print(f"{name:24s} {impl:14s} {r['step_s']:7.2f} {tps:9,.0f} {100 * mfu:5.1f}% {r['rss'] / 2**20:8,.0f}M {ratio:>8s}")
    if peak:
        print(f"MFU denominator: measured FMA peak {peak / 1e9:.0f} GFLOP/s; numerator: "
              "6*matmul_params + 6*L*d*(T+1) FLOPs per token (loop analyze explains)")


if __name__ == "__main__":
    main()
