"""GPT-2 (pre-LayerNorm, tanh-GELU MLP, causal multi-head attention, learned positions, tied
embeddings, biases) as llm.c-style forward/backward pairs over a backend's ops.

Parameters, gradients, AdamW moments and activations live in arenas allocated once; a step
allocates nothing. Shapes: B batch, T sequence, d model width, f MLP width, V vocabulary,
N = B*T rows."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..backend import DropoutKey
from ..config import Config
from .layout import Spec, activation_specs, head_chunk_rows, parameter_specs

ALIGN = 256  # bytes, as kernels.ALIGN: every tensor starts at a multiple of this into its arena


class Arena:
    """One flat buffer, named views into it."""

    def __init__(self, backend, specs: list[Spec]):
        self.specs = specs
        self.offsets: dict[str, int] = {}
        off, step = 0, ALIGN // 4  # in float32 elements
        for s in specs:
            off = (off + step - 1) // step * step
            self.offsets[s.name] = off
            off += s.size
        self.size = off
        self.flat = backend.zeros(off)
        self.backend = backend
        self.views = {s.name: backend.view(self.flat, self.offsets[s.name], s.shape) for s in specs}

    def __getitem__(self, name: str):
        return self.views[name]

    def prefix(self, name: str, *shape: int):
        """The first prod(shape) elements of tensor `name`, seen with `shape` (a shorter sequence
        run in buffers sized for a longer one)."""
        return self.backend.view(self.flat, self.offsets[name], shape)

    def range_of(self, first: str, last: str) -> tuple[int, int]:
        """[start, end) of the flat buffer from tensor `first` through tensor `last`."""
        spec = {s.name: s for s in self.specs}[last]
        return self.offsets[first], self.offsets[last] + spec.size


class GPT:
    def __init__(
        self,
        cfg: Config,
        backend,
        batch_size: int | None = None,
        seq_len: int | None = None,
        params: Arena | None = None,
    ):
        """A model for batches of (batch_size, seq_len). Given `params` (another model's), it shares
        those weights and has no gradients: an inference view for sampling and evaluation."""
        self.cfg, self.ops = cfg, backend
        self.B = batch_size or cfg.batch_size
        self.T = seq_len or cfg.max_length
        specs = parameter_specs(cfg)
        self.param_specs = specs
        self.params = params or Arena(backend, specs)
        self.grads = Arena(backend, specs) if params is None else None
        self.acts = Arena(backend, activation_specs(cfg, self.B, self.T))
        self.tokens = backend.zeros(self.B * self.T, np.int32).reshape(self.B, self.T)
        self.targets = backend.zeros(self.B * self.T, np.int32).reshape(self.B, self.T)
        decayed = [s.name for s in specs if s.decay]
        plain = [s.name for s in specs if not s.decay]
        self.decay_range = self.params.range_of(decayed[0], decayed[-1])
        self.plain_range = self.params.range_of(plain[0], plain[-1])
        self.chunk = head_chunk_rows(cfg, self.B * self.T)

    @property
    def gradients(self) -> Arena:
        """The gradient arena (an inference view, sharing another model's weights, has none)."""
        if self.grads is None:
            raise RuntimeError("this model is an inference view: it has no gradients")
        return self.grads

    # ------------------------------------------------------------------ init
    def init_weights(self, seed: int) -> None:
        """GPT-2 init: N(0, 0.02); residual projections N(0, 0.02/sqrt(2L)); LN w=1; biases 0."""
        rng = np.random.default_rng(seed)
        host = np.zeros(self.params.size, np.float32)
        for s in self.param_specs:
            off = self.params.offsets[s.name]
            view = host[off : off + s.size]
            if len(s.shape) == 2:
                std = 0.02 / math.sqrt(2 * self.cfg.num_layers) if s.residual_proj else 0.02
                view[:] = rng.standard_normal(s.size, dtype=np.float32) * std
            elif s.name.endswith(("ln1_w", "ln2_w", "lnf_w")):
                view[:] = 1.0
        wte = self.params.offsets["wte"]
        host[wte + self.cfg.vocab_size * self.cfg.d_model : wte + self.cfg.padded_vocab * self.cfg.d_model] = 0.0
        self.ops.write(self.params.flat, host)

    def load_params(self, params: dict[str, np.ndarray]) -> None:
        """Weights by name, as a checkpoint or an import holds them: wte with vocab_size rows (the
        padded rows are set to zero, so their logits are 0 and, never trained, stay 0)."""
        V, Vp = self.cfg.vocab_size, self.cfg.padded_vocab
        for s in self.param_specs:
            arr = np.asarray(params[s.name], np.float32)
            if s.name == "wte" and arr.shape[0] == V and Vp != V:
                arr = np.concatenate([arr, np.zeros((Vp - V, arr.shape[1]), np.float32)])
            if arr.shape != s.shape:
                raise ValueError(f"{s.name}: shape {arr.shape}, the model needs {s.shape}")
            self.ops.write(self.params[s.name], np.ascontiguousarray(arr))

    def export_params(self) -> dict[str, np.ndarray]:
        """Weights by name, copied to the host, wte stripped of its padded rows."""
        out = {s.name: np.array(self.ops.to_numpy(self.params[s.name])) for s in self.param_specs}
        out["wte"] = out["wte"][: self.cfg.vocab_size].copy()
        return out

    # ------------------------------------------------------------------ forward
    def load_batch(self, tokens: np.ndarray, targets: np.ndarray | None = None) -> None:
        self.ops.write(self.tokens, tokens.astype(np.int32, copy=False))
        if targets is not None:
            self.ops.write(self.targets, targets.astype(np.int32, copy=False))

    def dropout_keys(self, train_step: int | None, first_sequence: int = 0) -> Callable[[int], DropoutKey] | None:
        """The dropout masks of training step `train_step` (site -> key), or None when dropout is off:
        in evaluation and sampling (train_step None) or with dropout 0. first_sequence: where this
        batch starts in the step's whole batch (an MPI rank's rows), so its masks are its part of one."""
        if train_step is None or self.cfg.dropout == 0:
            return None
        p, seed, offset = self.cfg.dropout, self.cfg.seed, first_sequence * self.T * self.cfg.d_model
        return lambda site: DropoutKey(p, seed, train_step, site, offset)

    def forward_body(self, t: int | None = None, drop: Callable[[int], DropoutKey] | None = None) -> None:
        """tokens[B,t] -> lnf[B*t,d]: embeddings, L blocks, final LayerNorm. t (default T) may be
        shorter than the arenas were built for: every activation is then the first B*t rows of
        its buffer (a prompt runs over its own length, not a padded window). drop: dropout_keys'
        masks for the embeddings and each block's two branches (GPT-2's residual dropout)."""
        o, P, cfg, B = self.ops, self.params, self.cfg, self.B
        t = t or self.T
        N, d, NH = B * t, cfg.d_model, cfg.num_heads
        a = self.acts.prefix
        tokens = self.tokens if t == self.T else self.ops.view(self.tokens.reshape(-1), 0, (B, t))
        o.encoder_forward(a("residual0", B, t, d), tokens, P["wte"], P["wpe"])
        if drop:
            o.dropout(a("residual0", B, t, d), a("residual0", B, t, d), drop(0))

        def add_branch(out, x, branch, site: int) -> None:  # out = x + branch, through its dropout
            if drop:
                o.residual_dropout(out, x, branch, drop(site))
            else:
                o.residual_forward(out, x, branch)

        for l in range(cfg.num_layers):
            h = f"h{l}."
            x = a(f"residual{l}", N, d)
            ln1, ln2, proj_out = a(h + "ln1", N, d), a(h + "ln2", N, d), a("proj_out", N, d)
            # attention block: x2 = x + proj(attn(ln1(x)))
            o.layernorm_forward(ln1, a(h + "ln1_mean", N), a(h + "ln1_rstd", N), x, P[h + "ln1_w"], P[h + "ln1_b"])
            o.matmul(ln1, P[h + "qkv_w"], out=a(h + "qkv", N, 3 * d), bias=P[h + "qkv_b"])
            o.attention_forward(a(h + "atty", B, t, d), a(h + "lse", B, NH, t), a(h + "qkv", B, t, 3 * d), NH)
            o.matmul(a(h + "atty", N, d), P[h + "proj_w"], out=proj_out, bias=P[h + "proj_b"])
            add_branch(a(h + "residual2", N, d), x, proj_out, 2 * l + 1)
            # MLP block: x3 = x2 + fcproj(gelu(fc(ln2(x2))))
            x2 = a(h + "residual2", N, d)
            o.layernorm_forward(ln2, a(h + "ln2_mean", N), a(h + "ln2_rstd", N), x2, P[h + "ln2_w"], P[h + "ln2_b"])
            fc_pre, fc_gelu = a(h + "fc_pre", N, cfg.d_ff), a("fc_gelu", N, cfg.d_ff)
            o.matmul(ln2, P[h + "fc_w"], out=fc_pre)
            o.bias_gelu_forward(fc_pre, fc_gelu, P[h + "fc_b"])
            o.matmul(fc_gelu, P[h + "fcproj_w"], out=proj_out, bias=P[h + "fcproj_b"])
            add_branch(a(f"residual{l + 1}", N, d), x2, proj_out, 2 * l + 2)
        x = a(f"residual{cfg.num_layers}", N, d)
        o.layernorm_forward(a("lnf", N, d), a("lnf_mean", N), a("lnf_rstd", N), x, P["lnf_w"], P["lnf_b"])

    def head(self, with_grad: bool) -> float:
        """Tied LM head + softmax cross-entropy, over row chunks so the N x V logits never exist.
        With grad: also dlnf = dlogits . wte and dwte += dlogits^T . lnf. Returns the mean loss."""
        o, P, A = self.ops, self.params, self.acts
        N = self.B * self.T
        targets = self.targets.reshape(N)
        for r0 in range(0, N, self.chunk):
            r1 = min(N, r0 + self.chunk)
            logits = A["logits"][: r1 - r0]
            o.matmul(A["lnf"][r0:r1], P["wte"], out=logits, transpose_b=True)
            o.crossentropy(
                logits, targets[r0:r1], A["losses"][r0:r1], 1.0 / N, write_grad=with_grad, vocab=self.cfg.vocab_size
            )
            if with_grad:
                o.matmul(logits, P["wte"], out=A["dlnf"][r0:r1])
                o.matmul(logits, A["lnf"][r0:r1], out=self.gradients["wte"], transpose_a=True, accumulate=True)
        return float(np.mean(o.to_numpy(A["losses"]), dtype=np.float64))

    def loss(self, tokens: np.ndarray, targets: np.ndarray, train_step: int | None = None) -> float:
        """Mean cross-entropy of a batch, no gradients: as evaluation sees it (no dropout), or with
        train_step, as that training step's forward does (its dropout masks)."""
        self.load_batch(tokens, targets)
        self.forward_body(drop=self.dropout_keys(train_step))
        return self.head(with_grad=False)

    def token_losses(self, tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Cross-entropy at every position [B, T] of a batch, no gradients."""
        self.loss(tokens, targets)
        return np.array(self.ops.to_numpy(self.acts["losses"])).reshape(self.B, self.T)

    # ------------------------------------------------------------------ backward
    def forward_backward(
        self,
        tokens: np.ndarray,
        targets: np.ndarray,
        train_step: int = 0,
        first_sequence: int = 0,
        zero_grads: bool = True,
    ) -> float:
        """Loss of the batch in training step train_step (which keys its dropout masks; see
        dropout_keys for first_sequence); gradients of its mean land in self.grads (zeroed first),
        or, with zero_grads False, are added to what they hold (gradient accumulation)."""
        self.load_batch(tokens, targets)
        if zero_grads:
            self.ops.zero_(self.gradients.flat)
        drop = self.dropout_keys(train_step, first_sequence)
        self.forward_body(drop=drop)
        loss = self.head(with_grad=True)
        self.backward_body(drop)
        return loss

    def backward_body(self, drop: Callable[[int], DropoutKey] | None = None) -> None:
        """dlnf[N,d] -> every parameter gradient. dres carries d(loss)/d(residual stream); drop:
        the forward's dropout masks, drawn again (never stored)."""
        o, P, A, G, cfg = self.ops, self.params, self.acts, self.gradients, self.cfg
        NH, L = cfg.num_heads, cfg.num_layers
        dres, dtmp, dff = A["dres"], A["dtmp"], A["dff"]
        dqkv2 = A["dqkv"].reshape(self.B * self.T, -1)

        def branch_grad(dbias, site: int):
            """The gradient at a branch's output, its bias gradient added: dres, or with dropout dres
            through the branch's mask, in proj_out (the forward's scratch, free in backward)."""
            if not drop:
                o.bias_backward(dbias, dres)
                return dres
            o.dropout_bias_backward(A["proj_out"], dbias, dres, drop(site))
            return A["proj_out"]

        o.zero_(dres)
        o.layernorm_backward(
            dres, G["lnf_w"], G["lnf_b"], A["dlnf"], A[f"residual{L}"], P["lnf_w"], A["lnf_mean"], A["lnf_rstd"]
        )
        for l in reversed(range(L)):
            h = f"h{l}."
            # MLP block; GELU's output is recomputed from fc_pre (bias already added) instead of kept
            o.bias_gelu_forward(A[h + "fc_pre"], A["fc_gelu"])
            dbranch = branch_grad(G[h + "fcproj_b"], 2 * l + 2)
            o.matmul(A["fc_gelu"], dbranch, out=G[h + "fcproj_w"], transpose_a=True, accumulate=True)
            o.matmul(dbranch, P[h + "fcproj_w"], out=dff, transpose_b=True)
            o.gelu_backward(dff, A[h + "fc_pre"], dff)
            o.matmul(A[h + "ln2"], dff, out=G[h + "fc_w"], transpose_a=True, accumulate=True)
            o.bias_backward(G[h + "fc_b"], dff)
            o.matmul(dff, P[h + "fc_w"], out=dtmp, transpose_b=True)
            o.layernorm_backward(
                dres,
                G[h + "ln2_w"],
                G[h + "ln2_b"],
                dtmp,
                A[h + "residual2"],
                P[h + "ln2_w"],
                A[h + "ln2_mean"],
                A[h + "ln2_rstd"],
            )
            # attention block
            dbranch = branch_grad(G[h + "proj_b"], 2 * l + 1)
            o.matmul(A[h + "atty"], dbranch, out=G[h + "proj_w"], transpose_a=True, accumulate=True)
            o.matmul(dbranch, P[h + "proj_w"], out=dtmp, transpose_b=True)
            BTd = (self.B, self.T, -1)
            o.attention_backward(
                A["dqkv"], dtmp.reshape(BTd), A[h + "qkv"], A[h + "atty"].reshape(BTd), A[h + "lse"], NH
            )
            o.matmul(A[h + "ln1"], dqkv2, out=G[h + "qkv_w"], transpose_a=True, accumulate=True)
            o.bias_backward(G[h + "qkv_b"], dqkv2)
            o.matmul(dqkv2, P[h + "qkv_w"], out=dtmp, transpose_b=True)
            o.layernorm_backward(
                dres,
                G[h + "ln1_w"],
                G[h + "ln1_b"],
                dtmp,
                A[f"residual{l}"],
                P[h + "ln1_w"],
                A[h + "ln1_mean"],
                A[h + "ln1_rstd"],
            )
        if drop:  # dres is not needed after this: masked in place
            o.dropout(dres, dres, drop(0))
        o.encoder_backward(G["wte"], G["wpe"], dres.reshape(self.B, self.T, -1), self.tokens)

    # ------------------------------------------------------------------ inference
    def next_token_logits(self, context: np.ndarray) -> np.ndarray:
        """Logits [vocab_size] (the padding stripped) after the last token of `context` (at most T
        tokens; this model must have been built with B=1). Runs the context's positions (no KV cache)."""
        n = len(context)
        window = np.zeros((1, self.T), np.int32)
        window[0, :n] = context
        self.load_batch(window)
        self.forward_body(n)  # only the n positions of the context
        row = self.acts.prefix("lnf", n, self.cfg.d_model)[n - 1 : n]
        logits = self.acts["logits"][:1]
        self.ops.matmul(row, self.params["wte"], out=logits, transpose_b=True)
        return np.array(self.ops.to_numpy(logits)[0, : self.cfg.vocab_size])
