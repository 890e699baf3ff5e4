"""Text generation: temperature, top-k and top-p (nucleus) sampling over a model's next-token
logits, with a KV cache where the backend has a decoder (the C backend's kernels/decode.py) and the
whole window re-run per token elsewhere (and for comparison: `cached=False`). Both give the same
tokens for the same seed.

The window: a model sees at most T tokens. When the text outgrows it, the context restarts from
the last T/2 tokens (one prefill) and decoding goes on from there: `window_start` is that rule,
shared by both paths so they give the same tokens."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tokenizers import Tokenizer

from ..config import ConfigError
from ..data.tokens import EOT


def window_start(start: int, length: int, T: int) -> int:
    """Where the context of a text of `length` tokens begins, given it began at `start`: unchanged
    while the text fits in T tokens from there, else the last T // 2 tokens (at least 1)."""
    return start if length - start <= T else length - max(1, T // 2)


def check_sampling(temperature: float, top_k: int, top_p: float, tokens: int) -> None:
    """ConfigError (one line) for options outside their range."""
    if tokens < 1:
        raise ConfigError(f"--tokens must be positive, got {tokens}")
    if not temperature >= 0:  # also refuses NaN
        raise ConfigError(f"--temperature must be 0 (greedy) or positive, got {temperature}")
    if top_k < 0:
        raise ConfigError(f"--top-k must be 0 (all tokens) or positive, got {top_k}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"--top-p must be in (0, 1] (1: all tokens), got {top_p}")


def pick(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> int:
    """The next token: argmax at temperature 0; else a draw from softmax(logits / temperature)
    restricted to the top_k likeliest (0: all), then to the smallest set whose probability reaches
    top_p (1: all)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < len(z):
        cutoff = np.partition(z, -top_k)[-top_k]
        z[z < cutoff] = -np.inf
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
        kept = np.zeros_like(p)
        kept[keep] = p[keep]
        p = kept / kept.sum()
    return int(rng.choice(len(p), p=p))


def generate(
    model,
    tokenizer: Tokenizer,
    prompt: str,
    tokens: int,
    temperature: float = 0.8,
    top_k: int = 40,
    rng: np.random.Generator | None = None,
    top_p: float = 1.0,
    on_text: Callable[[str], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    cached: bool | None = None,
) -> str:
    """Continue `prompt` by up to `tokens` tokens (stops early at end-of-text); returns the new
    text. on_text receives it piece by piece as it is produced (whole characters only); on_note
    gets the one-line note when the prompt is longer than the model's window. cached: use the KV
    cache (default: wherever the backend has a decoder)."""
    rng = rng or np.random.default_rng()
    eot = tokenizer.token_to_id(EOT)
    text = tokenizer.encode(prompt).ids if prompt else [eot]
    vocab = min(tokenizer.get_vocab_size(), model.cfg.vocab_size)
    T = model.T
    start = max(0, len(text) - T)
    if start and on_note:
        on_note(f"the prompt has {len(text)} tokens, more than the model's window of {T}: keeping the last {T}")
    decoder = model.ops.decoder(model) if cached is not False else None
    if cached and decoder is None:
        raise ValueError(f"the {model.ops.name} backend has no KV-cache decoder: generate with cached=False")

    def logits_from(first: int) -> np.ndarray:
        window = np.asarray(text[first:], np.int32)
        return decoder.prefill(window) if decoder else model.next_token_logits(window)

    logits = logits_from(start)
    out: list[int] = []
    shown = ""
    for i in range(tokens):
        nxt = pick(logits[:vocab], temperature, top_k, top_p, rng)
        if nxt == eot:
            break
        text.append(nxt)
        out.append(nxt)
        if on_text:
            now = tokenizer.decode(out)
            if not now.endswith("\ufffd"):  # a character cut between byte tokens waits for the rest
                on_text(now[len(shown) :])
                shown = now
        if i == tokens - 1:
            break
        moved = window_start(start, len(text), T)
        logits = decoder.step(nxt) if decoder and moved == start else logits_from(moved)
        start = moved
    result = tokenizer.decode(out)
    if on_text and result != shown:
        on_text(result[len(shown) :])
    return result
