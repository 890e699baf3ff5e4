"""Generation speed: loop_tui's KV-cache decoder against transformers' `generate` (its own KV
cache) on the same exported model, plus our uncached path (the whole window per token).

    .venv/bin/python benchmarks/generate_table.py [--tokens 256] [--threads 2] [--shape NAME ...]

Each shape is a randomly initialised GPT-2 exported with `loop export`'s writer, then loaded by
transformers from that folder: the same weights on both sides. Greedy decoding, a 16-token prompt,
`--tokens` new tokens (end-of-text does not stop either side); tokens/s counts new tokens over the
whole call (prefill included), median of --repeat runs, alternating. The greedy tokens of both
sides are compared: 'match' means identical ids."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = {  # our config fields; vocab and context of the seed configs and of GPT-2 small
    "wiki_cache_optimized": dict(d_model=384, num_heads=8, num_layers=4, d_ff=1536, vocab_size=16000, max_length=512),
    "gpt2_small": dict(d_model=768, num_heads=12, num_layers=12, d_ff=3072, vocab_size=50257, max_length=1024),
}


def build(shape: str, folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from loop_tui import hf
    from loop_tui.config import from_dict
    from loop_tui.kernels.backend import CBackend
    from loop_tui.model.gpt import GPT

    cfg = from_dict({**SHAPES[shape], "batch_size": 1, "name": shape}, shape)
    m = GPT(cfg, CBackend(), batch_size=1)
    m.init_weights(0)
    tok = Tokenizer(models.BPE())  # the tokenizer plays no part in timing; the writer needs one
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens(["<|endoftext|>"])
    hf.export_params(cfg, m.export_params(), tok.to_str().encode(), folder)
    return cfg, m


def ours(m, prompt: np.ndarray, n: int, cached: bool) -> tuple[float, list[int]]:
    from loop_tui.kernels.decode import Decoder

    t0 = time.perf_counter()
    out: list[int] = []
    if cached:
        dec = Decoder(m)
        logits = dec.prefill(prompt)
        for _ in range(n):
            out.append(int(np.argmax(logits)))
            logits = dec.step(out[-1])
    else:
        for _ in range(n):
            ctx = np.concatenate([prompt, np.asarray(out, np.int32)])[-m.T :]
            out.append(int(np.argmax(m.next_token_logits(ctx))))
    return time.perf_counter() - t0, out


def theirs(model, prompt: np.ndarray, n: int) -> tuple[float, list[int]]:
    import torch

    ids = torch.tensor(prompt[None].astype(np.int64))
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return time.perf_counter() - t0, out[0, len(prompt) :].tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shape", action="append", choices=list(SHAPES))
    ap.add_argument("--uncached-tokens", type=int, default=64, help="new tokens for the (slow) uncached row")
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import cpu_line

    from loop_tui import kernels

    kernels.set_num_threads(args.threads)
    try:
        import torch
        import transformers
    except ImportError:
        print("transformers/torch not installed: pip install -e '.[dev]' torch==2.13.0")
        return
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(cpu_line())
    print(f"greedy generation, {args.threads} threads, 16-token prompt, median of {args.repeat}")
    print(f"{'model':22s} {'impl':28s} {'new tokens':>10s} {'s':>7s} {'tokens/s':>9s} {'ratio':>7s}  note")
    for shape in args.shape or list(SHAPES):
        with tempfile.TemporaryDirectory() as d:
            folder = Path(d) / "model"
            cfg, m = build(shape, folder)
            ref = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
            prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, 16).astype(np.int32)
            rows: dict[str, list[float]] = {"loop (KV cache)": [], "transformers generate": []}
            outs = {}
            for r in range(args.repeat):
                order = list(rows) if r % 2 == 0 else list(rows)[::-1]
                for impl in order:
                    t, ids = (
                        ours(m, prompt, args.tokens, True)
                        if impl.startswith("loop")
                        else theirs(ref, prompt, args.tokens)
                    )
                    rows[impl].append(t)
                    outs[impl] = ids
            t_unc, ids_unc = ours(m, prompt, args.uncached_tokens, False)
            med = {k: statistics.median(v) for k, v in rows.items()}
            tps = {k: args.tokens / v for k, v in med.items()}
            match = outs["loop (KV cache)"] == outs["transformers generate"]
            same_unc = ids_unc == outs["loop (KV cache)"][: args.uncached_tokens]
            base = tps["transformers generate"]
            for impl in rows:
                ratio = f"{tps[impl] / base:.2f}x" if impl.startswith("loop") else ""
                note = f"greedy ids {'match' if match else 'DIFFER'}" if impl.startswith("loop") else ""
                print(f"{shape:22s} {impl:28s} {args.tokens:10d} {med[impl]:7.2f} {tps[impl]:9.1f} {ratio:>7s}  {note}")
            unc = args.uncached_tokens / t_unc
            print(
                f"{shape:22s} {'loop (no cache, window)':28s} {args.uncached_tokens:10d} {t_unc:7.2f} {unc:9.1f} "
                f"{unc / base:6.2f}x  cache speed-up {tps['loop (KV cache)'] / unc:.1f}x; "
                f"ids {'match' if same_unc else 'DIFFER'} the cached run"
            )


if __name__ == "__main__":
    main()
