"""Float64 numpy references of every op and of the whole GPT-2 loss, written plainly from the
definitions (no shared code with the kernels), for forward checks and finite-difference
gradient checks."""

from __future__ import annotations

import numpy as np

GELU_S = np.sqrt(2 / np.pi)


def layernorm(x, w, b, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b, mean[..., 0], 1 / np.sqrt(var[..., 0] + eps)


def gelu(x):
    return 0.5 * x * (1 + np.tanh(GELU_S * (x + 0.044715 * x**3)))


def attention(qkv, num_heads):
    """qkv (B,T,3C) -> out (B,T,C), att (B,NH,T,T)"""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // num_heads
    q, k, v = (qkv[..., i * C : (i + 1) * C].reshape(B, T, num_heads, hs).transpose(0, 2, 1, 3) for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    att = np.exp(s)
    att /= att.sum(-1, keepdims=True)
    return (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C), att


def attention_lse(qkv, num_heads):
    """(B,NH,T): log-sum-exp over the causal keys of each query's scaled scores"""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // num_heads
    q, k = (qkv[..., i * C : (i + 1) * C].reshape(B, T, num_heads, hs).transpose(0, 2, 1, 3) for i in range(2))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    mx = s.max(-1, keepdims=True)
    return (mx + np.log(np.exp(s - mx).sum(-1, keepdims=True)))[..., 0]


def crossentropy(logits, targets):
    m = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    return lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]


# ---- analytic backward passes (float64), for the configs' shapes where finite differences are
# too slow; each is itself checked against numeric_grad on small shapes
def layernorm_backward(dout, x, w, eps=1e-5):
    """-> dx, dw, db"""
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    dxhat = dout * w
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    axes = tuple(range(x.ndim - 1))
    return dx, (dout * xhat).sum(axes), dout.sum(axes)


def gelu_backward(x, dout):
    u = GELU_S * (x + 0.044715 * x**3)
    t = np.tanh(u)
    return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_S * (1 + 3 * 0.044715 * x * x))


def attention_backward(dout, qkv, num_heads):
    """-> dqkv (B,T,3C)"""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // num_heads
    q, k, v = (qkv[..., i * C : (i + 1) * C].reshape(B, T, num_heads, hs).transpose(0, 2, 1, 3) for i in range(3))
    _, att = attention(qkv, num_heads)
    do = dout.reshape(B, T, num_heads, hs).transpose(0, 2, 1, 3)
    dv = att.transpose(0, 1, 3, 2) @ do
    datt = do @ v.transpose(0, 1, 3, 2)
    ds = att * (datt - (datt * att).sum(-1, keepdims=True)) / np.sqrt(hs)
    dq, dk = ds @ k, ds.transpose(0, 1, 3, 2) @ q
    return np.concatenate([g.transpose(0, 2, 1, 3).reshape(B, T, C) for g in (dq, dk, dv)], -1)


# ---- dropout: Philox4x32-10 (Salmon et al. 2011) from its published definition, and the mask rule
# of c/ops.h (element g of a tensor: word g % 4 of the block with counter (g // 4, site, step))
PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
U32 = 0xFFFFFFFF


def philox4x32_10(counter, key):
    """Philox4x32-10 of counters (four arrays of 32-bit words) under key (two words) -> four arrays."""
    c0, c1, c2, c3 = (np.asarray(c, np.uint64) & np.uint64(U32) for c in counter)
    k0, k1 = (int(k) & U32 for k in key)
    for _ in range(10):
        p0, p1 = np.uint64(PHILOX_M[0]) * c0, np.uint64(PHILOX_M[1]) * c2
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0),
            p1 & np.uint64(U32),
            (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1),
            p0 & np.uint64(U32),
        )
        k0, k1 = (k0 + PHILOX_W[0]) & U32, (k1 + PHILOX_W[1]) & U32
    return [c.astype(np.uint32) for c in (c0, c1, c2, c3)]


def dropout_keep(n: int, p: float, seed: int, step: int, site: int, offset: int = 0) -> np.ndarray:
    """Which of a tensor's n elements dropout keeps (bool), starting at element `offset`."""
    g = np.uint64(offset) + np.arange(n, dtype=np.uint64)
    block = g >> np.uint64(2)
    words = philox4x32_10(
        (block & np.uint64(U32), block >> np.uint64(32), np.full(n, site), np.full(n, step)), (seed, seed >> 32)
    )
    word = np.choose((g & np.uint64(3)).astype(np.intp), words)
    return word >= np.uint32(int(p * 2**32))


def dropout(x, p: float, seed: int, step: int, site: int, offset: int = 0):
    """Inverted dropout of x (any shape) with the kernels' mask, in x's precision."""
    keep = dropout_keep(x.size, p, seed, step, site, offset).reshape(x.shape)
    return np.where(keep, x / (1 - p), 0.0)


def gpt_loss(p: dict, tokens, targets, cfg, dropout_step: int | None = None) -> float:
    """Mean cross-entropy of GPT-2 with parameters p (name -> array, float64). wte may carry padded
    rows past vocab_size: they are no part of the model (no logit, so no gradient). With
    dropout_step, cfg.dropout applies with that step's masks (sites as c/ops.h numbers them)."""
    B, T = tokens.shape

    def drop(v, site):
        return v if dropout_step is None else dropout(v, cfg.dropout, cfg.seed, dropout_step, site)

    x = drop(p["wte"][tokens] + p["wpe"][:T], 0)
    for l in range(cfg.num_layers):
        h = f"h{l}."
        a, _, _ = layernorm(x, p[h + "ln1_w"], p[h + "ln1_b"])
        qkv = a @ p[h + "qkv_w"] + p[h + "qkv_b"]
        y, _ = attention(qkv, cfg.num_heads)
        x = x + drop(y @ p[h + "proj_w"] + p[h + "proj_b"], 2 * l + 1)
        a, _, _ = layernorm(x, p[h + "ln2_w"], p[h + "ln2_b"])
        x = x + drop(gelu(a @ p[h + "fc_w"] + p[h + "fc_b"]) @ p[h + "fcproj_w"] + p[h + "fcproj_b"], 2 * l + 2)
    x, _, _ = layernorm(x, p["lnf_w"], p["lnf_b"])
    return float(crossentropy(x @ p["wte"][: cfg.vocab_size].T, targets).mean())


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of scalar f() with respect to every element of x (modified in place)."""
    g = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g
