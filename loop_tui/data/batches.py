"""Batches of (input, target) windows of max_length + 1 tokens at seeded random offsets.

The generator's state is part of every checkpoint, so a resumed run draws the same batches as
one that never stopped. Validation batches use a fixed seed, so every evaluation sees the same
windows and val losses compare step to step."""

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


def eval_batches(ids: np.ndarray, batch: int, seq: int, count: int, seed: int = 12345):
    sampler = BatchSampler(ids, batch, seq, seed)
    return [sampler.next() for _ in range(count)]
