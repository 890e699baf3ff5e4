"""The C kernels (c/): the library and its settings (runtime.py), its counters (stats.py), the C
backend, which is the validated wrapper layer over every op (backend.py), the KV-cache decoder
(decode.py) and the measured peak (peak.py).

This module is their face for tests, benchmarks and tools: the settings and counters, and each op
as a function (bound to a CBackend of the precision asked for, so `matmul(..., precision="bf16")`
and `attention_forward(..., precision=...)` choose the GEMM path per call). The rest of loop_tui
reaches the kernels only through a Backend (loop_tui.backend.make_backend)."""

from __future__ import annotations

from ..backend_common import DropoutKey, KernelStat, ThreadStat
from .backend import ALIGN, CBackend, empty, round_bf16
from .runtime import (
    BF16_PATHS,
    ISA_NAMES,
    NATIVE_BF16,
    PRECISIONS,
    Blocking,
    GemmKernel,
    available_bf16_paths,
    available_isas,
    best_bf16_path,
    best_isa,
    bf16_path,
    configure_caches,
    gemm_blocking,
    gemm_kernel,
    gemm_kernel_name,
    get_num_threads,
    has_native_bf16,
    isa,
    measure_peak_gflops,
    set_bf16_path,
    set_gemm_blocking,
    set_gemm_streaming,
    set_isa,
    set_num_threads,
)
from .stats import kernel_stats, reset_stats, scratch_bytes, scratch_grow_count, thread_stats

_BY_PRECISION = {p: CBackend(precision=p) for p in PRECISIONS}
_FP32 = _BY_PRECISION["fp32"]


def _of(precision: str) -> CBackend:
    return _BY_PRECISION.get(precision) or CBackend(precision=precision)  # the latter names the choices


def matmul(
    a,
    b,
    out=None,
    transpose_a: bool = False,
    transpose_b: bool = False,
    bias=None,
    accumulate: bool = False,
    precision: str = "fp32",
):
    return _of(precision).matmul(a, b, out, transpose_a, transpose_b, bias, accumulate)


def attention_forward(out, lse, qkv, num_heads: int, precision: str = "fp32") -> None:
    _of(precision).attention_forward(out, lse, qkv, num_heads)


def attention_backward(dqkv, dout, qkv, out, lse, num_heads: int, precision: str = "fp32") -> None:
    _of(precision).attention_backward(dqkv, dout, qkv, out, lse, num_heads)


encoder_forward = _FP32.encoder_forward
encoder_backward = _FP32.encoder_backward
layernorm_forward = _FP32.layernorm_forward
layernorm_backward = _FP32.layernorm_backward
bias_gelu_forward = _FP32.bias_gelu_forward
gelu_backward = _FP32.gelu_backward
residual_forward = _FP32.residual_forward
dropout = _FP32.dropout
residual_dropout = _FP32.residual_dropout
dropout_bias_backward = _FP32.dropout_bias_backward
bias_backward = _FP32.bias_backward
crossentropy = _FP32.crossentropy
adamw = _FP32.adamw
sum_squares = _FP32.sum_squares
scale = _FP32.scale
gemv = _FP32.gemv
gemv_t = _FP32.gemv_t
attention_decode = _FP32.attention_decode

__all__ = [
    "ALIGN",
    "BF16_PATHS",
    "ISA_NAMES",
    "NATIVE_BF16",
    "PRECISIONS",
    "Blocking",
    "CBackend",
    "DropoutKey",
    "GemmKernel",
    "KernelStat",
    "ThreadStat",
    "adamw",
    "attention_backward",
    "attention_decode",
    "attention_forward",
    "available_bf16_paths",
    "available_isas",
    "best_bf16_path",
    "best_isa",
    "bf16_path",
    "bias_backward",
    "bias_gelu_forward",
    "configure_caches",
    "crossentropy",
    "dropout",
    "dropout_bias_backward",
    "empty",
    "encoder_backward",
    "encoder_forward",
    "gelu_backward",
    "gemm_blocking",
    "gemm_kernel",
    "gemm_kernel_name",
    "gemv",
    "gemv_t",
    "get_num_threads",
    "has_native_bf16",
    "isa",
    "kernel_stats",
    "layernorm_backward",
    "layernorm_forward",
    "matmul",
    "measure_peak_gflops",
    "reset_stats",
    "residual_dropout",
    "residual_forward",
    "round_bf16",
    "scale",
    "scratch_bytes",
    "scratch_grow_count",
    "set_bf16_path",
    "set_gemm_blocking",
    "set_gemm_streaming",
    "set_isa",
    "set_num_threads",
    "sum_squares",
    "thread_stats",
]
