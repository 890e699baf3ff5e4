"""`loop eval`: how well a model predicts a folder of text, defined so anyone can reproduce it.

Each file (each record of a JSONL or Parquet file) is tokenized on its own (no end-of-text
added) and cut into consecutive, non-overlapping windows of T + 1 tokens (the last one shorter,
kept if it has 2 tokens or more); a window's first n - 1 tokens are the inputs and its last
n - 1 the targets. loss is the mean cross-entropy (nats) over every predicted token of every
file; perplexity = exp(loss);
bits_per_byte = loss / ln 2 * tokens / bytes, with tokens all the files' tokens and bytes their
UTF-8 size, so models with different tokenizers compare on the same text.

A file is read and tokenized in pieces of about 64 KiB (memory stays bounded whatever its size),
cut at a line break between two non-space characters: GPT-2's pre-tokenizer splits there anyway,
so the pieces give the whole file's tokens. Only a stretch of 128 KiB with no such line break is
cut elsewhere (the tokens at that one seam may then differ from the whole file's)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .data.tokens import ENCODE_PIECE_BYTES
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


def seamless_cut(text: str, limit: int) -> int:
    """The end of the longest prefix of text[:limit] that ends in a line break between two
    non-space characters (0 if there is none): a boundary of GPT-2's pre-tokenizer."""
    i = text.rfind("\n", 0, limit - 1)
    while i > 0 and (text[i - 1].isspace() or text[i + 1].isspace()):
        i = text.rfind("\n", 0, i)
    return i + 1 if i > 0 else 0


def seamless_pieces(blocks: Iterable[str], size: int) -> Iterator[str]:
    """blocks of text re-cut into pieces of at most 2 * size characters at seamless_cut points."""
    carry = ""
    for block in blocks:
        carry += block
        while len(carry) >= 2 * size:
            cut = seamless_cut(carry, 2 * size) or 2 * size  # no such line break: cut anyway
            yield carry[:cut]
            carry = carry[cut:]
    if carry:
        yield carry


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
        for document in corpus.documents(doc, ENCODE_PIECE_BYTES):  # a text file, or a JSONL/Parquet record
            ids = np.zeros(0, np.int32)  # the document's tokens not yet in a window
            for piece in seamless_pieces(document, ENCODE_PIECE_BYTES):
                new = np.asarray(encode([piece])[0].ids, np.int32)
                tokens += len(new)
                ids = np.concatenate([ids, new])
                whole = len(ids) // (T + 1) * (T + 1)  # full windows now; the rest waits for the next piece
                pending += windows(ids[:whole], T)
                ids = ids[whole:]
                while len(pending) >= batch:
                    score(pending[:batch])
                    pending = pending[batch:]
                done_bytes += len(piece.encode())
                if progress:
                    progress(done_bytes, corpus.bytes, time.monotonic() - t0)
            pending += windows(ids, T)
        nbytes += doc.size
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
