"""The measurements `loop plan`'s loss model is fitted to: shapes trained with the planner's own recipe
for M minutes on the wiki articles, scored as held-out bits per byte, and the fit over them.

    .venv/bin/python benchmarks/plan_sweep.py --minutes 5 D,LAYERS,CONTEXT,VOCAB,BATCH [...]
    .venv/bin/python benchmarks/plan_sweep.py --fit

Each shape is timed (as `loop plan` times its choice), given `plan.recipe` for the steps that fit in the
budget, trained by `loop train` until the budget's minutes of steps are spent and scored by `loop eval`
on the held-out articles of quality_table.py's split. One JSON line per run is appended to
benchmarks/plan_sweep.jsonl, with the CPU. `--fit` fits L = E + A / N^ALPHA + B / (D / (1 + b / B_CRIT))^BETA
(N all the parameters, D the bytes of text trained on with repeats discounted as `plan.effective_data`
does, b the tokens per step; ALPHA and BETA Chinchilla's) to the lines and prints the constants for
loop_tui/plan.py and each run's residual, and how far the planner's runs with more compute than the fitted
ones measured above their forecasts."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "plan_sweep.jsonl"


def run_shapes(
    minutes: float,
    shapes: list[tuple[int, ...]],
    threads: int,
    wiki: Path,
    work: Path,
    results: Path,
    overrides: dict | None = None,
) -> None:
    import quality_table as q
    from cpu import cpu_line

    from loop_tui import plan
    from loop_tui.backend import make_backend
    from loop_tui.data.corpus import load_corpus
    from loop_tui.data.tokens import parts_bytes, split_docs
    from loop_tui.kernels.peak import cpu_model
    from loop_tui.model.layout import parameter_count

    train, held = q.split_articles(wiki, work)
    corpus = load_corpus(str(train))
    train_parts, _ = split_docs(corpus, 0.05)
    train_bytes = parts_bytes(corpus, train_parts)
    vocabs = {v.vocab: v for v in plan.measure_vocabs(corpus, train_parts, plan.VOCABS, 0.05, print)}
    backend = make_backend("c", threads, None, "fp32")
    seconds = minutes * 60 * plan.STEP_SHARE
    for d, layers, context, vocab, batch in shapes:
        bare = plan.shape(d, layers, context, vocab, batch)
        step_s = plan.time_steps(bare, backend)
        candidate = plan.Candidate(bare, step_s, train_bytes, vocabs[vocab].bytes_per_token)
        steps = max(1, int(seconds / step_s))
        passes = candidate.passes(steps * step_s)
        name = f"sweep_{d}x{layers}_ctx{context}_V{vocab}_B{batch}_{minutes:g}min"
        name += "".join(f"_{k}{v}" for k, v in (overrides or {}).items())
        training = {**plan.recipe(steps, d, passes, minutes), **(overrides or {})}
        cfg = plan.shape(d, layers, context, vocab, batch, name=name, **training)
        steps = cfg.max_steps  # as set, when --set max_steps=N holds the steps whatever the timing
        passes = steps * cfg.tokens_per_step * vocabs[vocab].bytes_per_token / train_bytes
        path = work / f"{name}.json"
        path.write_bytes(orjson.dumps(cfg.to_dict()))
        run = work / name
        print(f"{name}: {steps} steps of {step_s:.2f} s, {passes:.2f} passes", flush=True)
        failed = q.train_for(str(path), run, minutes, train, threads)
        row = dict(
            cpu=cpu_line(),
            cpu_model=cpu_model(),
            threads=threads,
            minutes=minutes,
            shape=[d, layers, context, vocab, batch],
            params=parameter_count(cfg),
            steps=steps,
            step_s=round(step_s, 4),
            bytes_per_token=round(vocabs[vocab].bytes_per_token, 4),
            train_bytes=train_bytes,
            passes=round(passes, 4),
            learning_rate=cfg.learning_rate,
            warmup_steps=cfg.warmup_steps,
            dropout=cfg.dropout,
            beta2=cfg.beta2,
            overrides=overrides or {},
            bits_per_byte=q.bits_per_byte(run, held, threads),
            failed=failed,
            when=time.strftime("%Y-%m-%d %H:%M"),
        )
        print(orjson.dumps(row).decode(), flush=True)
        with open(results, "ab") as f:
            f.write(orjson.dumps(row) + b"\n")


def scored_rows(results: Path = RESULTS) -> list[dict]:
    """The runs of `results` that trained and were scored."""
    rows = [orjson.loads(line) for line in results.read_bytes().splitlines() if line.strip()]
    return [r for r in rows if not r["failed"] and r["bits_per_byte"] == r["bits_per_byte"]]


def fitted_rows(results: Path = RESULTS) -> list[dict]:
    """The runs the loss model is fitted to: the planner's recipe unchanged, at the fitted beta2."""
    return fitted_rows_of(scored_rows(results))


def fitted_rows_of(rows: list[dict]) -> list[dict]:
    from loop_tui.plan import FITTED_BETA2

    return [r for r in rows if not r.get("overrides") and r["beta2"] == FITTED_BETA2]


def beta2_pairs(rows: list[dict]) -> list[tuple[dict, dict]]:
    """(run at FITTED_BETA2, the same run at plan.BETA2): the same shape, steps and recipe but for beta2."""
    from loop_tui.plan import BETA2, FITTED_BETA2

    def key(r: dict) -> str:
        rest = {k: v for k, v in r.get("overrides", {}).items() if k != "beta2"}
        return orjson.dumps([r["shape"], r["steps"], r["minutes"], sorted(rest.items())]).decode()

    fitted = {key(r): r for r in rows if r["beta2"] == FITTED_BETA2}
    return [(fitted[key(r)], r) for r in rows if r["beta2"] == BETA2 and key(r) in fitted]


def beta2_gain(rows: list[dict]) -> float:
    """Mean held-out bits per byte of plan.BETA2 less FITTED_BETA2 over the paired runs."""
    pairs = beta2_pairs(rows)
    if not pairs:
        raise SystemExit(f"no pair of runs differing only in beta2 in {RESULTS.name}")
    return sum(b["bits_per_byte"] - a["bits_per_byte"] for a, b in pairs) / len(pairs)


def predicted(row: dict) -> float:
    """The bits per byte plan.py's loss model forecasts for the run of `row`."""
    from loop_tui.plan import ALPHA, B_CRIT, BETA, BETA2, BETA2_GAIN, A, B, E

    fitted = E + A / row["params"] ** ALPHA + B / (seen_bytes(row) / (1 + tokens_per_step(row) / B_CRIT)) ** BETA
    return fitted + (BETA2_GAIN if row["beta2"] == BETA2 else 0.0)


def training_flop(row: dict) -> float:
    """6 x parameters x tokens trained on."""
    return 6 * row["params"] * row["passes"] * row["train_bytes"] / row["bytes_per_token"]


def long_runs_above_fit(rows: list[dict]) -> tuple[float, list[tuple[float, float]]]:
    """(the most compute of a fitted run, [(FLOP, measured less forecast bits per byte)] of the planner's
    own runs with more: its recipe and beta2, steps as planned)."""
    from loop_tui.plan import BETA2

    most = max(training_flop(r) for r in fitted_rows_of(rows))
    longer = [r for r in rows if not r.get("overrides") and r["beta2"] == BETA2 and training_flop(r) > most]
    return most, sorted((training_flop(r), r["bits_per_byte"] - predicted(r)) for r in longer)


def seen_bytes(row: dict) -> float:
    """The bytes a run trained on, repeats discounted (plan.effective_data)."""
    from loop_tui.plan import effective_data

    return effective_data(row["passes"] * row["train_bytes"], row["train_bytes"])


def tokens_per_step(row: dict) -> int:
    _, _, context, _, batch = row["shape"]
    return context * batch


def fit(rows: list[dict]) -> tuple[float, float, float, int, float]:
    """(E, A, B, B_CRIT, rms) of L = E + A / N^ALPHA + B / (D / (1 + b / B_CRIT))^BETA, the exponents
    Chinchilla's (plan.ALPHA, plan.BETA): least squares in E, A, B at each B_CRIT of a grid."""
    import numpy as np

    from loop_tui.plan import ALPHA, BETA

    n = np.array([r["params"] for r in rows], float)
    d = np.array([seen_bytes(r) for r in rows])
    b = np.array([tokens_per_step(r) for r in rows], float)
    y = np.array([r["bits_per_byte"] for r in rows])
    best = None
    for b_crit in (2**k for k in range(7, 21)):
        x = np.stack([np.ones_like(y), n**-ALPHA, (d / (1 + b / b_crit)) ** -BETA], 1)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        if coef[1] <= 0 or coef[2] <= 0:
            continue
        err = float(np.sum((x @ coef - y) ** 2))
        if best is None or err < best[-1]:
            best = (float(coef[0]), float(coef[1]), float(coef[2]), b_crit, err)
    if best is None:
        raise SystemExit("no fit with positive A and B")
    e, a, bb, b_crit, err = best
    return e, a, bb, b_crit, math.sqrt(err / len(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("shapes", nargs="*", help="D,LAYERS,CONTEXT,VOCAB,BATCH")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="runs/plan_sweep")
    ap.add_argument("--wiki", default=None, help="folder of articles (default ../shared/data/wiki)")
    ap.add_argument("--results", default=str(RESULTS), help="the JSON lines to append to and fit (plan_sweep.jsonl)")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="change a field of the recipe (not fitted)"
    )
    ap.add_argument("--fit", action="store_true", help="fit the loss model to the results and print it")
    args = ap.parse_args()
    if args.fit:
        rows = fitted_rows(Path(args.results))
        e, a, b, b_crit, rms = fit(rows)
        from loop_tui.plan import ALPHA, BETA

        print(f"E, A, B = {e:.4g}, {a:.4g}, {b:.4g}; B_CRIT = {b_crit}  # rms {rms:.4f} bits/byte, {len(rows)} runs")
        scored = scored_rows(Path(args.results))
        print(f"BETA2_GAIN = {beta2_gain(scored):.4f}  # {len(beta2_pairs(scored))} paired run(s)")
        most, longer = long_runs_above_fit(scored)
        print(f"FITTED_FLOP = {most:.2g}")
        pairs = ", ".join(f"({f:.3g}, {x:.3f})" for f, x in longer)
        print(f"LONG_RUNS_ABOVE_FIT = ({pairs})  # (FLOP, measured less forecast bits per byte)")
        print(f"{'shape':28s} {'min':>4s} {'params':>7s} {'steps':>6s} {'MB seen':>8s} {'measured':>8s} {'fitted':>7s}")
        for r in rows:
            pred = e + a / r["params"] ** ALPHA + b / (seen_bytes(r) / (1 + tokens_per_step(r) / b_crit)) ** BETA
            d, layers, context, vocab, batch = r["shape"]
            print(
                f"{f'{layers}x{d} ctx{context} V{vocab} B{batch}':28s} {r['minutes']:4g} {r['params'] / 1e6:6.2f}M "
                f"{r['steps']:6d} {seen_bytes(r) / 1e6:8.2f} {r['bits_per_byte']:8.4f} {pred:7.4f}"
            )
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import quality_table as q

    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes]
    overrides = {k: orjson.loads(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    wiki = Path(args.wiki) if args.wiki else q.WIKI
    run_shapes(args.minutes, shapes, args.threads, wiki, work, Path(args.results), overrides)


if __name__ == "__main__":
    main()
