"""Data preparation at scale: peak RSS and throughput of tokenizer training + encoding on a
generated corpus, once as thousands of files and once as one file.

    .venv/bin/python benchmarks/tokenizer_memory.py [--mb 200] [--files 5000] [--vocab 16000]

The corpus is synthetic English-like text (Zipf-distributed words from a 200k-word vocabulary,
80-character lines), generated once under the cache folder. Each layout runs `prepare` in its own
process with an empty token cache; peak RSS is the larger of that process and its tokenizer
child (ru_maxrss), so it is the whole pipeline's. Targets (issue 11): peak RSS <= 2 GB for both
layouts and >= 2 MB/s end to end on 2 cores."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(root: Path, mb: int, files: int, seed: int = 0) -> None:
    import numpy as np

    if (root / "done").exists():
        return
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    p = 1 / np.arange(1, 27)
    vocab = np.array(["".join(rng.choice(letters, size=int(n), p=p / p.sum())) for n in rng.integers(1, 12, 200_000)])
    many, one = root / "many_files", root / "one_file"
    many.mkdir(parents=True, exist_ok=True)
    one.mkdir(parents=True, exist_ok=True)
    per_file = mb * 1_000_000 // files
    with open(one / "all.txt", "w") as big:
        for i in range(files):
            words = vocab[(rng.zipf(1.2, size=per_file // 6) - 1) % len(vocab)]
            text = " ".join(words)
            text = "\n".join(text[j : j + 80] for j in range(0, len(text), 80)) + "\n"
            (many / f"doc{i:05d}.txt").write_text(text)
            big.write(text)
    (root / "done").write_text("ok")


def child(folder: str, vocab: int) -> None:
    import orjson

    from loop_tui.data.corpus import load_corpus
    from loop_tui.data.tokens import prepare

    t0 = time.perf_counter()
    corpus = load_corpus(folder)
    data = prepare(corpus, vocab, 0.05, 1025)
    took = time.perf_counter() - t0
    rss = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    print(
        orjson.dumps(
            {
                "bytes": corpus.bytes,
                "docs": len(corpus.docs),
                "seconds": took,
                "rss": rss * 1024,
                "tokens": len(data.train) + len(data.val),
            }
        ).decode()
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.vocab)
        return
    import orjson

    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import cpu_line

    from loop_tui.cache import cache_dir

    root = cache_dir() / f"bench-corpus-{args.mb}mb-{args.files}"
    print(cpu_line())
    print(f"generating a {args.mb} MB corpus under {root} (once)…", flush=True)
    generate(root, args.mb, args.files)
    print(f"{'layout':12s} {'docs':>6s} {'MB':>7s} {'seconds':>8s} {'MB/s':>6s} {'peak RSS':>9s} {'tokens':>12s}")
    for layout in ("many_files", "one_file"):
        with tempfile.TemporaryDirectory() as empty_cache:
            env = {k: v for k, v in os.environ.items() if k != "LOOP_DATA_THREADS"}  # every core, as a user gets
            env["LOOP_CACHE_DIR"] = empty_cache
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(root / layout), "--vocab", str(args.vocab)],
                env=env,
                capture_output=True,
                text=True,
            )
        if out.returncode:
            print(f"{layout:12s} failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        r = orjson.loads(out.stdout.strip().splitlines()[-1])
        mb = r["bytes"] / 1e6
        print(
            f"{layout:12s} {r['docs']:6d} {mb:7.1f} {r['seconds']:8.1f} {mb / r['seconds']:6.2f} "
            f"{r['rss'] / 2**30:7.2f}G {r['tokens']:12,d}"
        )
    print("targets: peak RSS <= 2 GB for both layouts, >= 2 MB/s end to end")


if __name__ == "__main__":
    main()
