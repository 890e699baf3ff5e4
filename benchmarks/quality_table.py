"""Quality for the time spent: held-out bits per byte after M minutes of training on the wiki articles.

    .venv/bin/python benchmarks/quality_table.py [--minutes 5,15,30] [--threads 2] [--seeds a,b] [--work DIR]
                                                 [--continue]

The 122 articles of ../shared/data/wiki are split once by name: every HELD_OUT_EVERY-th (sorted) is
held out and never trained on; the rest is the training folder. For each budget M:
  (a) `loop plan --data TRAIN --minutes M`, then `loop train` of that config;
  (b) each seed config as shipped (`loop train NAME --data TRAIN`), stopped when its steps have taken
      M minutes (one run per seed: stopped at the smallest budget, scored, resumed to the next; a seed's
      schedule does not depend on the budget, so this is the run cut at each budget);
  (c) the same model as (a), trained by PyTorch with nanoGPT's recipe (AdamW with decay on matrices,
      warm-up then cosine to 10%, gradient clipping at 1, dropout on the embeddings, the attention
      projection and the MLP output) for the same M minutes on the same token ids and batches; bf16
      autocast only where the CPU has native bf16 and 3 timed steps show it faster. Two rows, with the
      values of (`--torch-values`):
        plan     (a)'s own learning rate, beta2, warm-up and dropout: only the trainer differs;
        nanogpt  nanoGPT's small-data config, config/train_shakespeare_char.py (lr 1e-3, beta2 0.99,
                 100 warm-up steps, dropout 0.2; train.py's weight decay 0.1 and clipping at 1).
Every row is scored by `loop eval --data HELD_OUT` (PyTorch's weights through a HuggingFace folder).
Minutes are the time of the training steps alone (forward, backward, optimizer), for every row alike.
The curves are (a)'s and (c)'s bits per byte at their checkpoints against minutes of training.
Each row is written to WORK/rows.jsonl when it is scored. The full table is hours of a small machine:
`--continue` finishes one over several sittings on the same CPU (the rows already there are reused,
the seeds' runs resume where they stopped, and the table says which sittings measured it)."""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

WIKI = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wiki"
SEEDS = ("wiki_cache_optimized", "wiki_performance_tuned", "wiki_gpu_optimized")
# (c)'s hyperparameters: (a)'s plan as it is, or nanoGPT's for small data (karpathy/nanoGPT's
# config/train_shakespeare_char.py over train.py's defaults; its 6x384 "baby GPT" is near (a)'s shapes)
TORCH_VALUES = {
    "plan": {},
    "nanogpt": dict(
        learning_rate=1e-3, beta1=0.9, beta2=0.99, warmup_steps=100, min_lr_ratio=0.1, dropout=0.2,
        weight_decay=0.1, grad_clip=1.0,
    ),
}  # fmt: skip
TORCH_ROWS = {"plan": "(c) PyTorch", "nanogpt": "(c) PyTorch, nanoGPT values"}
HELD_OUT_EVERY = 10
CURVE_POINTS = 6


def loop(*args: str) -> list[str]:
    return [sys.executable, "-m", "loop_tui", *args]


def split_articles(wiki: Path, work: Path) -> tuple[Path, Path]:
    """TRAIN and HELD_OUT folders of links to the articles (the same split every time)."""
    train, held = work / "train", work / "held_out"
    for d in (train, held):
        d.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(sorted(wiki.glob("*.txt"))):
        link = (held if i % HELD_OUT_EVERY == 0 else train) / f.name
        if not link.exists():
            link.symlink_to(f)
    return train, held


def train_for(config: str, run: Path, minutes: float, train: Path, threads: int, *extra: str) -> str:
    """`loop train` until it ends or its steps have taken `minutes` of its own clock (the trainer stops
    after the step that spends budget_minutes; as for PyTorch, evaluations, samples and checkpoints are
    not counted), continuing RUN when it has a checkpoint. The log's last line when it failed, else ""."""
    log_path = run.parent / f"{run.name}.log"
    cmd = loop("train", config, "--no-tui", "--data", str(train), "--out", str(run), "--threads", str(threads))
    cmd += ["--set", "log_every=1", "--set", f"budget_minutes={minutes}", *extra]
    if (run / "checkpoints").is_dir():
        cmd.append("--resume")
    with open(log_path, "a") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    return "" if code == 0 else (log_path.read_text().strip().splitlines() or ["?"])[-1]


def bits_per_byte(model: Path, held: Path, threads: int, step: int | None = None) -> float:
    import orjson

    cmd = loop("eval", str(model), "--data", str(held), "--json", "--threads", str(threads))
    out = subprocess.run(cmd + (["--step", str(step)] if step else []), capture_output=True, text=True)
    if out.returncode:
        return math.nan
    return orjson.loads(out.stdout.strip().splitlines()[-1])["bits_per_byte"]


def run_curve(run: Path, held: Path, threads: int) -> list[tuple[float, float]]:
    """(minutes of training, held-out bits per byte) at each kept checkpoint of a run."""
    import orjson

    from loop_tui.train.checkpoint import PREFIX, list_checkpoints

    points = []
    for ckpt in list_checkpoints(run):
        elapsed = orjson.loads((ckpt / "state.json").read_bytes())["elapsed_s"]
        points.append((elapsed / 60, bits_per_byte(run, held, threads, int(ckpt.name[len(PREFIX) :]))))
    return points


# ---------------------------------------------------------------- (c): PyTorch, nanoGPT's recipe
def torch_child(args) -> None:
    """Train (a)'s model in PyTorch for --minutes; snapshots as HuggingFace folders under --out."""
    import contextlib

    import numpy as np
    import orjson
    import torch
    import torch.nn.functional as F

    from loop_tui.config import from_dict
    from loop_tui.data.batches import BatchSampler
    from loop_tui.data.corpus import load_corpus
    from loop_tui.data.tokens import prepare
    from loop_tui.hf import export_params
    from loop_tui.plan import dropout_for

    raw = orjson.loads(Path(args.torch_child).read_bytes())
    cfg = from_dict({**raw, **TORCH_VALUES[args.torch_values]}, args.torch_child)
    data = prepare(load_corpus(args.train), cfg.vocab_size, cfg.val_fraction, cfg.max_length + 1)
    dropout = getattr(cfg, "dropout", None)
    if dropout is None:
        dropout = dropout_for(cfg.max_steps * cfg.tokens_per_step / len(data.train))
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.seed)
    d, nh, V, T = cfg.d_model, cfg.num_heads, cfg.vocab_size, cfg.max_length

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
            self.fc, self.fcproj = torch.nn.Linear(d, cfg.d_ff), torch.nn.Linear(cfg.d_ff, d)
            self.drop = torch.nn.Dropout(dropout)

        def forward(self, x):
            B, T_, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (t.view(B, T_, nh, d // nh).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T_, d)
            x = x + self.drop(self.proj(y))
            return x + self.drop(self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))

    class GPT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = torch.nn.Embedding(V, d), torch.nn.Embedding(T, d)
            self.drop = torch.nn.Dropout(dropout)
            self.blocks = torch.nn.ModuleList(Block() for _ in range(cfg.num_layers))
            self.lnf = torch.nn.LayerNorm(d)
            for name, p in self.named_parameters():  # nanoGPT's init
                if p.dim() == 2:
                    std = 0.02 / math.sqrt(2 * cfg.num_layers) if name.endswith(("proj.weight",)) else 0.02
                    torch.nn.init.normal_(p, 0.0, std)
                elif name.endswith("bias"):
                    torch.nn.init.zeros_(p)

        def forward(self, idx, targets):
            x = self.drop(self.wte(idx) + self.wpe(torch.arange(idx.shape[1])))
            for b in self.blocks:
                x = b(x)
            logits = self.lnf(x) @ self.wte.weight.T  # tied head
            return F.cross_entropy(logits.view(-1, V), targets.reshape(-1))

        def loop_params(self) -> dict[str, np.ndarray]:
            """The weights under loop_tui's names and layouts (Linear weights transposed)."""
            sd = {k: v.detach().float().numpy() for k, v in self.state_dict().items()}
            out = {"wte": sd["wte.weight"], "wpe": sd["wpe.weight"], "lnf_w": sd["lnf.weight"], "lnf_b": sd["lnf.bias"]}
            for i in range(cfg.num_layers):
                for ours, theirs in (("qkv", "qkv"), ("proj", "proj"), ("fc", "fc"), ("fcproj", "fcproj")):
                    out[f"h{i}.{ours}_w"] = sd[f"blocks.{i}.{theirs}.weight"].T.copy()
                    out[f"h{i}.{ours}_b"] = sd[f"blocks.{i}.{theirs}.bias"]
                for ln in ("ln1", "ln2"):
                    out[f"h{i}.{ln}_w"], out[f"h{i}.{ln}_b"] = (
                        sd[f"blocks.{i}.{ln}.weight"],
                        sd[f"blocks.{i}.{ln}.bias"],
                    )
            return out

    def fresh():
        """Weights (seeded), AdamW with decay on matrices only, and the batch stream of loop's trainer."""
        torch.manual_seed(cfg.seed)
        model = GPT()
        groups = [
            {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps)
        return model, opt, BatchSampler(data.train, cfg.batch_size, T, cfg.seed + 1)

    def step(model, opt, sampler, bf16: bool) -> float:
        x, y = (torch.from_numpy(a.astype(np.int64)) for a in sampler.next())
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return float(loss)

    flags = open("/proc/cpuinfo").read()
    bf16 = False
    if "amx_bf16" in flags or "avx512_bf16" in flags:  # elsewhere autocast's bf16 GEMMs are emulated: slower
        timed = {}
        for precision in (False, True):
            trial = fresh()
            step(*trial, precision)  # warm-up
            t0 = time.perf_counter()
            for _ in range(3):
                step(*trial, precision)
            timed[precision] = time.perf_counter() - t0
        bf16 = timed[True] < timed[False]
    model, opt, sampler = fresh()
    tokenizer_json = data.tokenizer_path.read_bytes()
    budget = args.minutes * 60
    marks = [budget * (k + 1) / CURVE_POINTS for k in range(CURVE_POINTS)]
    snapshots, elapsed, steps = [], 0.0, 0
    out = Path(args.out)
    floor = cfg.learning_rate * cfg.min_lr_ratio
    model.train()
    while elapsed < budget:
        progress = elapsed / budget  # the cosine runs over the time budget (its length in steps is unknown)
        lr = (
            cfg.learning_rate * (steps + 1) / cfg.warmup_steps
            if steps < cfg.warmup_steps
            else floor + 0.5 * (cfg.learning_rate - floor) * (1 + math.cos(math.pi * progress))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        t0 = time.perf_counter()
        step(model, opt, sampler, bf16)
        elapsed += time.perf_counter() - t0
        steps += 1
        if elapsed >= marks[len(snapshots)] or elapsed >= budget:
            folder = out / f"torch-{len(snapshots)}"
            export_params(cfg, model.loop_params(), tokenizer_json, folder)
            snapshots.append((elapsed / 60, str(folder)))
    print(
        orjson.dumps(
            {
                "precision": "bf16" if bf16 else "fp32",
                "steps": steps,
                "tokens_per_s": steps * cfg.tokens_per_step / elapsed,
                "dropout": dropout,
                "learning_rate": cfg.learning_rate,
                "beta2": cfg.beta2,
                "snapshots": snapshots,
            }
        ).decode()
    )


def torch_row(plan_json: Path, values: str, train: Path, held: Path, minutes: float, threads: int, work: Path) -> dict:
    import orjson

    out = work / (f"torch-{minutes:g}" if values == "plan" else f"torch-{values}-{minutes:g}")
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--torch-child", str(plan_json), "--train", str(train), "--out", str(out)]
    cmd += ["--minutes", str(minutes), "--threads", str(threads), "--torch-values", values]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    info = orjson.loads(r.stdout.strip().splitlines()[-1])
    info["curve"] = [(m, bits_per_byte(Path(p), held, threads)) for m, p in info["snapshots"]]
    info["bpb"] = info["curve"][-1][1]
    return info


def _steps(run: Path) -> str:
    """'N steps' of a run's newest checkpoint."""
    from loop_tui.train.checkpoint import PREFIX, latest

    newest = latest(run)
    return f"{int(newest.name[len(PREFIX) :])} steps" if newest else "no checkpoint"


def describe(cfg) -> str:
    return f"{cfg.num_layers}x{cfg.d_model} ctx{cfg.max_length} V{cfg.vocab_size} B{cfg.batch_size}"


class Rows:
    """The measured rows, one JSON line each in WORK/rows.jsonl, written as each row is scored: with
    --continue a later sitting on the same CPU reuses them (and resumes the seeds' runs) instead of
    measuring them again, so a table longer than one sitting can still be finished."""

    def __init__(self, path: Path, cpu: str, threads: int):
        import orjson

        self.path, self.cpu, self.threads, self.rows = path, cpu, threads, {}
        for line in path.read_text().splitlines() if path.exists() else []:
            r = orjson.loads(line)
            r["bpb"] = math.nan if r["bpb"] is None else r["bpb"]  # JSON has no NaN: a failed row is null
            if (r["cpu"], r["threads"]) != (cpu, threads):
                sys.exit(
                    f"{path}: its rows were measured on {r['cpu']} with {r['threads']} threads, not on this "
                    f"{cpu} with {threads}: start a new table (without --continue)"
                )
            self.rows[(r["minutes"], r["row"])] = r

    def get(self, minutes: float, name: str) -> dict | None:
        return self.rows.get((minutes, name))

    def add(self, minutes: float, name: str, shape: str, params: int, bpb: float, note: str, curve=None) -> None:
        import datetime

        import orjson

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        r = {
            "minutes": minutes, "row": name, "shape": shape, "params": params, "bpb": bpb, "note": note,
            "curve": curve, "cpu": self.cpu, "threads": self.threads,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit.stdout.strip() if commit.returncode == 0 else "?",
        }  # fmt: skip
        self.rows[(minutes, name)] = r
        with open(self.path, "ab") as f:
            f.write(orjson.dumps(r, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", default="5,15,30", help="comma-separated training budgets (default 5,15,30)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seeds", default=",".join(SEEDS), help="comma-separated seed configs for (b)")
    ap.add_argument("--work", default="runs/quality_table", help="folder for the runs (default runs/quality_table)")
    ap.add_argument("--wiki", type=Path, default=WIKI, help="the articles (default ../shared/data/wiki)")
    ap.add_argument(
        "--continue", dest="resume", action="store_true",
        help="keep WORK: the rows already in WORK/rows.jsonl are reused, not measured again, and each seed's run "
        "resumes from where it stopped (a table longer than one sitting, finished later on the same CPU)",
    )  # fmt: skip
    ap.add_argument(
        "--torch-values", default="plan,nanogpt",
        help="(c)'s rows, comma-separated: plan ((a)'s hyperparameters) and nanogpt (nanoGPT's small-data "
        "config's); default both",
    )  # fmt: skip
    ap.add_argument("--torch-child", help=argparse.SUPPRESS)
    ap.add_argument("--train", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_child:
        args.minutes = float(args.minutes)
        torch_child(args)
        return
    import shutil

    from loop_tui.config import load_config
    from loop_tui.model.layout import parameter_count

    sys.path.insert(0, os.path.dirname(__file__))
    from cpu import cpu_line

    if not args.wiki.is_dir():
        sys.exit(f"{args.wiki}: the wiki articles are not here; this benchmark needs them")
    budgets = sorted(float(m) for m in args.minutes.split(",") if m.strip())
    torch_values = [v for v in args.torch_values.split(",") if v.strip()]
    if unknown := [v for v in torch_values if v not in TORCH_VALUES]:
        sys.exit(f"--torch-values: {', '.join(unknown)} unknown; give plan, nanogpt or both")
    seeds = [s for s in args.seeds.split(",") if s.strip()]
    work = Path(args.work).resolve()
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    train, held = split_articles(args.wiki, work)
    recorded = Rows(work / "rows.jsonl", cpu_line(), args.threads)
    try:
        import torch  # noqa: F401

        has_torch = True
    except ImportError:
        has_torch = False
        print("PyTorch is not installed (pip install torch==2.13.0): (c) is left out")

    def say(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    # budgets in increasing order, so that each seed's one run is stopped at each budget in turn
    for minutes in budgets:
        plan_json = work / f"plan-{minutes:g}.json"
        if not recorded.get(minutes, "(a) loop plan"):
            say(f"[{minutes:g} min] (a) loop plan")
            p = subprocess.run(
                loop("plan", "--data", str(train), "--minutes", str(minutes), "--out", str(plan_json))
                + ["--threads", str(args.threads)],
                capture_output=True,
                text=True,
            )
            if p.returncode:
                sys.exit(f"loop plan failed: {p.stderr.strip()}")
            say("\n".join("    " + line for line in p.stdout.strip().splitlines()))
            cfg = load_config(str(plan_json))
            every = max(1, cfg.max_steps // CURVE_POINTS)
            run = work / f"a-{minutes:g}"
            shutil.rmtree(run, ignore_errors=True)  # a run cut short by an earlier sitting starts again
            say(f"[{minutes:g} min] (a) training {describe(cfg)}, {cfg.max_steps} steps")
            failed = train_for(
                str(plan_json), run, minutes, train, args.threads, "--checkpoint-every", str(every),
                "--set", f"keep_checkpoints={CURVE_POINTS + 2}",
            )  # fmt: skip
            curve = run_curve(run, held, args.threads)
            best = bits_per_byte(run, held, args.threads)  # what `loop eval` scores by default: the best checkpoint
            recorded.add(
                minutes, "(a) loop plan", describe(cfg), parameter_count(cfg), best, failed or _steps(run), curve
            )
        cfg = load_config(str(plan_json))
        for values in torch_values if has_torch else []:
            name = TORCH_ROWS[values]
            if recorded.get(minutes, name):
                continue
            say(f"[{minutes:g} min] {name}")
            info = torch_row(plan_json, values, train, held, minutes, args.threads, work)
            if "error" in info:
                recorded.add(minutes, name, describe(cfg), parameter_count(cfg), math.nan, info["error"])
                continue
            note = (
                f"{info['precision']}, lr {info['learning_rate']:.2g}, beta2 {info['beta2']:g}, dropout "
                f"{info['dropout']:.2f}, {info['steps']} steps, {info['tokens_per_s']:,.0f} tokens/s"
            )
            recorded.add(minutes, name, describe(cfg), parameter_count(cfg), info["bpb"], note, info["curve"])
        for seed in seeds:
            if recorded.get(minutes, f"(b) {seed}"):
                continue
            seed_run, scfg = work / f"b-{seed}", load_config(seed)
            say(f"[{minutes:g} min] (b) {seed}")
            failed = train_for(seed, seed_run, minutes, train, args.threads)
            bpb = bits_per_byte(seed_run, held, args.threads)
            recorded.add(minutes, f"(b) {seed}", describe(scfg), parameter_count(scfg), bpb, failed or _steps(seed_run))

    names = ["(a) loop plan", *(f"(b) {s}" for s in seeds), *(TORCH_ROWS[v] for v in torch_values if has_torch)]
    rows = {m: [r for n in names if (r := recorded.get(m, n))] for m in budgets}
    print(cpu_line())
    print(
        f"held-out bits per byte (loop eval) on {len(list(held.iterdir()))} held-out wiki articles; trained on "
        f"{len(list(train.iterdir()))} articles, {args.threads} threads; minutes of training steps (data "
        "preparation, evaluation and checkpoints not counted)"
    )
    sittings = sorted({(r["date"][:10], r["commit"]) for rs in rows.values() for r in rs})
    if len(sittings) > 1:
        print(
            "measured in more than one sitting (--continue), on this CPU: "
            + ", ".join(f"{d} at {c}" for d, c in sittings)
        )
    print(f"{'budget':>7s}  {'row':28s} {'shape':28s} {'params':>8s} {'bits/byte':>9s}  notes")
    for minutes, rs in rows.items():
        for r in rs:
            print(
                f"{minutes:6g}m  {r['row']:28s} {r['shape']:28s} {r['params'] / 1e6:7.2f}M {r['bpb']:9.4f}  {r['note']}"
            )
    print("curves: held-out bits per byte against minutes of training")
    for minutes, rs in rows.items():
        for r in rs:
            if r["curve"]:
                print(f"{minutes:6g}m  {r['row']:28s} " + "  ".join(f"{m:5.2f} min {b:.4f}" for m, b in r["curve"]))
    for minutes, rs in rows.items():
        a = rs[0]["bpb"]
        seeds_bpb = [r["bpb"] for r in rs if r["row"].startswith("(b)")]
        if math.isnan(a) or any(math.isnan(s) for s in seeds_bpb):
            verdict = "not measured (a row above failed)"
        else:
            verdict = "yes" if all(a < s for s in seeds_bpb) else "no"
        print(f"{minutes:6g}m  (a) beats every seed config: {verdict}")
    last = budgets[-1]
    for r in rows[last]:
        if r["row"].startswith("(c)") and not math.isnan(r["bpb"]):
            reached = [m for b in budgets for a in rows[b][:1] for m, v in a["curve"] or [] if v <= r["bpb"]]
            when = f"at {min(reached):.2f} min" if reached else "not within the budgets run"
            print(f"(a) reaches the {last:g}-minute bits per byte of {r['row']} ({r['bpb']:.4f}): {when}")
    failed = [f"{m:g}m {r['row']}: {r['note']}" for m, rs in rows.items() for r in rs if math.isnan(r["bpb"])]
    if failed:  # a benchmark that could not score a row is broken, not slow: make bench stops here
        sys.exit(f"{len(failed)} rows failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
