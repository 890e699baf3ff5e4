"""Generation with a KV cache on the C backend (CBackend.decoder): the prompt runs once through the
model's ordinary forward pass (prefill), then each new token runs alone through every layer against
the cached keys and values of the tokens before it: GEMV-shaped kernels (`gemv`, `gemv_t`,
`attention_decode`), not padded GEMMs. Shapes: d model width, f MLP width, NH heads of hs, cap = the
window T of the model. When the text outgrows the window, the caller starts again with a prefill
(train/sample.py's window_start)."""

from __future__ import annotations

from typing import Any

import numpy as np


class Decoder:
    """Next-token logits of a growing text for a B=1 model (model/gpt.py's GPT) on the C backend:
    every kernel call goes through the model's backend, `model.ops`."""

    def __init__(self, model: Any):
        if model.B != 1:
            raise ValueError(f"the decoder needs a model built with batch_size=1, got {model.B}")
        cfg = model.cfg
        self.model, self.cfg, self.T, self.ops = model, cfg, model.T, model.ops
        d, f, NH = cfg.d_model, cfg.d_ff, cfg.num_heads
        self.NH, self.hs = NH, d // NH

        def z(shape):
            shape = (shape,) if isinstance(shape, int) else shape
            return self.ops.zeros(int(np.prod(shape))).reshape(shape)

        self.kc = [z((NH, self.T, self.hs)) for _ in range(cfg.num_layers)]
        self.vc = [z((NH, self.T, self.hs)) for _ in range(cfg.num_layers)]
        self.x, self.x2, self.ln, self.proj, self.att = (z((1, d)) for _ in range(5))
        self.mean, self.rstd = z(1), z(1)
        self.qkv, self.fc, self.gelu = z(3 * d), z((1, f)), z((1, f))
        self.logits = z(cfg.padded_vocab)
        self.tok = np.zeros((1, 1), np.int32)
        self.n = 0  # positions in the cache
        self.start = 0  # where the cached context begins in the text

    def prefill(self, context: np.ndarray) -> np.ndarray:
        """Fill the cache with `context` (1..T tokens); logits [vocab_size] after its last token."""
        n = len(context)
        logits = self.model.next_token_logits(context)  # one ordinary forward pass over the window
        d, A = self.cfg.d_model, self.model.acts
        for l in range(self.cfg.num_layers):
            qkv = A.prefix(f"h{l}.qkv", n, 3 * d)
            self.kc[l][:, :n] = qkv[:, d : 2 * d].reshape(n, self.NH, self.hs).transpose(1, 0, 2)
            self.vc[l][:, :n] = qkv[:, 2 * d :].reshape(n, self.NH, self.hs).transpose(1, 0, 2)
        self.n = n
        return logits

    def step(self, token: int) -> np.ndarray:
        """Append one token at the next position; logits [vocab_size] after it."""
        P, cfg, p = self.model.params, self.cfg, self.n
        if p >= self.T:
            raise ValueError(f"the cache holds {self.T} positions; start again from a shorter context")
        d, ops = cfg.d_model, self.ops
        self.tok[0, 0] = token
        ops.encoder_forward(self.x.reshape(1, 1, d), self.tok, P["wte"], P["wpe"][p : p + 1])
        x, x2 = self.x, self.x2
        for l in range(cfg.num_layers):
            h = f"h{l}."
            ops.layernorm_forward(self.ln, self.mean, self.rstd, x, P[h + "ln1_w"], P[h + "ln1_b"])
            ops.gemv(self.qkv, self.ln, P[h + "qkv_w"], P[h + "qkv_b"])
            self.kc[l][:, p] = self.qkv[d : 2 * d].reshape(self.NH, self.hs)
            self.vc[l][:, p] = self.qkv[2 * d :].reshape(self.NH, self.hs)
            ops.attention_decode(self.att, self.qkv[:d], self.kc[l], self.vc[l], p + 1)
            ops.gemv(self.proj, self.att, P[h + "proj_w"], P[h + "proj_b"])
            ops.residual_forward(x2, x, self.proj)
            ops.layernorm_forward(self.ln, self.mean, self.rstd, x2, P[h + "ln2_w"], P[h + "ln2_b"])
            ops.gemv(self.fc, self.ln, P[h + "fc_w"])
            ops.bias_gelu_forward(self.fc, self.gelu, P[h + "fc_b"])
            ops.gemv(self.proj, self.gelu, P[h + "fcproj_w"], P[h + "fcproj_b"])
            ops.residual_forward(x, x2, self.proj)
        ops.layernorm_forward(self.ln, self.mean, self.rstd, x, P["lnf_w"], P["lnf_b"])
        ops.gemv_t(self.logits, self.ln, P["wte"])
        self.n = p + 1
        return self.logits[: cfg.vocab_size].copy()
