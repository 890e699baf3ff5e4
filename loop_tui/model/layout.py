"""Every tensor a GPT-2 training step owns, by name and shape: the single source of truth for the
model's arenas and for `loop analyze`. Weights are stored (in, out) so forward GEMMs are NN."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ..config import Config

LOGITS_CHUNK_BYTES = 64 * 1024 * 1024  # the LM head runs over row chunks of at most this many logit bytes


@dataclass(frozen=True)
class Spec:
    name: str
    shape: tuple[int, ...]
    decay: bool = False  # parameters only: AdamW weight decay applies
    residual_proj: bool = False  # parameters only: GPT-2 scales its init by 1/sqrt(2 * layers)

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return 4 * self.size


def parameter_specs(cfg: Config) -> list[Spec]:
    """Decayed matrices first, then biases and LayerNorm vectors: each group is one contiguous
    range of the flat parameter buffer, so AdamW runs once per group."""
    d, f, L = cfg.d_model, cfg.d_ff, cfg.num_layers
    decayed = [Spec("wte", (cfg.padded_vocab, d), True), Spec("wpe", (cfg.positions, d), True)]
    plain = []
    for l in range(L):
        decayed += [
            Spec(f"h{l}.qkv_w", (d, 3 * d), True),
            Spec(f"h{l}.proj_w", (d, d), True, True),
            Spec(f"h{l}.fc_w", (d, f), True),
            Spec(f"h{l}.fcproj_w", (f, d), True, True),
        ]
        plain += [
            Spec(f"h{l}.ln1_w", (d,)),
            Spec(f"h{l}.ln1_b", (d,)),
            Spec(f"h{l}.qkv_b", (3 * d,)),
            Spec(f"h{l}.proj_b", (d,)),
            Spec(f"h{l}.ln2_w", (d,)),
            Spec(f"h{l}.ln2_b", (d,)),
            Spec(f"h{l}.fc_b", (f,)),
            Spec(f"h{l}.fcproj_b", (d,)),
        ]
    plain += [Spec("lnf_w", (d,)), Spec("lnf_b", (d,))]
    return decayed + plain


def head_chunk_rows(cfg: Config, rows: int) -> int:
    """Rows of logits computed at once by the LM head (the full matrix never exists)."""
    per_row = 4 * cfg.padded_vocab
    return max(1, min(rows, LOGITS_CHUNK_BYTES // per_row // 64 * 64 or 64))


def activation_specs(cfg: Config, batch: int, seq: int) -> list[Spec]:
    """Buffers forward keeps for backward, per layer, plus backward's scratch. N = batch * seq."""
    d, f, NH, L, N = cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.num_layers, batch * seq
    specs = [Spec("residual0", (N, d))]
    for l in range(L):
        specs += [
            Spec(f"h{l}.ln1", (N, d)),
            Spec(f"h{l}.ln1_mean", (N,)),
            Spec(f"h{l}.ln1_rstd", (N,)),
            Spec(f"h{l}.qkv", (batch, seq, 3 * d)),
            Spec(f"h{l}.lse", (batch, NH, seq)),  # attention's log-sum-exp per query (flash style)
            Spec(f"h{l}.atty", (N, d)),
            Spec(f"h{l}.residual2", (N, d)),
            Spec(f"h{l}.ln2", (N, d)),
            Spec(f"h{l}.ln2_mean", (N,)),
            Spec(f"h{l}.ln2_rstd", (N,)),
            Spec(f"h{l}.fc_pre", (N, f)),  # GELU's input; its output is recomputed in backward
            Spec(f"residual{l + 1}", (N, d)),
        ]
    specs += [
        Spec("lnf", (N, d)),
        Spec("lnf_mean", (N,)),
        Spec("lnf_rstd", (N,)),
        Spec("losses", (N,)),
        Spec("logits", (head_chunk_rows(cfg, N), cfg.padded_vocab)),
        # scratch: projection outputs (forward) and gradients (backward), reused by every layer
        Spec("proj_out", (N, d)),
        Spec("fc_gelu", (N, f)),  # every layer's GELU output in turn: kept by none (backward recomputes it)
        Spec("dres", (N, d)),
        Spec("dtmp", (N, d)),
        Spec("dlnf", (N, d)),
        Spec("dqkv", (batch, seq, 3 * d)),
        Spec("dff", (N, f)),
    ]
    return specs


def parameter_count(cfg: Config) -> int:
    """Elements of parameter_specs(cfg), in closed form: arithmetic on the config alone, so a
    config with 10^8 layers is sized (and refused) without building 10^9 specs."""
    d, f, L = cfg.d_model, cfg.d_ff, cfg.num_layers
    per_layer = 4 * d * d + 2 * d * f + 9 * d + f  # qkv, proj, fc, fcproj; 2 LayerNorms and 4 biases
    return (cfg.padded_vocab + cfg.positions) * d + L * per_layer + 2 * d


def activation_count(cfg: Config, batch: int, seq: int) -> int:
    """Elements of activation_specs(cfg, batch, seq), in closed form (see parameter_count)."""
    d, f, L, N = cfg.d_model, cfg.d_ff, cfg.num_layers, batch * seq
    per_layer = 8 * N * d + 4 * N + batch * cfg.num_heads * seq + N * f
    tail = 8 * N * d + 3 * N + 2 * N * f + head_chunk_rows(cfg, N) * cfg.padded_vocab
    return N * d + L * per_layer + tail


def matmul_params(cfg: Config) -> int:
    """Weights that take part in a GEMM per token: the four per-layer matrices and the tied head."""
    d, f = cfg.d_model, cfg.d_ff
    return cfg.num_layers * (4 * d * d + 2 * d * f) + cfg.vocab_size * d


def training_flops_per_token(cfg: Config) -> float:
    """FLOPs one token costs in a training step (forward + backward), as the kernels do them:
    6 * matmul_params  +  6 * L * d * (T + 1)
    The first term: every weight is used in one forward GEMM (2 FLOPs per multiply-add) and two
    backward GEMMs. The second is causal attention: per layer q.k and a.v over T(T+1)/2 pairs per
    sequence, 2 * d FLOPs each, so 2 * d * (T + 1) per token forward, times 3 with backward.
    LayerNorm, GELU, softmax, biases and AdamW are left out (under 1% here)."""
    return 6.0 * matmul_params(cfg) + 6.0 * cfg.num_layers * cfg.d_model * (cfg.max_length + 1)
