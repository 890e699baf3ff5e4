"""The OpenCL backend: the C backend's op set on device buffers (pyopencl.array views of one flat
buffer per arena). Weights, activations, gradients and AdamW moments never leave the device; a
step uploads the token batch and downloads the per-row losses."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backend_common import DropoutKey, KernelStat, ThreadStat, matmul_dims  # shared by both backends
from ..cache import measured
from ..ops_table import OPS
from .device import NoOpenCL, choose

KERNELS = Path(__file__).with_name("kernels.cl")
SMALL = 256  # the original note's switch: 8x8 work-groups when M < 256 and N < 256, else 16x16
NORM_CHUNKS = 1024


def gemm_tile(M: int, N: int) -> int:
    return 8 if M < SMALL and N < SMALL else 16


class OpenCLBackend:
    name = "opencl"
    precision = "fp32"
    native_bf16 = False

    def __init__(self, device_name: str | None = None, autotune: bool = True):
        import pyopencl as cl
        import pyopencl.array as cla

        try:
            self.dev, self.why = choose(device_name)
        except NoOpenCL:
            raise
        self.cl, self.cla = cl, cla
        self.ctx = cl.Context([self.dev])
        self.queue = cl.CommandQueue(self.ctx, properties=cl.command_queue_properties.PROFILING_ENABLE)
        src = KERNELS.read_text()
        self.programs = {t: cl.Program(self.ctx, src).build(options=[f"-DTILE={t}", "-cl-std=CL1.2"]) for t in (8, 16)}
        self.k8 = self.programs[8]
        self.k16 = self.programs[16]
        self.allocations = 0
        self.allocated_bytes = 0
        self.kernel_objects: dict = {}
        self.pending: list = []  # (stat name, events, FLOPs, bytes) of op calls not yet collected
        self.stats: dict[str, list] = {}
        self.norm_partial = self.empty(NORM_CHUNKS)
        self.scratch_D: Any = None  # a pyopencl array once attention_backward first runs
        self.dummy = self.empty(1)
        self.large_gemm = self._autotune() if autotune else "tiled16"

    # ------------------------------------------------------------------ buffers
    def empty(self, n: int, dtype=np.float32):
        self.allocations += 1
        self.allocated_bytes += n * np.dtype(dtype).itemsize
        return self.cla.empty(self.queue, (n,), dtype)

    def zeros(self, n: int, dtype=np.float32):
        a = self.empty(n, dtype)
        a.fill(0)
        return a

    @staticmethod
    def view(flat, offset: int, shape):
        return flat[offset : offset + int(np.prod(shape))].reshape(shape)

    def zero_(self, buf) -> None:
        buf.fill(0)

    def to_numpy(self, buf) -> np.ndarray:
        out = buf.get()
        self._collect()
        return out

    def write(self, dst, src) -> None:
        dst.set(np.ascontiguousarray(src, dtype=dst.dtype))

    @property
    def threads(self) -> int:
        return self.dev.max_compute_units

    @property
    def device(self) -> str:
        kind = self.cl.device_type.to_string(self.dev.type)  # type: ignore[operator]
        return f"OpenCL {kind} {self.dev.name.strip()} ({self.why})"

    # ------------------------------------------------------------------ launching
    @staticmethod
    def _a(x):
        """(buffer, offset in elements) of an array view."""
        return x.base_data, np.uint64(x.offset // x.dtype.itemsize)

    def _run(self, name: str, program, gsize, lsize, args):
        flat = []
        for a in args:
            if isinstance(a, self.cla.Array):
                flat += list(self._a(a))
            else:
                flat.append(a)
        key = (id(program), name)
        if key not in self.kernel_objects:  # retrieving a kernel creates a new object each time
            self.kernel_objects[key] = self.cl.Kernel(program, name)
        return self.kernel_objects[key](self.queue, gsize, lsize, *flat)

    def _count(self, op: str, events: list, **shape) -> None:
        """One call of an op of loop_tui/ops_table.py, run as these kernel launches: the statistics
        row (named as the C backend names it) gets their device time and the table's cost."""
        flops, nbytes = OPS[op].cost(shape)
        self.pending.append((OPS[op].stat, events, flops, nbytes))
        if len(self.pending) > 256:
            self._collect()

    def _collect(self) -> None:
        for name, events, flops, nbytes in self.pending:
            s = self.stats.setdefault(name, [0, 0, 0.0, 0.0])
            s[0] += 1
            for ev in events:
                ev.wait()
                s[1] += ev.profile.end - ev.profile.start
            s[2] += flops
            s[3] += nbytes
        self.pending.clear()

    def kernel_stats(self) -> list[KernelStat]:
        return [KernelStat(k, v[0], v[1], v[2], v[3]) for k, v in sorted(self.stats.items())]

    def thread_stats(self) -> list[ThreadStat]:
        return []  # the device runs the kernels: no host thread of ours is busy in them

    def peak_gflops(self, precision: str) -> float | None:
        return None  # not measured for OpenCL devices: no MFU

    def decoder(self, model) -> None:
        return None  # no KV-cache kernels: generation runs the whole window per token

    def reset_stats(self) -> None:
        self._collect()
        self.stats.clear()

    @staticmethod
    def _g(n: int, l: int) -> int:
        return (n + l - 1) // l * l

    # ------------------------------------------------------------------ GEMM
    def matmul(self, a, b, out=None, transpose_a=False, transpose_b=False, bias=None, accumulate=False, variant=None):
        M, N, K = matmul_dims(a.shape, b.shape, transpose_a, transpose_b, out is not None, accumulate)
        if out is None:
            out = self.cla.empty(self.queue, (M, N), np.float32)
        if out.shape != (M, N):
            raise ValueError(f"out has shape {out.shape}, expected {(M, N)}")
        variant = variant or (f"tiled{gemm_tile(M, N)}" if gemm_tile(M, N) == 8 else self.large_gemm)
        has_bias = bias is not None
        args = [
            np.int32(M),
            np.int32(N),
            np.int32(K),
            a,
            np.int32(a.shape[1]),
            np.int32(transpose_a),
            b,
            np.int32(b.shape[1]),
            np.int32(transpose_b),
            out,
            np.int32(N),
            bias if has_bias else self.dummy,
            np.int32(has_bias),
            np.int32(accumulate),
        ]
        if variant == "rb4":
            ev = self._run("gemm_rb4", self.k16, (self._g(N, 64) // 4, self._g(M, 64) // 4), (16, 16), args)
        elif variant == "direct4":
            ev = self._run("gemm_direct4", self.k16, (self._g(N, 16), self._g((M + 3) // 4, 4)), (16, 4), args)
        else:
            t = int(variant[len("tiled") :])
            ev = self._run("gemm_tiled", self.programs[t], (self._g(N, t), self._g(M, t)), (t, t), args)
        self._count("matmul", [ev], M=M, N=N, K=K, accumulate=int(accumulate), bias=int(has_bias))
        return out

    def _autotune(self) -> str:
        """Time the large-matrix GEMM variants (16x16 tiled, 64x64 register-blocked, barrier-free) on a
        model-sized shape once per device and keep the fastest; the choice is cached."""
        key = f"{self.dev.platform.name.strip()}|{self.dev.name.strip()}|{self.dev.driver_version}"
        return measured("opencl_tune.json", key, self._time_gemm_variants)["large_gemm"]

    def _time_gemm_variants(self) -> dict:
        rng = np.random.default_rng(0)
        a = self.cla.to_device(self.queue, rng.standard_normal((512, 384), dtype=np.float32))
        b = self.cla.to_device(self.queue, rng.standard_normal((384, 512), dtype=np.float32))
        c = self.cla.empty(self.queue, (512, 512), np.float32)
        timings = {}
        for v in ("tiled16", "rb4", "direct4"):
            self.matmul(a, b, out=c, variant=v)
            self.queue.finish()
            t0 = time.perf_counter()
            for _ in range(3):
                self.matmul(a, b, out=c, variant=v)
            self.queue.finish()
            timings[v] = (time.perf_counter() - t0) / 3
        self.pending.clear()
        return {"large_gemm": min(timings, key=lambda v: timings[v]), "seconds": timings}

    # ------------------------------------------------------------------ ops (same signatures as the C backend)
    def encoder_forward(self, out, tokens, wte, wpe):
        B, T = tokens.shape
        C = wte.shape[1]
        ev = self._run(
            "encoder_forward",
            self.k16,
            (self._g(C, 64), B * T),
            (64, 1),
            [out, tokens, wte, wpe, np.int32(T), np.int32(C)],
        )
        self._count("encoder_forward", [ev], B=B, T=T, C=C)

    def encoder_backward(self, dwte, dwpe, dout, tokens):
        B, T = tokens.shape
        C = dwte.shape[1]
        ev = self._run(
            "encoder_backward",
            self.k16,
            (self._g(C, 64),),
            (64,),
            [dwte, dwpe, dout, tokens, np.int32(B * T), np.int32(T), np.int32(C)],
        )
        self._count("encoder_backward", [ev], B=B, T=T, C=C)

    def layernorm_forward(self, out, mean, rstd, inp, weight, bias):
        C = inp.shape[-1]
        N = inp.size // C
        ev = self._run(
            "layernorm_forward",
            self.k16,
            (self._g(N, 64),),
            (64,),
            [out, mean, rstd, inp, weight, bias, np.int32(N), np.int32(C)],
        )
        self._count("layernorm_forward", [ev], N=N, C=C)

    def layernorm_backward(self, dinp, dweight, dbias, dout, inp, weight, mean, rstd):
        C = inp.shape[-1]
        N = inp.size // C
        inputs = self._run(
            "layernorm_backward_input",
            self.k16,
            (self._g(N, 64),),
            (64,),
            [dinp, dout, inp, weight, mean, rstd, np.int32(N), np.int32(C)],
        )
        params = self._run(
            "layernorm_backward_params",
            self.k16,
            (self._g(C, 64),),
            (64,),
            [dweight, dbias, dout, inp, mean, rstd, np.int32(N), np.int32(C)],
        )
        self._count("layernorm_backward", [inputs, params], N=N, C=C)

    def bias_gelu_forward(self, pre, out, bias=None):
        C = pre.shape[-1]
        n = pre.size
        ev = self._run(
            "bias_gelu_forward",
            self.k16,
            (self._g(n, 256),),
            (256,),
            [pre, out, bias if bias is not None else self.dummy, np.int32(bias is not None), np.int32(C), np.uint64(n)],
        )
        self._count("bias_gelu_forward", [ev], N=n // C, C=C)

    def gelu_backward(self, dinp, pre, dout):
        n = pre.size
        ev = self._run("gelu_backward", self.k16, (self._g(n, 256),), (256,), [dinp, pre, dout, np.uint64(n)])
        self._count("gelu_backward", [ev], n=n)

    def attention_forward(self, out, lse, qkv, num_heads):
        B, T, C3 = qkv.shape
        C = C3 // 3
        if C // num_heads > 256:
            raise ValueError(f"the OpenCL attention takes head sizes up to 256, got {C // num_heads}")
        ev = self._run(
            "attention_forward",
            self.k16,
            (self._g(T, 32), B * num_heads),
            (32, 1),
            [out, lse, qkv, np.int32(T), np.int32(C), np.int32(num_heads)],
        )
        self._count("attention_forward", [ev], B=B, T=T, C=C, NH=num_heads)

    def attention_backward(self, dqkv, dout, qkv, out, lse, num_heads):
        B, T, C3 = qkv.shape
        C = C3 // 3
        n = B * num_heads * T
        if self.scratch_D is None or self.scratch_D.size < n:
            self.scratch_D = self.empty(n)
        D = self.scratch_D[:n]
        g = (self._g(T, 32), B * num_heads)
        rowsum = self._run(
            "attention_backward_rowsum",
            self.k16,
            g,
            (32, 1),
            [D, dout, out, np.int32(T), np.int32(C), np.int32(num_heads)],
        )
        grads = self._run(
            "attention_backward",
            self.k16,
            g,
            (32, 1),
            [dqkv, D, dout, qkv, lse, np.int32(T), np.int32(C), np.int32(num_heads)],
        )
        self._count("attention_backward", [rowsum, grads], B=B, T=T, C=C, NH=num_heads)

    def residual_forward(self, out, a, b):
        n = a.size
        ev = self._run("residual_forward", self.k16, (self._g(n, 256),), (256,), [out, a, b, np.uint64(n)])
        self._count("residual_forward", [ev], n=n)

    def _bias_sums(self, dbias, dout):
        C = dout.shape[-1]
        return self._run(
            "bias_backward", self.k16, (self._g(C, 64),), (64,), [dbias, dout, np.int32(dout.size // C), np.int32(C)]
        )

    def bias_backward(self, dbias, dout):
        C = dout.shape[-1]
        self._count("bias_backward", [self._bias_sums(dbias, dout)], N=dout.size // C, C=C)

    def _masked(self, out, a, b, key: DropoutKey):
        """out = (a or 0) + dropout(b): one launch, one item per Philox block of four elements."""
        n = b.size
        seed_lo, seed_hi, step, site = key.words
        blocks = (key.offset + n + 3) // 4 - key.offset // 4
        return self._run(
            "residual_dropout",
            self.k16,
            (self._g(blocks, 64),),
            (64,),
            [out, a if a is not None else self.dummy, np.int32(a is not None), b, np.uint64(n)]
            + [np.uint32(key.threshold), key.scale, np.uint32(seed_lo), np.uint32(seed_hi)]
            + [np.uint32(step), np.uint32(site), np.uint64(key.offset)],
        )

    def residual_dropout(self, out, a, b, key: DropoutKey):
        self._count("residual_dropout", [self._masked(out, a, b, key)], n=b.size)

    def dropout(self, out, inp, key: DropoutKey):
        self._count("dropout", [self._masked(out, None, inp, key)], n=inp.size)

    def dropout_bias_backward(self, dmasked, dbias, dout, key: DropoutKey):
        C = dout.shape[-1]
        events = [self._masked(dmasked, None, dout, key), self._bias_sums(dbias, dmasked)]
        self._count("dropout_bias_backward", events, N=dout.size // C, C=C)

    def crossentropy(self, logits, targets, losses, grad_scale=0.0, write_grad=False, vocab=None):
        Vp = logits.shape[-1]
        N = logits.size // Vp
        V = Vp if vocab is None else int(vocab)
        ev = self._run(
            "crossentropy",
            self.k16,
            (self._g(N, 32),),
            (32,),
            [
                logits,
                losses,
                targets,
                np.int32(N),
                np.int32(V),
                np.int32(Vp),
                np.float32(grad_scale),
                np.int32(write_grad),
            ],
        )
        self._count("crossentropy", [ev], N=N, V=V, Vp=Vp, write_grad=int(write_grad))

    def adamw(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, grad_scale=1.0):
        n = param.size
        ev = self._run(
            "adamw",
            self.k16,
            (self._g(n, 256),),
            (256,),
            [
                param,
                grad,
                m,
                v,
                np.uint64(n),
                np.float32(lr),
                np.float32(beta1),
                np.float32(beta2),
                np.float32(eps),
                np.float32(weight_decay),
                np.float32(1 - beta1**step),
                np.float32(1 - beta2**step),
                np.float32(grad_scale),
            ],
        )
        self._count("adamw", [ev], n=n)

    def sum_squares(self, x) -> float:
        n = x.size
        chunks = min(NORM_CHUNKS, n)
        ev = self._run(
            "sum_squares",
            self.k16,
            (self._g(chunks, 64),),
            (64,),
            [self.norm_partial.base_data, x, np.uint64(n), np.int32(chunks)],
        )
        self._count("sum_squares", [ev], n=n)
        return float(self.to_numpy(self.norm_partial)[:chunks].astype(np.float64).sum())
