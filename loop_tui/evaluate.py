"""`loop eval`: how well a model predicts a folder of text, defined so anyone can reproduce it.

Each file is tokenized on its own (no end-of-text added) and cut into consecutive,
non-overlapping windows of T + 1 tokens (the last one shorter, kept if it has 2 tokens or more);
a window's first n - 1 tokens are the inputs and its last n - 1 the targets. loss is the mean
cross-entropy (nats) over every predicted token of every file; perplexity = exp(loss);
bits_per_byte = loss / ln 2 * tokens / bytes, with tokens all the files' tokens and bytes their
UTF-8 size, so models with different tokenizers compare on the same text."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .model.gpt import GPT
from .model.layout import activation_specs

EVAL_MEMORY = 1 << 30  # activation bytes the batch of windows may use


@dataclass
class EvalResult:
    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int  # tokens in the files
    predicted: int  # tokens scored (tokens minus one per window)
    bytes: int
    files: int


def windows(ids: np.ndarray, T: int) -> list[np.ndarray]:
    """Consecutive non-overlapping pieces of at most T + 1 ids, each of at least 2."""
    return [ids[i : i + T + 1] for i in range(0, len(ids), T + 1) if len(ids) - i >= 2]


def eval_batch_size(cfg, T: int) -> int:
    per_sequence = sum(s.nbytes for s in activation_specs(cfg.replace(max_length=T, batch_size=1), 1, T))
    return max(1, min(16, EVAL_MEMORY // per_sequence))


def evaluate(
    model_factory: Callable[[int, int], GPT],
    tokenizer,
    corpus,
    T: int,
    batch: int,
    progress: Callable[[int, int, float], None] | None = None,
) -> EvalResult:
    """model_factory(batch, T) gives a GPT (inference view) with loaded weights."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    pending: list[np.ndarray] = []
    total_loss, predicted, tokens, nbytes = 0.0, 0, 0, 0
    model = model_factory(batch, T)
    done_bytes, t0 = 0, time.monotonic()

    def score(ws: list[np.ndarray]) -> None:
        nonlocal total_loss, predicted
        x = np.zeros((batch, T), np.int32)
        y = np.zeros((batch, T), np.int32)
        for i, w in enumerate(ws):
            x[i, : len(w) - 1] = w[:-1]
            y[i, : len(w) - 1] = w[1:]
        losses = model.token_losses(x, y)  # [batch, T]; causal, so padding never changes a real position
        for i, w in enumerate(ws):
            total_loss += float(np.sum(losses[i, : len(w) - 1], dtype=np.float64))
            predicted += len(w) - 1

    for doc in corpus.docs:
        text = "".join(corpus.pieces(doc))
        ids = np.asarray(encode([text])[0].ids, np.int32)
        tokens += len(ids)
        nbytes += doc.size
        pending += windows(ids, T)
        while len(pending) >= batch:
            score(pending[:batch])
            pending = pending[batch:]
        done_bytes += doc.size
        if progress:
            progress(done_bytes, corpus.bytes, time.monotonic() - t0)
    if pending:
        score(pending)
    if predicted == 0:
        from .data.corpus import DataError

        raise DataError(f"{corpus.name}: no file has 2 tokens or more: nothing to score")
    loss = total_loss / predicted
    return EvalResult(
        loss=loss,
        perplexity=math.exp(min(loss, 700)),
        bits_per_byte=loss / math.log(2) * tokens / nbytes,
        tokens=tokens,
        predicted=predicted,
        bytes=nbytes,
        files=len(corpus.docs),
    )
