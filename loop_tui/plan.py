"""`loop plan`: a config for this corpus, this machine and this time budget, and why.

1. Corpus size in tokens at each candidate vocabulary: bytes per token measured by training the run's
   own BPE on a sample of the corpus (or read exactly from the token cache when the corpus is already
   prepared at that vocabulary).
2. Speed: a few real training steps (forward, backward, AdamW in the kernels) of probe shapes on this
   machine, fitted as step time = a + b * FLOPs per step, then predicted for every candidate; the
   chosen one is timed again, and its measured speed sets max_steps.
3. Choice: the candidate with the lowest held-out bits per byte predicted by the Chinchilla form
   (Hoffmann et al. 2022, L = E + A/N^a + B/D^b), with N all the parameters and D the effective bytes
   of repeated epochs (Muennighoff et al. 2023: D' = U + U R* (1 - exp(-R/R*)), R repetitions of U
   unique bytes, R* = 15.4: ~4 epochs are nearly as good as new data, returns vanish after), its
   constants fitted to runs of this planner's recipe (benchmarks/plan_sweep.py). Data is counted in
   bytes, so vocabularies compare: a vocabulary changes both the parameters and how much text a second
   of training reads. Plans under MIN_STEPS optimizer steps or over EPOCH_CAP passes are dropped while
   another fits, and dropout rises with the passes planned.
Planning stops measuring when its time is up (at most 10% of the budget, between 10 and 60 s)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import MAX_BUDGET_MINUTES, Config, ConfigError, from_dict
from .data.corpus import Corpus, DataError, Part, load_corpus
from .data.tokens import parts_bytes, split_docs, token_cache_path, train_tokenizer

WIDTHS = (128, 192, 256, 384, 512)
DEPTHS = (2, 4, 6, 8)
CONTEXTS = (64, 128, 256)
VOCABS = (2048, 4096, 8192, 16000)
BATCHES = (8, 16, 32, 64)
HEAD_SIZE = 64
# probe shapes timed on this machine (d_model, num_layers, max_length, vocab_size, batch_size), cheapest first
PROBES = ((128, 2, 64, 2048, 8), (192, 4, 128, 4096, 16), (256, 4, 128, 8192, 16), (384, 4, 128, 16000, 16))
PROBE_WARMUP, PROBE_STEPS = 1, 3
RETIME_RATIO = 1.15  # a choice timed this much slower than the probes' fit predicts is timed again

MIN_MINUTES, MAX_MINUTES = 0.1, MAX_BUDGET_MINUTES
MIN_TEXT_BYTES = 4096  # less training text than this cannot fill even the smallest vocabulary
SAMPLE_BYTES = 1 << 20  # text the bytes-per-token ratio is measured on
# Held-out bits per byte after a run of this recipe, L = E + A / N^ALPHA + B / D^BETA: Chinchilla's form
# and exponents (Hoffmann et al. 2022) with N all the parameters (as they count them) and D the bytes of
# text trained on. Their constants (fitted from 70 M parameters up; N outside the embeddings, as this
# planner first used them) chose a 1.5 M-parameter model that lost to two seed configs by 0.4 bits per
# byte; E, A, B and B_CRIT are fitted to 5-minute runs of this recipe on the wiki articles on a 2-core
# AMD EPYC Zen 2 (rms 0.02 bits per byte): `benchmarks/plan_sweep.py --fit` reads plan_sweep.jsonl.
E, A, B, ALPHA, BETA = 0.5526, 103.0, 48.89, 0.34, 0.28
# tokens per step past which a bigger batch buys little: a batch of b tokens is worth 1 / (1 + b / B_CRIT)
# of its tokens (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training"), fitted with the above
B_CRIT = 4096
# AdamW's second-moment decay in a plan: Adam's own default rather than the 0.95 of nanoGPT's 0.5 M-token
# GPT-2 run, as a plan's batches are small (2-16 k tokens), and a short average of their noisy squared
# gradients is noisier still (Porian et al. 2024 found 0.95 costly at small batches; nanoGPT's own
# small-batch config moves to 0.99). The runs above were fitted at 0.95; the same 5-minute run at 0.95,
# 0.99 and 0.999 scored 1.7956, 1.7695 and 1.7671 held-out bits per byte: BETA2_GAIN is that pair's
# difference (plan_sweep.jsonl; `plan_sweep.py --fit` prints it), added to every prediction (a constant,
# it leaves the choice of shape as the fit makes it).
BETA2, FITTED_BETA2, BETA2_GAIN = 0.999, 0.95, -0.0285
R_STAR = 15.4  # Muennighoff et al. 2023's half-life of repeated data, in passes
# The fitted runs trained with at most FITTED_FLOP (6 x parameters x tokens). Runs of the planner's
# recipe with more (its 15- and 30-minute plans and three other shapes, same CPU) measured above the fit's
# forecast, by about as many bits per byte as they had 1e14 FLOP, (FLOP, bits per byte above): the
# plans it chose still beat the seed configs, but its number is then too low, and such a plan says so.
# `plan_sweep.py --fit` prints both from plan_sweep.jsonl.
FITTED_FLOP = 3.9e13
LONG_RUNS_ABOVE_FIT = ((1.04e14, 0.125), (1.06e14, 0.145), (1.19e14, 0.150), (2.22e14, 0.262), (2.47e14, 0.244))
EPOCH_CAP = 16  # passes over the data beyond which a bigger model spends the time better
MAX_DROPOUT = 0.2
MIN_STEPS = 200  # optimizer steps a plan needs (a bigger batch must not leave too few)
EVALS = 10  # validation losses per run, at most
EVAL_BATCHES = 8
EVAL_SHARE = 0.05  # of the steps' time at most for validation (a batch's forward is ~1/3 of a step)
STEP_SHARE = 0.93  # of the budget for steps; the rest for validation, samples and checkpoints
MAX_CONTEXT_ATTENTION = 0.25  # the longest context whose attention stays under this share of a step's FLOPs


def planning_limit_s(minutes: float) -> float:
    return min(60.0, max(10.0, 0.1 * minutes * 60))


def check_budget(minutes: float) -> None:
    if not math.isfinite(minutes) or not MIN_MINUTES <= minutes <= MAX_MINUTES:
        raise ConfigError(
            f"--minutes: a budget of {minutes:g} minutes is not usable; give {MIN_MINUTES:g} to {MAX_MINUTES} (a week)"
        )


@dataclass
class VocabSize:
    vocab: int
    bytes_per_token: float
    train_tokens: int
    source: str  # "token cache" or "sample of N MB"


@dataclass
class Candidate:
    cfg: Config
    step_s: float  # predicted (or measured) seconds per training step
    train_bytes: int
    bytes_per_token: float

    @property
    def tokens_per_s(self) -> float:
        return self.cfg.tokens_per_step / self.step_s

    @property
    def params(self) -> int:
        from .model.layout import parameter_count

        return parameter_count(self.cfg)

    @property
    def body_params(self) -> int:
        """Parameters outside the token and position embeddings."""
        return self.params - (self.cfg.padded_vocab + self.cfg.positions) * self.cfg.d_model

    def tokens(self, seconds: float) -> float:
        return self.tokens_per_s * seconds

    def passes(self, seconds: float) -> float:
        return self.tokens(seconds) * self.bytes_per_token / self.train_bytes

    def predicted_bits_per_byte(self, seconds: float) -> float:
        seen = self.tokens(seconds) * self.bytes_per_token
        batch_efficiency = 1 / (1 + self.cfg.tokens_per_step / B_CRIT)
        fitted = E + A / self.params**ALPHA + B / (effective_data(seen, self.train_bytes) * batch_efficiency) ** BETA
        return fitted + BETA2_GAIN


def effective_data(seen: float, unique: float) -> float:
    """Muennighoff et al.: `seen` tokens drawn from `unique` ones are worth this many fresh tokens."""
    if seen <= unique:
        return seen
    repeats = seen / unique - 1
    return unique + unique * R_STAR * (1 - math.exp(-repeats / R_STAR))


def dropout_for(passes: float) -> float:
    """None up to 2 passes, then 0.05 more per doubling (4: 0.05, 8: 0.1, 16: 0.15), at most MAX_DROPOUT."""
    raw = 0.05 * math.log2(passes / 2) if passes > 2 else 0.0
    return round(min(MAX_DROPOUT, raw) * 20) / 20


def evaluations(steps: int) -> int:
    """Validation losses in a run of `steps`: up to EVALS, within EVAL_SHARE of its time."""
    return max(1, min(EVALS, int(EVAL_SHARE * steps * 3 / EVAL_BATCHES)))


def learning_rate_for(d_model: int) -> float:
    """nanoGPT's 6e-4 at GPT-2 small's width, scaled inversely with width, at most 3e-3."""
    return float(f"{min(3e-3, 6e-4 * 768 / d_model):.2g}")


def recipe(steps: int, d_model: int, passes: float, minutes: float, val_fraction: float = 0.05) -> dict:
    """The training fields of a plan of `steps` for a model `d_model` wide that passes over its data
    `passes` times in `minutes`: learning rate, warm-up, dropout, and how often to evaluate and save."""
    return dict(
        max_steps=steps,
        learning_rate=learning_rate_for(d_model),
        beta2=BETA2,
        warmup_steps=max(1, min(100, steps // 20)),
        eval_every=max(1, steps // evaluations(steps)),
        eval_batches=EVAL_BATCHES,
        sample_every=max(1, steps // 2),
        log_every=max(1, min(10, steps // 50)),
        checkpoint_every=max(1, steps // 5),
        val_fraction=val_fraction,
        budget_minutes=minutes,
        dropout=dropout_for(passes),
    )


def shape(d: int, layers: int, context: int, vocab: int, batch: int, **training) -> Config:
    raw = dict(
        d_model=d,
        num_heads=max(1, d // HEAD_SIZE),
        num_layers=layers,
        d_ff=4 * d,
        batch_size=batch,
        max_length=context,
        vocab_size=vocab,
    )
    return from_dict({**raw, **training}, "<plan>")


# ---------------------------------------------------------------- measurements
def sample_corpus(corpus: Corpus, parts: list[Part], limit: int = SAMPLE_BYTES) -> Corpus:
    """Every k-th file of the given parts, about `limit` bytes in all (all of them when smaller)."""
    files = sorted({i for i, _, _ in parts})
    step = max(1, round(parts_bytes(corpus, parts) / limit))
    docs = [corpus.docs[i] for i in files[::step]]
    return Corpus(f"{corpus.name} (sample)", docs, f"{corpus.digest}-sample{step}", text_field=corpus.text_field)


def smaller_vocabulary(tok, vocab: int):
    """The byte-level BPE `tok` cut to its first `vocab` ids: the same tokenizer that training with
    vocab_size=vocab would give, as BPE learns its merges in order and numbers each new token next."""
    import orjson
    from tokenizers import Tokenizer

    spec = orjson.loads(tok.to_str())
    model = spec["model"]
    ids = model["vocab"]
    model["vocab"] = {t: i for t, i in ids.items() if i < vocab}
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"]]
    model["merges"] = [m for m, (a, b) in zip(model["merges"], pairs, strict=True) if ids.get(a + b, vocab) < vocab]
    return Tokenizer.from_str(orjson.dumps(spec).decode())


def measure_vocabs(
    corpus: Corpus, train_parts: list[Part], vocabs: tuple[int, ...], val_fraction: float, say: Callable[[str], None]
) -> list[VocabSize]:
    """Bytes per token at each vocabulary: exact from the token cache where the corpus is prepared,
    else counted on a sample with the run's own tokenizer trained on it (once, at the largest
    vocabulary; the smaller ones are its prefixes)."""

    train_bytes = parts_bytes(corpus, train_parts)
    sample = sample_corpus(corpus, train_parts)
    where = f"sample of {sample.bytes / 1e6:.1f} MB"
    texts = [piece for doc in sample.docs for piece in sample.pieces(doc, 1 << 16)]
    largest = None
    out = []
    for vocab in vocabs:
        cached = token_cache_path(corpus, vocab, val_fraction, "train")
        tokens = (
            cached.stat().st_size // np.dtype(np.uint16 if vocab <= 65535 else np.uint32).itemsize
            if cached.exists()
            else 0
        )
        if tokens:
            out.append(VocabSize(vocab, train_bytes / tokens, tokens, "token cache"))
            continue
        if largest is None:
            t0 = time.monotonic()
            largest = train_tokenizer(sample, max(vocabs))
            say(f"plan: trained a {max(vocabs)}-id tokenizer on a {where} ({time.monotonic() - t0:.1f} s)")
        if largest.get_vocab_size() < 0.9 * vocab:  # the text cannot fill this vocabulary
            out.append(VocabSize(vocab, float("nan"), 0, where))
            continue
        tok = smaller_vocabulary(largest, vocab)
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
        counted = sum(len(e.ids) for e in encode(texts))
        bpt = sample.bytes / max(1, counted)
        out.append(VocabSize(vocab, bpt, round(train_bytes / bpt), where))
    return out


def time_steps(cfg: Config, backend, warmup: int = PROBE_WARMUP, steps: int = PROBE_STEPS) -> float:
    """Median seconds of a real training step (forward, backward, AdamW) of cfg's shape, on random ids."""
    from .model.gpt import GPT

    model = GPT(cfg, backend)
    model.init_weights(cfg.seed)
    m, v = backend.zeros(model.params.size), backend.zeros(model.params.size)
    rng = np.random.default_rng(0)
    times = []
    for i in range(warmup + steps):
        x = rng.integers(0, cfg.vocab_size, (cfg.batch_size, cfg.max_length), dtype=np.int32)
        y = rng.integers(0, cfg.vocab_size, (cfg.batch_size, cfg.max_length), dtype=np.int32)
        t0 = time.perf_counter()
        model.forward_backward(x, y)
        P, G = model.params.flat, model.gradients.flat
        backend.adamw(P, G, m, v, 1e-4, 0.9, 0.95, 1e-8, 0.1, i + 1, 1.0)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def step_flops(cfg: Config) -> float:
    from .model.layout import training_flops_per_token

    return training_flops_per_token(cfg) * cfg.tokens_per_step


@dataclass
class SpeedModel:
    """step seconds = overhead + flops / flops_per_s, least squares over the timed probes."""

    overhead_s: float
    flops_per_s: float
    probes: list[tuple[Config, float]]

    @classmethod
    def fit(cls, probes: list[tuple[Config, float]]) -> SpeedModel:
        f = np.array([step_flops(c) for c, _ in probes])
        t = np.array([s for _, s in probes])
        if len(probes) >= 2:
            slope, overhead = np.polyfit(f, t, 1)
            if slope > 0 and overhead >= 0:
                return cls(float(overhead), float(1 / slope), probes)
        return cls(0.0, float(np.sum(f) / np.sum(t)), probes)  # one probe, or a fit without meaning: pure rate

    def step_s(self, cfg: Config) -> float:
        return self.overhead_s + step_flops(cfg) / self.flops_per_s


# ---------------------------------------------------------------- the plan
@dataclass
class Plan:
    cfg: Config
    chosen: Candidate
    vocabs: list[VocabSize]
    speed: SpeedModel
    minutes: float
    passes: float
    tokens: float
    considered: int
    planning_s: float
    corpus_summary: str
    capped: bool  # no candidate stayed under EPOCH_CAP passes: the run stops early
    speed_measured: bool  # the choice itself was timed (else its speed is the fit's prediction)

    def explain(self) -> list[str]:
        c, cfg, vs = self.chosen, self.cfg, next(v for v in self.vocabs if v.vocab == self.cfg.vocab_size)
        tps = c.tokens_per_s
        lines = [
            self.corpus_summary,
            f"tokens: {vs.train_tokens:,} training tokens at a {cfg.vocab_size}-id vocabulary "
            f"({vs.bytes_per_token:.2f} bytes per token, from the {vs.source}); measured at "
            + ", ".join(
                f"{v.vocab}: {v.bytes_per_token:.2f}" for v in self.vocabs if v.bytes_per_token == v.bytes_per_token
            ),
            f"speed: {tps:,.0f} tokens/s expected ({c.step_s * 1000:.0f} ms per step of {cfg.tokens_per_step:,} "
            f"tokens, {'measured on this machine' if self.speed_measured else 'predicted from the probes'}; "
            f"fit over {len(self.speed.probes)} probe shape(s) timed here: "
            f"{self.speed.flops_per_s / 1e9:.1f} GFLOP/s + {self.speed.overhead_s * 1000:.0f} ms per step)",
            f"model: {c.params / 1e6:.2f} M parameters ({c.body_params / 1e6:.2f} M outside the embeddings): "
            f"{cfg.num_layers} layers of {cfg.d_model}, context {cfg.max_length}, batch {cfg.batch_size}",
            f"budget: {self.minutes:g} min → {cfg.max_steps:,} steps, {self.tokens / 1e6:.2f} M tokens = "
            f"{self.passes:.2g} passes over the data, {self.tokens / c.params:.2g} tokens per parameter",
            f"why: the lowest held-out bits per byte predicted of {self.considered} candidates "
            f"({self.predicted_bits_per_byte:.2f} on text like the Wikipedia articles the fit was measured on), "
            f"by Chinchilla's L(N, D) fitted to runs of this recipe at beta2 {FITTED_BETA2}, less the "
            f"{-BETA2_GAIN:.3f} that {BETA2} gained (batches past "
            f"{B_CRIT:,} tokens discounted as in McCandlish et al., repeated data as in Muennighoff et al.: these "
            f"{self.passes:.2g} passes are worth {effective_data(self.passes, 1):.2g} of new text)"
            + (
                f"; even the largest model would pass over the data more than {EPOCH_CAP} times, so the run "
                f"stops after {EPOCH_CAP} passes, before the budget ends"
                if self.capped
                else f"; plans over {EPOCH_CAP} passes were left out"
            ),
            *self.forecast_caveat(),
            f"dropout: {self.dropout:.2f} for {self.passes:.2g} passes",
            f"planning took {self.planning_s:.0f} s",
        ]
        return lines

    def forecast_caveat(self) -> list[str]:
        """A line saying the forecast is too low, for a plan that trains with more compute than the fit's runs."""
        flop = 6 * self.chosen.params * self.tokens
        if flop <= FITTED_FLOP:
            return []
        flops, excess = [f for f, _ in LONG_RUNS_ABOVE_FIT], [x for _, x in LONG_RUNS_ABOVE_FIT]
        least, most, low, high = min(flops), max(flops), min(excess), max(excess)
        e = lambda x: f"{x:.1e}".replace("e+", "e")
        return [
            f"forecast: expect more than {self.predicted_bits_per_byte:.2f}: this plan trains with {e(flop)} FLOP "
            f"(6 x parameters x tokens), past the {e(FITTED_FLOP)} of the runs the fit was measured on, and the "
            f"runs of its recipe with {e(least)} to {e(most)} FLOP measured {low:.2f} to {high:.2f} bits per byte "
            "above their forecasts (benchmarks/plan_sweep.jsonl); the 15- and 30-minute plans it chose still beat "
            "the seed configs"
        ]

    @property
    def predicted_bits_per_byte(self) -> float:
        return self.chosen.predicted_bits_per_byte(self.cfg.max_steps * self.chosen.step_s)

    @property
    def dropout(self) -> float:
        return dropout_for(self.passes)


def candidates(vocabs: list[VocabSize], speed: SpeedModel, train_bytes: int, seconds: float, fits) -> list[Candidate]:
    out = []
    for v in vocabs:
        if v.bytes_per_token != v.bytes_per_token:
            continue
        for d in WIDTHS:
            for layers in DEPTHS:
                contexts = [
                    T
                    for T in CONTEXTS
                    if 6 * layers * d * (T + 1) <= MAX_CONTEXT_ATTENTION * step_flops(shape(d, layers, T, v.vocab, 1))
                    and T * 8 <= v.train_tokens
                ] or [min(CONTEXTS)]
                T = max(contexts)
                for b in BATCHES:  # the loss model weighs the batch: more steps against tokens past B_CRIT
                    cfg = shape(d, layers, T, v.vocab, b)
                    if fits(cfg):
                        out.append(Candidate(cfg, speed.step_s(cfg), train_bytes, v.bytes_per_token))
    return out


def choose(cands: list[Candidate], seconds: float) -> tuple[Candidate, bool]:
    """The lowest predicted bits per byte of the candidates under EPOCH_CAP passes, those with MIN_STEPS
    steps first (the fit has not seen a run of fewer: a big model's few steps leave it undertrained);
    (the fewest passes, True) when every candidate would pass over the data more than EPOCH_CAP times."""
    under = [c for c in cands if c.passes(seconds) <= EPOCH_CAP]
    if under:
        enough = [c for c in under if seconds / c.step_s >= MIN_STEPS] or under
        return min(enough, key=lambda c: c.predicted_bits_per_byte(seconds)), False
    return min(cands, key=lambda c: c.passes(seconds)), True


def fits_memory(cfg: Config) -> bool:
    import psutil

    from .analyze import training_memory
    from .train.prepare import MEMORY_HEADROOM

    return training_memory(cfg)["total"] <= MEMORY_HEADROOM * psutil.virtual_memory().available


def make_plan(
    data: str,
    minutes: float,
    threads: int | None = None,
    say: Callable[[str], None] = print,
    val_fraction: float = 0.05,
) -> Plan:
    check_budget(minutes)
    started = time.monotonic()
    limit = planning_limit_s(minutes)
    corpus = load_corpus(data)

    train_parts, val_parts = split_docs(corpus, val_fraction)
    train_bytes = parts_bytes(corpus, train_parts)
    if train_bytes < MIN_TEXT_BYTES:
        held = parts_bytes(corpus, val_parts)
        raise DataError(
            f"{corpus.name}: too little text to plan a run ({train_bytes:,} bytes of training text"
            + (f"; {held:,} bytes in {len(val_parts)} whole file(s) are held out for validation" if held else "")
            + f"; {MIN_TEXT_BYTES:,} needed)"
        )
    say(f"plan: {corpus.summary()}; planning for at most {limit:.0f} s")

    vocabs = measure_vocabs(corpus, train_parts, VOCABS, val_fraction, say)
    for v in vocabs:
        what = (
            f"{v.bytes_per_token:.2f} bytes per token, {v.train_tokens:,} training tokens"
            if v.bytes_per_token == v.bytes_per_token
            else "the text has too few distinct pieces to fill it"
        )
        say(f"plan: vocabulary {v.vocab}: {what} ({v.source})")
    usable = [v for v in vocabs if v.bytes_per_token == v.bytes_per_token]
    if not usable:
        raise DataError(f"{corpus.name}: too little text to plan a run (not even a {VOCABS[0]}-id vocabulary fills)")
    if max(v.train_tokens for v in usable) < (min(CONTEXTS) + 1) * min(BATCHES):
        raise DataError(f"{corpus.name}: too little text to plan a run ({train_bytes:,} bytes of training text)")

    from .backend import make_backend

    backend = make_backend("c", threads, None, "fp32")
    probes: list[tuple[Config, float]] = []
    for d, layers, T, vocab, batch in PROBES:
        cfg = shape(d, layers, T, vocab, batch)
        if probes:
            guess = SpeedModel.fit(probes).step_s(cfg) * (PROBE_WARMUP + PROBE_STEPS)
            if time.monotonic() - started + guess > limit * 0.85:
                say(f"plan: planning time nearly spent: {len(PROBES) - len(probes)} larger probe shapes not timed")
                break
        if not fits_memory(cfg):
            continue
        step_s = time_steps(cfg, backend)
        probes.append((cfg, step_s))
        say(
            f"plan: timed {layers} layers of {d}, context {T}, vocabulary {vocab}, batch {batch}: "
            f"{cfg.tokens_per_step / step_s:,.0f} tokens/s ({PROBE_WARMUP} warm-up + {PROBE_STEPS} steps)"
        )
    if not probes:
        raise ConfigError("not enough memory to train even the smallest probe shape")
    speed = SpeedModel.fit(probes)
    seconds = minutes * 60 * STEP_SHARE
    cands = candidates(usable, speed, train_bytes, seconds, fits_memory)
    if not cands:
        raise ConfigError("no candidate shape fits in the available memory")
    chosen, capped = choose(cands, seconds)
    measured = next((s for c, s in probes if c == chosen.cfg), None)
    left = limit - (time.monotonic() - started)
    if measured is None and chosen.step_s * (PROBE_WARMUP + PROBE_STEPS) <= left:
        measured = time_steps(chosen.cfg, backend)
        left = limit - (time.monotonic() - started)
        if measured > RETIME_RATIO * chosen.step_s and measured * (PROBE_WARMUP + PROBE_STEPS) <= left:
            # far slower than the probes predict: timed again, and the faster median kept (other work on
            # the cores can only slow a step down; a plan timed slow finishes its steps early and wastes
            # the rest of the budget, as a 15-minute plan once did, training 10.3 minutes)
            again = time_steps(chosen.cfg, backend)
            say(f"plan: the choice timed {measured * 1000:.0f} ms per step, {again * 1000:.0f} ms when timed again")
            measured = min(measured, again)
    if measured is None:
        say("plan: planning time spent: the choice's speed is the fit's prediction")
    else:
        chosen.step_s = measured
        say(f"plan: timed the choice: {chosen.tokens_per_s:,.0f} tokens/s")

    steps = max(1, int(seconds / chosen.step_s))
    if capped:
        steps = max(1, int(EPOCH_CAP * train_bytes / chosen.bytes_per_token / chosen.cfg.tokens_per_step))
    tokens = steps * chosen.cfg.tokens_per_step
    passes = tokens * chosen.bytes_per_token / train_bytes
    training = recipe(steps, chosen.cfg.d_model, passes, minutes, val_fraction)
    training.update(
        name=f"plan_{Path(corpus.name).name or 'data'}_{minutes:g}min",
        description=f"`loop plan` for {corpus.name}, {minutes:g} minutes on this machine",
        data=str(Path(data).resolve()),
        threads=threads,
    )
    c = chosen.cfg
    cfg = shape(c.d_model, c.num_layers, c.max_length, c.vocab_size, c.batch_size, **training)
    return Plan(
        cfg,
        chosen,
        vocabs,
        speed,
        minutes,
        passes,
        tokens,
        len(cands),
        time.monotonic() - started,
        corpus.summary(),
        capped,
        measured is not None,
    )
