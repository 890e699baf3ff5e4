"""The backend interface everything above the backends is written against, as a typing.Protocol:
the op set, buffer management, observability, capabilities (native bf16, the measured peak) and the
decoder for generation; plus the factory. It is the only door to kernels/ and opencl/ (tests/
test_imports.py checks). Importing this module loads no backend: the C extension and pyopencl are
imported only by make_backend, so a stale C build never stops the OpenCL backend importing."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from .backend_common import DropoutKey, KernelStat, ThreadStat
from .config import ConfigError

Buffer = Any  # a numpy array (C backend) or a pyopencl.array.Array (OpenCL backend)


class Decoder(Protocol):
    """Next-token logits of a growing text with a KV cache (kernels/decode.py)."""

    def prefill(self, context: np.ndarray) -> np.ndarray: ...
    def step(self, token: int) -> np.ndarray: ...


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

    # -- generation
    def decoder(self, model: Any) -> Decoder | None:
        """A KV-cache decoder for a batch-1 GPT on this backend, or None where there is none
        (generation then runs the whole window per token)."""
        ...

    # -- facts and statistics for the trainer and the UI
    @property
    def threads(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def native_bf16(self) -> bool:
        """bf16 GEMMs run on bf16 hardware (AVX512-BF16 or AMX)."""
        ...

    def peak_gflops(self, precision: str) -> float | None:
        """This machine's measured peak for GEMMs of `precision` (the MFU denominator), or None."""
        ...

    def kernel_stats(self) -> list[KernelStat]: ...
    def thread_stats(self) -> list[ThreadStat]:
        """The host threads running kernels, with their busy time (none where a device runs them)."""
        ...

    def reset_stats(self) -> None: ...


def resolve_precision(requested: str, backend: str) -> str:
    """The GEMM precision a run uses: `auto` is bf16 where the CPU multiplies bf16 natively
    (AVX512-BF16 or AMX, with the avx512 ISA active), else fp32."""
    if requested != "auto":
        return requested
    if backend != "c":
        return "fp32"
    from .kernels.runtime import has_native_bf16

    return "bf16" if has_native_bf16() else "fp32"


def c_library():
    """The C library's settings and facts (kernels/runtime.py: ISA, bf16 path, threads, GEMM
    micro-kernels and blocking) for the reports that describe this machine (`loop info`, `loop
    analyze`). ImportError, with the reason, where the C kernels are not built or stale."""
    from .kernels import runtime

    return runtime


def describe_opencl(device: str | None) -> str:
    """The OpenCL platforms and devices, and which one `--device` picks and why (`loop info`)."""
    from .opencl.device import describe_platforms

    return describe_platforms(device)


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
