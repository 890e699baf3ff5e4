"""The C backend: the op set of loop_tui.kernels on numpy buffers in host memory (see
loop_tui.backend.Backend for the interface and c/ops.h for the shapes)."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..backend import DropoutKey, KernelStat


class CBackend:
    """Ops for the model plus buffer management. Every buffer the model uses comes from
    `empty`/`zeros`, so `allocations` counts them all."""

    name = "c"

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        if threads is not None:
            kernels.set_num_threads(threads)
        if precision not in kernels.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(kernels.PRECISIONS)}, got {precision!r}")
        self.precision = precision  # of every GEMM; everything else is fp32
        self.allocations = 0
        self.allocated_bytes = 0

    # -- buffers
    def empty(self, n: int, dtype=np.float32) -> np.ndarray:
        self.allocations += 1
        self.allocated_bytes += n * np.dtype(dtype).itemsize
        return kernels.empty(n, dtype)

    def zeros(self, n: int, dtype=np.float32) -> np.ndarray:
        a = self.empty(n, dtype)
        a.fill(0)
        return a

    def view(self, flat: np.ndarray, offset: int, shape: tuple[int, ...]) -> np.ndarray:
        return flat[offset : offset + int(np.prod(shape))].reshape(shape)

    def zero_(self, buf: np.ndarray) -> None:
        buf.fill(0)

    def to_numpy(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def write(self, dst: np.ndarray, src: np.ndarray) -> None:
        dst[...] = src

    # -- ops (each validates its arguments in loop_tui.kernels, then calls C)
    def matmul(
        self, a, b, out=None, transpose_a: bool = False, transpose_b: bool = False, bias=None, accumulate: bool = False
    ) -> np.ndarray:
        return kernels.matmul(
            a,
            b,
            out=out,
            transpose_a=transpose_a,
            transpose_b=transpose_b,
            bias=bias,
            accumulate=accumulate,
            precision=self.precision,
        )

    def encoder_forward(self, out, tokens, wte, wpe) -> None:
        kernels.encoder_forward(out, tokens, wte, wpe)

    def encoder_backward(self, dwte, dwpe, dout, tokens) -> None:
        kernels.encoder_backward(dwte, dwpe, dout, tokens)

    def layernorm_forward(self, out, mean, rstd, inp, weight, bias) -> None:
        kernels.layernorm_forward(out, mean, rstd, inp, weight, bias)

    def layernorm_backward(self, dinp, dweight, dbias, dout, inp, weight, mean, rstd) -> None:
        kernels.layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd)

    def bias_gelu_forward(self, pre, out, bias=None) -> None:
        kernels.bias_gelu_forward(pre, out, bias)

    def gelu_backward(self, dinp, pre, dout) -> None:
        kernels.gelu_backward(dinp, pre, dout)

    def attention_forward(self, out, lse, qkv, num_heads: int) -> None:
        kernels.attention_forward(out, lse, qkv, num_heads, self.precision)

    def attention_backward(self, dqkv, dout, qkv, out, lse, num_heads: int) -> None:
        kernels.attention_backward(dqkv, dout, qkv, out, lse, num_heads, self.precision)

    def residual_forward(self, out, a, b) -> None:
        kernels.residual_forward(out, a, b)

    def bias_backward(self, dbias, dout) -> None:
        kernels.bias_backward(dbias, dout)

    def dropout(self, out, inp, key: DropoutKey) -> None:
        kernels.dropout(out, inp, key)

    def residual_dropout(self, out, a, b, key: DropoutKey) -> None:
        kernels.residual_dropout(out, a, b, key)

    def dropout_bias_backward(self, dmasked, dbias, dout, key: DropoutKey) -> None:
        kernels.dropout_bias_backward(dmasked, dbias, dout, key)

    def crossentropy(
        self, logits, targets, losses, grad_scale: float = 0.0, write_grad: bool = False, vocab: int | None = None
    ) -> None:
        kernels.crossentropy(logits, targets, losses, grad_scale, write_grad, vocab)

    def adamw(
        self,
        param,
        grad,
        m,
        v,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        weight_decay: float,
        step: int,
        grad_scale: float = 1.0,
    ) -> None:
        kernels.adamw(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, grad_scale)

    def sum_squares(self, x) -> float:
        return kernels.sum_squares(x)

    # -- facts and statistics for the UI
    @property
    def threads(self) -> int:
        return kernels.get_num_threads()

    @property
    def device(self) -> str:
        gemm = f"bf16 GEMMs: {kernels.bf16_path()}" if self.precision == "bf16" else "fp32"
        return f"CPU, {kernels.isa()}, {self.threads} threads, {gemm}"

    def kernel_stats(self) -> list[KernelStat]:
        return kernels.kernel_stats()

    def reset_stats(self) -> None:
        kernels.reset_stats()
