"""Batches of (input, target) windows of max_length + 1 tokens at seeded random offsets.

The generator's state is part of every checkpoint, so a resumed run draws the same batches as
one that never stopped. Validation uses fixed windows (validation_windows), so every evaluation
of the same weights gives the same number and val losses compare step to step."""

from __future__ import annotations

import numpy as np


class BatchSampler:
    def __init__(self, ids: np.ndarray, batch: int, seq: int, seed: int):
        if len(ids) < seq + 1:
            raise ValueError(f"{len(ids)} tokens cannot fill a window of {seq + 1}")
        self.ids, self.batch, self.seq = ids, batch, seq
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        starts = self.rng.integers(0, len(self.ids) - self.seq, size=self.batch)
        window = np.stack([self.ids[s : s + self.seq + 1] for s in starts]).astype(np.int32)
        return window[:, :-1], window[:, 1:]

    @property
    def state(self) -> dict:
        """JSON-safe generator state (PCG64's 128-bit integers as strings)."""
        st = self.rng.bit_generator.state
        return {**st, "state": {k: str(v) for k, v in st["state"].items()}}

    @state.setter
    def state(self, value: dict) -> None:
        self.rng.bit_generator.state = {**value, "state": {k: int(v) for k, v in value["state"].items()}}


def validation_windows(ids: np.ndarray, seq: int, limit: int) -> np.ndarray:
    """Start offsets of the held-out windows of seq + 1 tokens that validation scores: every
    consecutive, non-overlapping one (each held-out token a target once, but the first and a tail
    shorter than a window) when there are at most `limit`, else `limit` of them spread evenly."""
    starts = np.arange(0, len(ids) - seq, seq)
    if len(starts) > limit:
        starts = starts[np.linspace(0, len(starts) - 1, limit).round().astype(np.int64)]
    return starts


def window_batches(
    ids: np.ndarray, starts: np.ndarray, batch: int, seq: int
) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(inputs, targets, rows) batches of the windows of seq + 1 tokens at `starts`; the last batch
    is filled up to `batch` rows with copies of its first window, of which only `rows` count."""
    out = []
    for b in range(0, len(starts), batch):
        chunk = starts[b : b + batch]
        rows = len(chunk)
        chunk = np.concatenate([chunk, np.full(batch - rows, chunk[0])])
        window = np.stack([ids[s : s + seq + 1] for s in chunk]).astype(np.int32)
        out.append((window[:, :-1], window[:, 1:], rows))
    return out
