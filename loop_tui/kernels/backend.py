"""The C backend: the op set of loop_tui.kernels on numpy buffers in host memory."""
from __future__ import annotations

import numpy as np

from .. import kernels


class CBackend:
    """Ops for the model (same names as loop_tui.kernels) plus buffer management.

    Every buffer the model uses comes from `empty`/`zeros`, so `allocations` counts them all."""

    name = "c"

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        if threads is not None:
            kernels.set_num_threads(threads)
        if precision not in kernels.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(kernels.PRECISIONS)}, got {precision!r}")
        self.precision = precision  # of every GEMM; everything else is fp32
        self.allocations = 0
        self.allocated_bytes = 0
        for op in ("encoder_forward", "encoder_backward", "layernorm_forward", "layernorm_backward",
                   "bias_gelu_forward", "gelu_backward", "attention_forward", "attention_backward",
                   "residual_forward", "bias_backward", "crossentropy", "adamw", "sum_squares"):
            setattr(self, op, getattr(kernels, op))

    def matmul(self, a, b, out=None, transpose_a: bool = False, transpose_b: bool = False, bias=None,
               accumulate: bool = False) -> np.ndarray:
        return kernels.matmul(a, b, out=out, transpose_a=transpose_a, transpose_b=transpose_b, bias=bias,
                              accumulate=accumulate, precision=self.precision)

    # -- buffers
    def empty(self, n: int, dtype=np.float32) -> np.ndarray:
        self.allocations += 1
        self.allocated_bytes += n * np.dtype(dtype).itemsize
        return kernels.empty(n, dtype)

    def zeros(self, n: int, dtype=np.float32) -> np.ndarray:
        a = self.empty(n, dtype)
        a.fill(0)
        return a

    @staticmethod
    def view(flat: np.ndarray, offset: int, shape: tuple[int, ...]) -> np.ndarray:
        return flat[offset:offset + int(np.prod(shape))].reshape(shape)

    @staticmethod
    def zero_(buf: np.ndarray) -> None:
        buf.fill(0)

    @staticmethod
    def to_numpy(buf: np.ndarray) -> np.ndarray:
        return buf

    @staticmethod
    def write(dst: np.ndarray, src: np.ndarray) -> None:
        dst[...] = src

    # -- facts for the UI
    @property
    def threads(self) -> int:
        return kernels.get_num_threads()

    @property
    def device(self) -> str:
        gemm = f"bf16 GEMMs: {kernels.bf16_path()}" if self.precision == "bf16" else "fp32"
        return f"CPU, {kernels.isa()}, {self.threads} threads, {gemm}"
