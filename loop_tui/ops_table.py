"""One row per kernel op: its cost (FLOPs, and the least bytes it must read and write) as a function
of its shape arguments, the shapes the tests check it on and the shapes the benchmarks time.

The C library counts the same costs itself, in c/ops.def's KSTAT rows (expanded in c/ops.c) and
c/gemm.c, because it must count without calling Python; tests/test_op_costs.py runs every op here
on the C backend and checks its counters against these formulas. The OpenCL backend records its costs from here, and
benchmarks/ take their shapes and FLOP or byte counts from here. A leaf module: it imports nothing
of loop_tui and no numpy, so any layer may read it.

FLOPs of the non-GEMM ops are per-element estimates (exp and tanh count as one). A shape is a dict
of named integers; an op's formulas read the arguments they need and ignore the rest (the rest
size the buffers: the vocabulary of an embedding table, the capacity of a KV cache)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

F4 = 4.0  # bytes per float32
Shape = Mapping[str, int]


@dataclass(frozen=True)
class StepDims:
    """The sizes of one training step of a model, from which the benchmark shapes follow."""

    B: int  # sequences per batch
    T: int  # tokens per sequence
    C: int  # d_model
    F: int  # d_ff
    V: int  # vocabulary
    NH: int  # heads
    head_rows: int  # rows of logits the LM head computes at once
    params: int  # parameter count (AdamW, the gradient norm)

    @property
    def N(self) -> int:
        return self.B * self.T


@dataclass(frozen=True)
class Op:
    name: str  # the op: loop_tui.kernels.<name>, Backend.<name>
    stat: str  # its row in the kernel statistics (kernel_names in c/runtime.c)
    flops: Callable[..., float]
    bytes: Callable[..., float]
    tests: Mapping[str, Shape]  # named shapes the tests run it on
    benches: Callable[[StepDims], Mapping[str, Shape]]  # named shapes of a training step, for benchmarks

    def cost(self, shape: Shape) -> tuple[float, float]:
        """(FLOPs, bytes) of one call at this shape."""
        return float(self.flops(**shape)), float(self.bytes(**shape))

    def smallest_test(self) -> Shape:
        return min(self.tests.values(), key=lambda s: self.cost(s)[1])


def _gemm_bytes(M, N, K, accumulate, bias, **_):
    """A and B read once, C written (and read first when accumulating), the bias read."""
    return F4 * (M * K + K * N + (2 if accumulate else 1) * M * N + (N if bias else 0))


def _gemm(M, N, K, ta=0, tb=0, accumulate=0, bias=0) -> dict[str, int]:
    return dict(M=M, N=N, K=K, ta=ta, tb=tb, accumulate=accumulate, bias=bias)


def step_gemms(d: StepDims) -> dict[str, dict[str, int]]:
    """The GEMMs of a training step (forward, weight gradients, input gradients), named
    "<layer> <op(a)><op(b)>"; biases and accumulation as the model runs them."""
    N, C, F, V, R = d.N, d.C, d.F, d.V, d.head_rows
    return {
        "qkv NN": _gemm(N, 3 * C, C, bias=1),
        "fc NN": _gemm(N, F, C),  # its bias is added by bias_gelu_forward
        "fcproj NN": _gemm(N, C, F, bias=1),
        "head NT": _gemm(R, V, C, tb=1),
        "dW qkv TN": _gemm(C, 3 * C, N, ta=1, accumulate=1),
        "dW fc TN": _gemm(C, F, N, ta=1, accumulate=1),
        "dW fcproj TN": _gemm(F, C, N, ta=1, accumulate=1),
        "dwte TN": _gemm(V, C, R, ta=1, accumulate=1),
        "dx qkv NT": _gemm(N, C, 3 * C, tb=1),
        "dx fc NT": _gemm(N, C, F, tb=1),
        "dx fcproj NT": _gemm(N, F, C, tb=1),
        "dx head NN": _gemm(R, C, V),
    }


GEMM_TESTS = {
    "edges": _gemm(17, 65, 63),
    "transposed": _gemm(65, 17, 129, ta=1, tb=1),
    "bias": _gemm(64, 129, 17, bias=1),
    "accumulate": _gemm(64, 129, 3, tb=1, accumulate=1),
    "bias+accumulate": _gemm(129, 64, 65, ta=1, accumulate=1, bias=1),
}

# (B, T, C, NH): T across the flash kernels' block edges, head sizes 1 to 383, GPT-2's 64 at T 1024
ATTENTION_TESTS = {
    f"B{B}-T{T}-C{C}-NH{NH}": dict(B=B, T=T, C=C, NH=NH)
    for B, T, C, NH in [
        (1, 1, 8, 2),
        (2, 7, 24, 3),
        (1, 17, 24, 3),
        (1, 64, 64, 4),
        (1, 65, 64, 1),
        (2, 129, 48, 8),
        (1, 3, 383, 1),
        (1, 100, 40, 2),
        (1, 1024, 128, 2),
    ]
}


def _attention_flops(B, T, C, **_):
    """causal: T(T+1)/2 (query, key) pairs per head, each 2*hs FLOPs for q.k and 2*hs for p.v"""
    return B * T * (T + 1) / 2.0 * C * 4.0


def _rows(N: int, C: int) -> dict[str, int]:
    return dict(N=N, C=C)


def _flat(n: int) -> dict[str, int]:
    return dict(n=n)


_ROW_TESTS = {"one row": _rows(1, 3), "awkward": _rows(5, 383), "wide": _rows(7, 1537)}
_FLAT_TESTS = {"one": _flat(1), "awkward": _flat(1000003)}
_ENCODER_TESTS = {"one token": dict(B=1, T=1, C=3, V=5), "batch": dict(B=3, T=17, C=65, V=129)}

OPS: dict[str, Op] = {
    op.name: op
    for op in [
        Op(
            "matmul",
            "gemm",
            lambda M, N, K, **_: 2.0 * M * N * K,
            _gemm_bytes,
            GEMM_TESTS,
            step_gemms,
        ),
        Op(
            "matmul_bf16",  # loop_tui.kernels.matmul(..., precision="bf16")
            "gemm_bf16",
            lambda M, N, K, **_: 2.0 * M * N * K,
            _gemm_bytes,
            GEMM_TESTS,
            step_gemms,
        ),
        Op(
            "encoder_forward",
            "encoder_fwd",
            lambda B, T, C, **_: B * T * C,
            lambda B, T, C, **_: F4 * 3 * B * T * C,  # wte rows, wpe rows, out
            _ENCODER_TESTS,
            lambda d: {"step": dict(B=d.B, T=d.T, C=d.C, V=d.V)},
        ),
        Op(
            "encoder_backward",
            "encoder_bwd",
            lambda B, T, C, **_: 2 * B * T * C,
            lambda B, T, C, **_: F4 * 5 * B * T * C,  # dout; dwte and dwpe rows read and written
            _ENCODER_TESTS,
            lambda d: {"step": dict(B=d.B, T=d.T, C=d.C, V=d.V)},
        ),
        Op(
            "layernorm_forward",
            "layernorm_fwd",
            lambda N, C, **_: 7 * N * C,
            lambda N, C, **_: F4 * 2 * N * C,  # inp, out
            _ROW_TESTS,
            lambda d: {"step": _rows(d.N, d.C)},
        ),
        Op(
            "layernorm_backward",
            "layernorm_bwd",
            lambda N, C, **_: 14 * N * C,
            lambda N, C, **_: F4 * 4 * N * C,  # dout, inp, dinp read and written
            _ROW_TESTS,
            lambda d: {"step": _rows(d.N, d.C)},
        ),
        Op(
            "bias_gelu_forward",
            "bias_gelu_fwd",
            lambda N, C, **_: 12 * N * C,
            lambda N, C, **_: F4 * 3 * N * C,  # pre read and written, out
            _ROW_TESTS,
            lambda d: {"step": _rows(d.N, d.F)},
        ),
        Op(
            "gelu_backward",
            "gelu_bwd",
            lambda n, **_: 20.0 * n,
            lambda n, **_: F4 * 3 * n,  # pre, dout, dinp
            _FLAT_TESTS,
            lambda d: {"step": _flat(d.N * d.F)},
        ),
        Op(
            "attention_forward",
            "attention_fwd",
            _attention_flops,
            lambda B, T, C, NH, **_: F4 * (B * T * 4 * C + B * NH * T),  # qkv, out, lse
            ATTENTION_TESTS,
            lambda d: {"step": dict(B=d.B, T=d.T, C=d.C, NH=d.NH)},
        ),
        Op(
            "attention_backward",
            "attention_bwd",
            # recomputing S = Q K^T costs 2*hs per pair more, but the FLOPs counted stay the
            # conventional 2x forward, as for every other op
            lambda **s: 2 * _attention_flops(**s),
            lambda B, T, C, NH, **_: F4 * (B * T * 8 * C + B * NH * T),  # qkv, dout, out, lse, dqkv
            ATTENTION_TESTS,
            lambda d: {"step": dict(B=d.B, T=d.T, C=d.C, NH=d.NH)},
        ),
        Op(
            "residual_forward",
            "residual_fwd",
            lambda n, **_: float(n),
            lambda n, **_: F4 * 3 * n,
            _FLAT_TESTS,
            lambda d: {"step": _flat(d.N * d.C)},
        ),
        Op(
            "bias_backward",
            "bias_bwd",
            lambda N, C, **_: float(N * C),
            lambda N, C, **_: F4 * N * C,
            _ROW_TESTS,
            lambda d: {"step": _rows(d.N, d.F)},
        ),
        Op(
            "dropout",
            "dropout",
            lambda n, **_: 16.0 * n,  # a Philox block (10 rounds of 2 multiplies, 4 xors) per 4 elements
            lambda n, **_: F4 * 2 * n,  # inp, out
            _FLAT_TESTS,
            lambda d: {"embeddings": _flat(d.N * d.C)},
        ),
        Op(
            "residual_dropout",
            "residual_dropout_fwd",
            lambda n, **_: 17.0 * n,  # the mask's 16, the add's 1
            lambda n, **_: F4 * 3 * n,  # a, b, out
            _FLAT_TESTS,
            lambda d: {"step": _flat(d.N * d.C)},
        ),
        Op(
            "dropout_bias_backward",
            "dropout_bias_bwd",
            lambda N, C, **_: 17.0 * N * C,  # the mask's 16, the column sum's 1
            lambda N, C, **_: F4 * 2 * N * C,  # dout, dmasked
            _ROW_TESTS,
            lambda d: {"step": _rows(d.N, d.C)},
        ),
        Op(
            "crossentropy",
            "crossentropy",
            lambda N, V, write_grad, **_: (5 if write_grad else 3) * N * V,
            lambda N, V, write_grad, **_: F4 * (2 if write_grad else 1) * N * V,  # logits (rewritten)
            {
                "loss only": dict(N=3, V=17, Vp=64, write_grad=0),
                "with gradient": dict(N=7, V=383, Vp=384, write_grad=1),
            },
            lambda d: {
                "head rows": dict(N=d.head_rows, V=d.V, Vp=d.V, write_grad=1),
            },
        ),
        Op(
            "adamw",
            "adamw",
            lambda n, **_: 14.0 * n,
            lambda n, **_: F4 * 7 * n,  # param, grad, m, v read; param, m, v written
            _FLAT_TESTS,
            lambda d: {"step": _flat(d.params)},
        ),
        Op(
            "sum_squares",
            "grad_norm",
            lambda n, **_: 2.0 * n,
            lambda n, **_: F4 * n,
            _FLAT_TESTS,
            lambda d: {"step": _flat(d.params)},
        ),
        Op(
            "scale",
            "scale",
            lambda n, **_: float(n),
            lambda n, **_: F4 * 2 * n,
            _FLAT_TESTS,
            lambda d: {"step": _flat(d.params)},
        ),
        Op(
            "gemv",
            "gemv",
            lambda K, N, **_: 2.0 * K * N,
            lambda K, N, **_: F4 * (K * N + K + N),  # W, x, y
            {"row": dict(K=1, N=3), "block": dict(K=65, N=383)},
            lambda d: {"qkv": dict(K=d.C, N=3 * d.C), "fc": dict(K=d.C, N=d.F)},
        ),
        Op(
            "gemv_t",
            "gemv",
            lambda K, N, **_: 2.0 * K * N,
            lambda K, N, **_: F4 * (K * N + K + N),
            {"row": dict(K=1, N=3), "block": dict(K=65, N=383)},
            lambda d: {"head": dict(K=d.C, N=d.V)},
        ),
        Op(
            "attention_decode",
            "attention_decode",
            lambda NH, hs, n, **_: 4.0 * NH * hs * n,
            lambda NH, hs, n, **_: F4 * (2.0 * NH * hs * n + 2.0 * NH * hs),  # the cached k, v; q, out
            {"first token": dict(NH=1, hs=1, n=1, cap=1), "midway": dict(NH=3, hs=17, n=65, cap=129)},
            lambda d: {"last position": dict(NH=d.NH, hs=d.C // d.NH, n=d.T, cap=d.T)},
        ),
    ]
}


def cost(op: str, **shape: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one call of op at shape."""
    return OPS[op].cost(shape)
