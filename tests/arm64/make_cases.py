"""Write the kernel cases `make test-arm64` replays under qemu-aarch64 (tests/arm64/replay.c).

Runs on the build machine (x86-64): draws each op's inputs, computes the float64 reference with
tests/reference.py (the same references tests/test_kernels.py uses) and writes one file per case.
The C driver, cross-built for aarch64, loads a case, runs the op on every ISA the emulated CPU
has (neon and generic) with 1 and 2 threads, and checks every output against its reference with
numpy's allclose rule, and the two thread counts against each other bit for bit.

Case file (little-endian): b"LOOPCASE", u16 + op name, u16 + label, u32 array count, then per
array: u16 + name, one kind byte (f float32, d float64, i int32), u64 element count, the data.
Arrays named `want:X` (float64) are the reference of buffer X after the op, `tol:X` its
(rtol, atol); `bf16_path` sets the bf16 GEMM path for the op; every other array is an input (or
an output's initial contents) of that name.

    python -m tests.arm64.make_cases OUT_DIR
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np

from loop_tui.ops_table import ATTENTION_TESTS

from .. import reference as ref

AWKWARD = [1, 3, 17, 63, 64, 65, 127, 129, 383]
RNG = np.random.default_rng(26)
BF16_PATH_IDS = {"portable": 0, "emu-avx512bf16": 3, "emu-amx": 4}  # runtime.h's LOOP_BF16_*: the ones any CPU runs


def rand(*shape, scale=1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def i32(*values) -> np.ndarray:
    return np.array(values, np.int32)


def f32(*values) -> np.ndarray:
    return np.array(values, np.float32)


def dropout_key_words(seed: int, offset: int, step: int, site: int) -> np.ndarray:
    """loop_dropout_key's integers as the int32 bits of (seed lo, seed hi, offset lo, offset hi, step, site)."""
    words = [seed & 0xFFFFFFFF, seed >> 32, offset & 0xFFFFFFFF, offset >> 32, step, site]
    return np.array(words, np.uint32).view(np.int32)


def round_bf16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even bf16, as float32 (kernels.round_bf16, without importing the x86 build)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)


class Writer:
    def __init__(self, out: Path):
        self.out = out
        self.count = 0

    def case(self, op: str, label: str, arrays: dict, checks: dict) -> None:
        """arrays: name -> numpy array (inputs, initial outputs); checks: output -> (want, rtol, atol)."""
        items = dict(arrays)
        for name, (want, rtol, atol) in checks.items():
            assert name in items, f"{op}: checked output {name} has no buffer"
            items[f"want:{name}"] = np.asarray(want, np.float64)
            items[f"tol:{name}"] = np.array([rtol, atol], np.float64)
        blob = [b"LOOPCASE", _text(op), _text(label), struct.pack("<I", len(items))]
        for name, a in items.items():
            a = np.ascontiguousarray(a)
            kind = {np.dtype(np.float32): b"f", np.dtype(np.float64): b"d", np.dtype(np.int32): b"i"}[a.dtype]
            blob += [_text(name), kind, struct.pack("<Q", a.size), a.astype(a.dtype.newbyteorder("<")).tobytes()]
        self.count += 1
        (self.out / f"{self.count:04d}_{op}.case").write_bytes(b"".join(blob))


def _text(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<H", len(b)) + b


def gemm_ref(a, b, ta, tb, bias=None, c=None):
    A = a.astype(np.float64).T if ta else a.astype(np.float64)
    B = b.astype(np.float64).T if tb else b.astype(np.float64)
    out = A @ B
    if bias is not None:
        out = out + bias
    if c is not None:
        out = out + c
    return out


def gemm_case(w: Writer, M, N, K, ta, tb, bias=False, acc=False, blocking=(0, 0, 0), bf16_path=""):
    a = rand(K, M) if ta else rand(M, K)
    b = rand(N, K) if tb else rand(K, N)
    arrays = {
        "ta": i32(ta),
        "tb": i32(tb),
        "M": i32(M),
        "N": i32(N),
        "K": i32(K),
        "A": a,
        "B": b,
        "accumulate": i32(int(acc)),
        "blocking": i32(*blocking),
    }
    c0 = rand(M, N) if acc else np.full((M, N), np.nan, np.float32)
    arrays["C"] = c0
    if bias:
        arrays["bias"] = rand(N)
    label = f"{M}x{N}x{K} ta={ta} tb={tb} bias={int(bias)} acc={int(acc)} blocking={blocking}"
    if bf16_path:
        arrays["bf16_path"] = i32(BF16_PATH_IDS[bf16_path])
        want = gemm_ref(round_bf16(a), round_bf16(b), ta, tb, arrays.get("bias"), c0 if acc else None)
        # fp32 sums of K bf16 products (test_bf16.py's bound); unrounded inputs would miss by ~1e-2 sqrt(K)
        w.case("gemm_bf16", f"{label} {bf16_path}", arrays, {"C": (want, 0.0, 1.6e-5 * np.sqrt(K) + 1e-6)})
    else:
        want = gemm_ref(a, b, ta, tb, arrays.get("bias"), c0 if acc else None)
        w.case("gemm", label, arrays, {"C": (want, 1e-4, 1e-4 * np.sqrt(K))})


def gemm_cases(w: Writer) -> None:
    for s in AWKWARD:
        for ta in (0, 1):
            for tb in (0, 1):
                gemm_case(w, s, 65, 17, ta, tb)
                gemm_case(w, 17, s, 63, ta, tb)
                gemm_case(w, 64, 129, s, ta, tb, bias=True, acc=bool(s % 2))
    for ta in (0, 1):
        for tb in (0, 1):
            # every blocking loop more than once; short M (A fits in L2: threads split N) and the
            # same shape forced down the M-blocked path
            gemm_case(w, 131, 200, 161, ta, tb, bias=True, acc=True, blocking=(48, 64, 64))
            gemm_case(w, 101, 300, 700, ta, tb)
            gemm_case(w, 101, 300, 700, ta, tb, blocking=(24, 0, 0))
    for path in ("portable", "emu-avx512bf16", "emu-amx"):
        for s in (1, 17, 65, 129):
            gemm_case(w, s, 65, 33, 0, 1, bf16_path=path)
            gemm_case(w, 33, s, 70, 1, 0, bias=True, acc=True, bf16_path=path)
        gemm_case(w, 131, 200, 161, 0, 0, bias=True, acc=True, blocking=(48, 64, 64), bf16_path=path)


def op_cases(w: Writer) -> None:
    for C in AWKWARD:
        x, wt, b = rand(5, C, scale=3) + 1, rand(C), rand(C)
        want, m, r = ref.layernorm(x.astype(np.float64), wt, b)
        nan = np.full_like(x, np.nan)
        w.case(
            "layernorm_fwd",
            f"N=5 C={C}",
            {
                "N": i32(5),
                "C": i32(C),
                "inp": x,
                "weight": wt,
                "bias": b,
                "out": nan,
                "mean": np.full(5, np.nan, np.float32),
                "rstd": np.full(5, np.nan, np.float32),
            },
            {"out": (want, 1e-4, 1e-4), "mean": (m, 1e-5, 1e-5), "rstd": (r, 1e-4, 0)},
        )
        dout = rand(5, C)
        dx, dw, db = ref.layernorm_backward(dout.astype(np.float64), x.astype(np.float64), wt.astype(np.float64))
        dinp0, dw0, db0 = rand(5, C), rand(C), rand(C)  # backward adds into all three
        w.case(
            "layernorm_bwd",
            f"N=5 C={C}",
            {
                "N": i32(5),
                "C": i32(C),
                "inp": x,
                "weight": wt,
                "dout": dout,
                "mean": m.astype(np.float32),
                "rstd": r.astype(np.float32),
                "dinp": dinp0,
                "dweight": dw0,
                "dbias": db0,
            },
            {"dinp": (dinp0 + dx, 1e-3, 1e-4), "dweight": (dw0 + dw, 1e-3, 1e-4), "dbias": (db0 + db, 1e-3, 1e-4)},
        )
        pre, bias = rand(3, C, scale=3), rand(C)
        w.case(
            "bias_gelu_fwd",
            f"N=3 C={C} bias",
            {"N": i32(3), "C": i32(C), "pre": pre, "bias": bias, "out": np.full_like(pre, np.nan)},
            {"out": (ref.gelu(pre.astype(np.float64) + bias), 1e-5, 1e-6), "pre": (pre + bias, 0, 0)},
        )
        w.case(
            "bias_gelu_fwd",
            f"N=3 C={C} no bias",
            {"N": i32(3), "C": i32(C), "pre": pre, "out": np.full_like(pre, np.nan)},
            {"out": (ref.gelu(pre.astype(np.float64)), 1e-5, 1e-6), "pre": (pre, 0, 0)},
        )
        x = rand(3 * C + 4096 * (C == 383), scale=2.5)  # the last one spans two of the op's blocks
        d = rand(x.size)
        w.case(
            "gelu_bwd",
            f"n={x.size}",
            {"n": i32(x.size), "pre": x, "dout": d, "dinp": np.full_like(x, np.nan)},
            {"dinp": (ref.gelu_backward(x.astype(np.float64), d.astype(np.float64)), 1e-4, 1e-5)},
        )
    extremes = f32(-100, -20, -5, 0, 5, 20, 100)
    w.case(
        "bias_gelu_fwd",
        "extremes",
        {"N": i32(1), "C": i32(7), "pre": extremes, "out": np.full(7, np.nan, np.float32)},
        {"out": (ref.gelu(extremes.astype(np.float64)), 1e-6, 1e-6)},
    )

    for V in AWKWARD + [16000]:
        N, Vp = 7, V + (V % 5)  # padded rows whenever V % 5: the padding never counts, its gradient is 0
        logits = rand(N, Vp, scale=4)
        targets = RNG.integers(0, V, N).astype(np.int32)
        lw = logits[:, :V].astype(np.float64)
        base = {"N": i32(N), "V": i32(V), "Vp": i32(Vp), "targets": targets, "losses": np.full(N, np.nan, np.float32)}
        want_loss = ref.crossentropy(lw, targets)
        w.case(
            "crossentropy",
            f"N={N} V={V} Vp={Vp} loss",
            {**base, "logits": logits, "grad_scale": f32(0), "write_grad": i32(0)},
            {"losses": (want_loss, 1e-5, 1e-5), "logits": (logits, 0, 0)},
        )
        p = np.exp(lw - lw.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(N), targets] -= 1
        grad = np.zeros((N, Vp))
        grad[:, :V] = 0.5 * p
        w.case(
            "crossentropy",
            f"N={N} V={V} Vp={Vp} grad",
            {**base, "logits": logits, "grad_scale": f32(0.5), "write_grad": i32(1)},
            {"losses": (want_loss, 1e-5, 1e-5), "logits": (grad, 1e-4, 1e-7)},
        )

    # the op table's attention shapes, T capped at 300 so the emulated run stays short
    for B, T, C, NH in ((s["B"], min(s["T"], 300), s["C"], s["NH"]) for s in ATTENTION_TESTS.values()):
        qkv = rand(B, T, 3 * C)
        q64 = qkv.astype(np.float64)
        out, _ = ref.attention(q64, NH)
        lse = ref.attention_lse(q64, NH)
        shape = {"B": i32(B), "T": i32(T), "C": i32(C), "NH": i32(NH), "qkv": qkv, "precision": i32(0)}
        w.case(
            "attention_fwd",
            f"B={B} T={T} C={C} NH={NH}",
            {**shape, "out": np.full((B, T, C), np.nan, np.float32), "lse": np.full((B, NH, T), np.nan, np.float32)},
            {"out": (out, 1e-4, 1e-5), "lse": (lse, 1e-5, 1e-5)},
        )
        dout = rand(B, T, C)
        want = ref.attention_backward(dout.astype(np.float64), q64, NH)
        w.case(
            "attention_bwd",
            f"B={B} T={T} C={C} NH={NH}",
            {
                **shape,
                "dout": dout,
                "out": out.astype(np.float32),
                "lse": lse.astype(np.float32),
                "dqkv": np.full_like(qkv, np.nan),
            },
            {"dqkv": (want, 1e-3, 1e-4 * max(1.0, np.abs(want).max()))},
        )

    # the block products on the bf16 GEMM path: within bf16's rounding of Q, K, V, P and dS (a few
    # 2^-9 relative, test_bf16.py bounds the norm by 2e-2); elementwise here, so a looser allowance
    for path in ("portable", "emu-avx512bf16", "emu-amx"):
        for B, T, C, NH in [(2, 7, 24, 3), (1, 65, 64, 1), (2, 129, 48, 8)]:
            qkv = rand(B, T, 3 * C)
            q64 = qkv.astype(np.float64)
            out, _ = ref.attention(q64, NH)
            lse = ref.attention_lse(q64, NH)
            shape = {"B": i32(B), "T": i32(T), "C": i32(C), "NH": i32(NH), "qkv": qkv, "precision": i32(1)}
            shape["bf16_path"] = i32(BF16_PATH_IDS[path])
            w.case(
                "attention_fwd",
                f"B={B} T={T} C={C} NH={NH} bf16 {path}",
                {
                    **shape,
                    "out": np.full((B, T, C), np.nan, np.float32),
                    "lse": np.full((B, NH, T), np.nan, np.float32),
                },
                {"out": (out, 0, 5e-2), "lse": (lse, 2e-2, 2e-2)},
            )
            dout = rand(B, T, C)
            want = ref.attention_backward(dout.astype(np.float64), q64, NH)
            w.case(
                "attention_bwd",
                f"B={B} T={T} C={C} NH={NH} bf16 {path}",
                {
                    **shape,
                    "dout": dout,
                    "out": out.astype(np.float32),
                    "lse": lse.astype(np.float32),
                    "dqkv": np.full_like(qkv, np.nan),
                },
                {"dqkv": (want, 0, 8e-2 * max(1.0, np.abs(want).max()))},
            )

    # dropout: the Philox mask bit for bit (a dropped element exactly 0), the seed's and offset's
    # high words, a step past 2^31 (test_kernels.py's keys)
    keys = [
        (0.1, 1337, 0, 0, 0),
        (0.5, 7, 3, 5, 3),
        (0.9, 2**40 + 5, 123456, 17, 2**34 + 6),
        (0.25, 0, 2**32 - 1, 2**31, 1),
    ]
    for p, seed, step, site, offset in keys:
        key = {"key_p": np.array([p], np.float64), "key_u32": dropout_key_words(seed, offset, step, site)}
        label = f"p={p} seed={seed} step={step} site={site} offset={offset}"
        for n in (1, 5, 2049, 10_001):
            x = rand(n) + 10  # no zero among the inputs
            want = ref.dropout(x.astype(np.float64), p, seed, step, site, offset)
            w.case(
                "dropout",
                f"n={n} {label}",
                {**key, "n": i32(n), "inp": x, "out": np.full_like(x, np.nan)},
                {"out": (want, 1e-6, 0)},
            )
        a, b = rand(4099), rand(4099)
        want = a.astype(np.float64) + ref.dropout(b.astype(np.float64), p, seed, step, site, offset)
        w.case(
            "residual_dropout",
            f"n=4099 {label}",
            {**key, "n": i32(4099), "a": a, "b": b, "out": np.full_like(a, np.nan)},
            {"out": (want, 1e-6, 1e-6)},
        )
        for N, C in [(1, 3), (130, 65), (3, 2100)]:
            dout = rand(N, C)
            want = ref.dropout(dout.astype(np.float64), p, seed, step, site, offset)
            w.case(
                "dropout_bias_bwd",
                f"N={N} C={C} {label}",
                {
                    **key,
                    "N": i32(N),
                    "C": i32(C),
                    "dout": dout,
                    "dmasked": np.full_like(dout, np.nan),
                    "dbias": np.ones(C, np.float32),
                },
                {"dmasked": (want, 1e-6, 0), "dbias": (1 + want.sum(0), 1e-5, 1e-5)},
            )

    wte, wpe = rand(50, 17), rand(9, 17)
    tokens = RNG.integers(0, 50, (3, 9)).astype(np.int32)
    enc = {"B": i32(3), "T": i32(9), "C": i32(17), "tokens": tokens}
    w.case(
        "encoder_fwd",
        "B=3 T=9 C=17",
        {**enc, "wte": wte, "wpe": wpe, "out": np.full((3, 9, 17), np.nan, np.float32)},
        {"out": (wte.astype(np.float64)[tokens] + wpe, 1e-6, 0)},
    )
    dout, dwte0, dwpe0 = rand(3, 9, 17), rand(50, 17), rand(9, 17)
    want_dwte = dwte0.astype(np.float64)
    np.add.at(want_dwte, tokens, dout.astype(np.float64))
    w.case(
        "encoder_bwd",
        "B=3 T=9 C=17",
        {**enc, "dout": dout, "dwte": dwte0, "dwpe": dwpe0},
        {"dwte": (want_dwte, 1e-5, 1e-5), "dwpe": (dwpe0 + dout.astype(np.float64).sum(0), 1e-5, 1e-5)},
    )
    a, b = rand(10007), rand(10007)
    w.case(
        "residual_fwd",
        "n=10007",
        {"n": i32(a.size), "a": a, "b": b, "out": np.full_like(a, np.nan)},
        {"out": (a + b, 0, 0)},
    )
    d, db0 = rand(130, 65), np.ones(65, np.float32)
    w.case(
        "bias_bwd",
        "N=130 C=65",
        {"N": i32(130), "C": i32(65), "dout": d, "dbias": db0},
        {"dbias": (1 + d.astype(np.float64).sum(0), 1e-5, 1e-4)},
    )

    for n in (1, 3, 1001, 20011):
        p, g = rand(n), rand(n)
        m, v = rand(n) * 0.1, np.abs(rand(n)) * 0.01
        lr, b1, b2, eps, wd, t, s = 1e-3, 0.9, 0.95, 1e-8, 0.1, 7, 0.5
        pw, mw, vw = p.astype(np.float64), m.astype(np.float64), v.astype(np.float64)
        gs = g * s
        mw = b1 * mw + (1 - b1) * gs
        vw = b2 * vw + (1 - b2) * gs * gs
        pw = pw - lr * ((mw / (1 - b1**t)) / (np.sqrt(vw / (1 - b2**t)) + eps) + wd * pw)
        w.case(
            "adamw",
            f"n={n}",
            {
                "n": i32(n),
                "param": p,
                "grad": g,
                "m": m,
                "v": v,
                "hyper": f32(lr, b1, b2, eps, wd, 1 - b1**t, 1 - b2**t, s),
            },
            {"m": (mw, 1e-5, 1e-7), "v": (vw, 1e-5, 1e-9), "param": (pw, 1e-5, 1e-7)},
        )

    x = rand(100_003)
    w.case(
        "sum_squares",
        "n=100003",
        {"n": i32(x.size), "x": x, "result": np.full(1, np.nan)},
        {"result": ((x.astype(np.float64) ** 2).sum(), 1e-9, 0)},
    )
    w.case(
        "scale", "n=1001", {"n": i32(1001), "x": x[:1001], "s": f32(-0.75)}, {"x": (x[:1001] * np.float32(-0.75), 0, 0)}
    )

    for K_, N in [(1, 1), (17, 65), (383, 300), (64, 1030)]:
        xk, W, bias = rand(K_), rand(K_, N), rand(N)
        w.case(
            "gemv",
            f"K={K_} N={N} bias",
            {"K": i32(K_), "N": i32(N), "x": xk, "W": W, "bias": bias, "y": np.full(N, np.nan, np.float32)},
            {"y": (xk.astype(np.float64) @ W + bias, 1e-4, 1e-4)},
        )
        w.case(
            "gemv",
            f"K={K_} N={N}",
            {"K": i32(K_), "N": i32(N), "x": xk, "W": W, "y": np.full(N, np.nan, np.float32)},
            {"y": (xk.astype(np.float64) @ W, 1e-4, 1e-4)},
        )
        Wt = rand(N, K_)
        w.case(
            "gemv_t",
            f"K={K_} N={N}",
            {"K": i32(K_), "N": i32(N), "x": xk, "W": Wt, "y": np.full(N, np.nan, np.float32)},
            {"y": (Wt.astype(np.float64) @ xk, 1e-4, 1e-4)},
        )

    for NH, hs, n, cap in [(1, 1, 1, 1), (3, 17, 5, 9), (2, 64, 40, 64), (4, 8, 129, 129)]:
        q, kc, vc = rand(NH * hs), rand(NH, cap, hs), rand(NH, cap, hs)
        s = np.einsum("hd,htd->ht", q.reshape(NH, hs).astype(np.float64), kc[:, :n]) / np.sqrt(hs)
        att = np.exp(s - s.max(1, keepdims=True))
        att /= att.sum(1, keepdims=True)
        want = np.einsum("ht,htd->hd", att, vc[:, :n].astype(np.float64)).reshape(-1)
        w.case(
            "attention_decode",
            f"NH={NH} hs={hs} n={n} cap={cap}",
            {
                "NH": i32(NH),
                "hs": i32(hs),
                "n": i32(n),
                "cap": i32(cap),
                "q": q,
                "kc": kc,
                "vc": vc,
                "out": np.full(NH * hs, np.nan, np.float32),
            },
            {"out": (want, 1e-4, 1e-5)},
        )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.arm64.make_cases OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.case"):
        old.unlink()
    w = Writer(out)
    gemm_cases(w)
    op_cases(w)
    print(f"{w.count} cases in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
