"""A run as one GGUF file, the format llama.cpp (and ollama and LM Studio on top of it) loads.

llama.cpp's own converter cannot take our export: it identifies a BPE's pre-tokenizer by hashing
the tokens it produces on a test text, and refuses a hash it does not know, which every tokenizer
trained here has. This writer needs no such guess: our pre-tokenizer is GPT-2's byte-level one
(regex included), so the file says so ("gpt-2"), with the run's own tokens and merges.

Layout (llama.cpp's gpt2 architecture, as its convert_hf_to_gguf.py GPT2Model writes it):
weight matrices are stored (out, in) row-major, the transpose of our (in, out) arenas;
token_embd (the tokenizer's ids, d) and position_embd (positions, d) as they are; no `output` tensor, so
llama.cpp ties the LM head to token_embd as we do. Matrices take the chosen type; biases,
LayerNorm and position_embd stay F32 (as the converter keeps them). The file is written beside
OUT and renamed into place, with an ollama Modelfile next to it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .config import Config
from .data.tokens import EOT
from .errors import StorageError
from .hf import LAYER_NORM_EPS, InteropError

TYPES = ("f32", "f16", "bf16", "q8_0")
GGUF_HINT = "GGUF export needs the gguf package (llama.cpp's own): pip install 'loop_tui[gguf]' (or pip install gguf)"
_LAYER = {  # our per-layer name -> (GGUF name under blk.{l}., stored transposed)
    "ln1_w": ("attn_norm.weight", False),
    "ln1_b": ("attn_norm.bias", False),
    "qkv_w": ("attn_qkv.weight", True),
    "qkv_b": ("attn_qkv.bias", False),
    "proj_w": ("attn_output.weight", True),
    "proj_b": ("attn_output.bias", False),
    "ln2_w": ("ffn_norm.weight", False),
    "ln2_b": ("ffn_norm.bias", False),
    "fc_w": ("ffn_up.weight", True),
    "fc_b": ("ffn_up.bias", False),
    "fcproj_w": ("ffn_down.weight", True),
    "fcproj_b": ("ffn_down.bias", False),
}
_TOP = {
    "wte": "token_embd.weight",
    "wpe": "position_embd.weight",
    "lnf_w": "output_norm.weight",
    "lnf_b": "output_norm.bias",
}


def gguf_tensors(cfg: Config, params: dict[str, np.ndarray], n_vocab: int) -> dict[str, np.ndarray]:
    """Our parameters under llama.cpp's gpt2 names, in its layout and order (float32); token_embd
    keeps the tokenizer's n_vocab rows (rows past it belong to no token)."""

    def f32(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, np.float32)

    out = {_TOP["wte"]: f32(params["wte"][:n_vocab]), _TOP["wpe"]: f32(params["wpe"])}
    for l in range(cfg.num_layers):
        for field, (name, transposed) in _LAYER.items():
            arr = params[f"h{l}.{field}"]
            out[f"blk.{l}.{name}"] = f32(arr.T if transposed else arr)
    out[_TOP["lnf_w"]], out[_TOP["lnf_b"]] = f32(params["lnf_w"]), f32(params["lnf_b"])
    return out


def vocabulary(tokenizer_json: bytes, limit: int) -> tuple[list[str], list[int], list[str], int]:
    """(tokens, token types, merges, end-of-text id) of a byte-level BPE tokenizer.json: one token
    per id up to the tokenizer's largest (at most `limit`, the model's rows), as llama.cpp wants one
    token per embedding row. So llama.cpp, like `loop generate`, never samples an id that is no token."""
    import gguf

    spec = json.loads(tokenizer_json)
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise InteropError("the model's tokenizer is not a GPT-2 style byte-level BPE (only those export to GGUF)")
    ids = list(model["vocab"].values()) + [a["id"] for a in spec.get("added_tokens", [])]
    n_vocab = min(max(ids) + 1, limit)
    tokens: list[str | None] = [None] * n_vocab
    types = [int(gguf.TokenType.UNUSED)] * n_vocab
    for text, i in model["vocab"].items():
        if i < n_vocab:
            tokens[i], types[i] = text, int(gguf.TokenType.NORMAL)
    for added in spec.get("added_tokens", []):
        if added["id"] < n_vocab:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = int(gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED)
    eot = next((i for i, t in enumerate(tokens) if t == EOT), None)
    if eot is None:
        raise InteropError(f"the model's tokenizer has no {EOT} token")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    padded = [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)]
    return padded, types, merges, eot


def modelfile(gguf_name: str, cfg: Config) -> str:
    """An ollama Modelfile for the exported file (a base model: the prompt is continued as is)."""
    return (
        f"# ollama create {cfg.name or 'loop-model'} -f Modelfile, then: ollama run {cfg.name or 'loop-model'}\n"
        f"FROM ./{gguf_name}\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
        f'PARAMETER stop "{EOT}"\n'
        f"PARAMETER num_ctx {cfg.positions}\n"
        "PARAMETER temperature 0.8\n"
        "PARAMETER top_k 40\n"
    )


def export_gguf(cfg: Config, params: dict[str, np.ndarray], tokenizer_json: bytes, out: Path, dtype: str) -> list[str]:
    """Write OUT (a .gguf file) and a Modelfile beside it; returns notes for the user (tensors kept
    in another type than asked)."""
    try:
        import gguf
    except ImportError:
        raise InteropError(GGUF_HINT) from None
    if dtype not in TYPES:
        raise InteropError(f"--type must be one of {', '.join(TYPES)}, got {dtype!r}")
    manifest = out.parent / "Modelfile"
    for path in (out, manifest):
        if path.exists():
            raise InteropError(f"{path}: exists; give a new file name (or folder)")
    qtype = gguf.GGMLQuantizationType[dtype.upper()]
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[dtype]
    tokens, types, merges, eot = vocabulary(tokenizer_json, cfg.vocab_size)
    notes = []
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GPT2])
        w.add_name(cfg.name or "loop_tui model")
        w.add_context_length(cfg.positions)
        w.add_embedding_length(cfg.d_model)
        w.add_feed_forward_length(cfg.d_ff)
        w.add_block_count(cfg.num_layers)
        w.add_head_count(cfg.num_heads)
        w.add_layer_norm_eps(LAYER_NORM_EPS)
        w.add_file_type(file_type)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(eot)
        w.add_eos_token_id(eot)
        w.add_add_bos_token(False)  # a prompt is continued as is, as `loop generate` does
        for name, arr in gguf_tensors(cfg, params, len(tokens)).items():
            kind = qtype if arr.ndim == 2 and name != "position_embd.weight" else gguf.GGMLQuantizationType.F32
            try:
                data = gguf.quants.quantize(arr, kind)
            except gguf.QuantError:  # rows not a multiple of the block size: F16, as llama.cpp's converter does
                kind = gguf.GGMLQuantizationType.F16
                data = gguf.quants.quantize(arr, kind)
                notes.append(f"{name} kept in F16 (its rows of {arr.shape[-1]} do not split into Q8_0 blocks)")
            w.add_tensor(name, data, raw_dtype=kind)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
        manifest.write_text(modelfile(out.name, cfg))
    except OSError as e:  # a full disk, a read-only folder: exit 5, as every OS refusal
        raise StorageError(f"{e.filename or out}: cannot write: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return notes
