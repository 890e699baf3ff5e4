"""The backend interface the model is written against: the op set, buffer management and
observability, as a typing.Protocol, plus what every backend shares (KernelStat, the matmul shape
check) and the factory. Importing this module loads no backend: the C extension and pyopencl are
imported only by make_backend, so a stale C build never stops the OpenCL backend importing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .config import ConfigError

Buffer = Any  # a numpy array (C backend) or a pyopencl.array.Array (OpenCL backend)


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


@runtime_checkable
class Backend(Protocol):
    """What GPT (model/gpt.py) and the Trainer call. Shapes as in c/ops.h; every op writes into
    buffers the caller allocated with empty/zeros, so a training step allocates nothing."""

    name: str
    precision: str  # of the GEMMs: "fp32" or "bf16"

    # -- buffers
    def empty(self, n: int, dtype=np.float32) -> Buffer: ...
    def zeros(self, n: int, dtype=np.float32) -> Buffer: ...
    def view(self, flat: Buffer, offset: int, shape: tuple[int, ...]) -> Buffer: ...
    def zero_(self, buf: Buffer) -> None: ...
    def to_numpy(self, buf: Buffer) -> np.ndarray: ...
    def write(self, dst: Buffer, src: np.ndarray) -> None: ...

    # -- ops
    def matmul(
        self,
        a: Buffer,
        b: Buffer,
        out: Buffer | None = None,
        transpose_a: bool = False,
        transpose_b: bool = False,
        bias: Buffer | None = None,
        accumulate: bool = False,
    ) -> Buffer: ...
    def encoder_forward(self, out: Buffer, tokens: Buffer, wte: Buffer, wpe: Buffer) -> None: ...
    def encoder_backward(self, dwte: Buffer, dwpe: Buffer, dout: Buffer, tokens: Buffer) -> None: ...
    def layernorm_forward(
        self, out: Buffer, mean: Buffer, rstd: Buffer, inp: Buffer, weight: Buffer, bias: Buffer
    ) -> None: ...
    def layernorm_backward(
        self,
        dinp: Buffer,
        dweight: Buffer,
        dbias: Buffer,
        dout: Buffer,
        inp: Buffer,
        weight: Buffer,
        mean: Buffer,
        rstd: Buffer,
    ) -> None: ...
    def bias_gelu_forward(self, pre: Buffer, out: Buffer, bias: Buffer | None = None) -> None: ...
    def gelu_backward(self, dinp: Buffer, pre: Buffer, dout: Buffer) -> None: ...
    def attention_forward(self, out: Buffer, lse: Buffer, qkv: Buffer, num_heads: int) -> None: ...
    def attention_backward(
        self, dqkv: Buffer, dout: Buffer, qkv: Buffer, out: Buffer, lse: Buffer, num_heads: int
    ) -> None: ...
    def residual_forward(self, out: Buffer, a: Buffer, b: Buffer) -> None: ...
    def bias_backward(self, dbias: Buffer, dout: Buffer) -> None: ...
    def dropout(self, out: Buffer, inp: Buffer, key: DropoutKey) -> None: ...
    def residual_dropout(self, out: Buffer, a: Buffer, b: Buffer, key: DropoutKey) -> None: ...
    def dropout_bias_backward(self, dmasked: Buffer, dbias: Buffer, dout: Buffer, key: DropoutKey) -> None: ...
    def crossentropy(
        self,
        logits: Buffer,
        targets: Buffer,
        losses: Buffer,
        grad_scale: float = 0.0,
        write_grad: bool = False,
        vocab: int | None = None,
    ) -> None: ...
    def adamw(
        self,
        param: Buffer,
        grad: Buffer,
        m: Buffer,
        v: Buffer,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
        step: int,
        grad_scale: float = 1.0,
    ) -> None: ...
    def sum_squares(self, x: Buffer) -> float: ...

    # -- facts and statistics for the UI
    @property
    def threads(self) -> int: ...
    @property
    def device(self) -> str: ...
    def kernel_stats(self) -> list[KernelStat]: ...
    def reset_stats(self) -> None: ...


def resolve_precision(requested: str, backend: str) -> str:
    """The GEMM precision a run uses: `auto` is bf16 where the CPU multiplies bf16 natively
    (AVX512-BF16 or AMX, with the avx512 ISA active), else fp32."""
    if requested != "auto":
        return requested
    if backend != "c":
        return "fp32"
    from . import kernels

    return "bf16" if kernels.has_native_bf16() else "fp32"


def make_backend(name: str, threads: int | None, device: str | None = None, precision: str = "fp32") -> Backend:
    if name == "c":
        from .kernels.backend import CBackend

        return CBackend(threads, resolve_precision(precision, "c"))
    if resolve_precision(precision, name) != "fp32":
        raise ConfigError(f"--precision {precision}: the {name} backend runs fp32 only")
    if name == "opencl":
        from .opencl.backend import OpenCLBackend
        from .opencl.device import NoOpenCL

        try:
            return OpenCLBackend(device)
        except NoOpenCL as e:
            raise ConfigError(f"--backend opencl: {e}") from None
    raise ConfigError(f"unknown backend {name!r} (choose c or opencl)")
