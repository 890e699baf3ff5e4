"""What both backends share: the statistics records they report, the dropout key their dropout ops
take and the matmul shape check.

A leaf (it imports nothing of loop_tui), so the C and OpenCL backends and the interface in
loop_tui.backend all import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KernelStat:
    name: str
    calls: int
    ns: int
    flops: float
    bytes: float

    @property
    def gflops(self) -> float:
        return self.flops / self.ns if self.ns else 0.0

    @property
    def gbytes(self) -> float:
        return self.bytes / self.ns if self.ns else 0.0


@dataclass(frozen=True)
class ThreadStat:
    index: int  # OpenMP thread number
    os_tid: int  # Linux thread id (for /proc/<pid>/task/<tid>)
    busy_ns: int  # time inside kernel work, barrier waits excluded


@dataclass(frozen=True)
class DropoutKey:
    """Which dropout mask an op draws (c/ops.h's loop_dropout_key says how): the mask of tensor `site`
    (0 embeddings, 2l + 1 layer l's attention output, 2l + 2 its MLP output) at training step `step`
    of a run with seed `seed`; `offset` is the index of the tensor's first element in the step's whole
    batch (rows of other ranks or micro-batches before it, times the width), so every rank draws its
    own part of one mask."""

    p: float
    seed: int
    step: int
    site: int
    offset: int = 0

    def __post_init__(self):
        if not 0 <= self.p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {self.p}")
        if min(self.seed, self.step, self.site, self.offset) < 0:
            raise ValueError(f"dropout key fields must not be negative: {self}")

    @property
    def threshold(self) -> int:
        """A Philox word >= this keeps its element (probability 1 - p)."""
        return int(self.p * 2**32)

    @property
    def scale(self) -> np.float32:
        """What a kept element is multiplied by: 1 / (1 - p) in double, rounded to float32."""
        return np.float32(1.0 / (1.0 - self.p))

    @property
    def words(self) -> tuple[int, int, int, int]:
        """(seed low, seed high, step, site) as the 32-bit words Philox takes."""
        seed = self.seed % 2**64
        return seed & 0xFFFFFFFF, seed >> 32, self.step % 2**32, self.site % 2**32


def matmul_dims(
    a_shape, b_shape, transpose_a: bool, transpose_b: bool, has_out: bool, accumulate: bool
) -> tuple[int, int, int]:
    """(M, N, K) of op(a) @ op(b), or ValueError naming the shapes (shared by every backend)."""
    M, K = (a_shape[1], a_shape[0]) if transpose_a else a_shape
    Kb, N = (b_shape[1], b_shape[0]) if transpose_b else b_shape
    if K != Kb:
        raise ValueError(
            f"matmul shapes do not agree: op(a) is {M}x{K} (a {tuple(a_shape)}, transpose_a={transpose_a}), "
            f"op(b) is {Kb}x{N} (b {tuple(b_shape)}, transpose_b={transpose_b})"
        )
    if accumulate and not has_out:
        raise ValueError("accumulate=True needs out")
    return M, N, K
