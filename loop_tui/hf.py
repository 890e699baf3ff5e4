"""HuggingFace GPT-2 folders, both ways, with no pickle and no torch.

Our tensors and `transformers`' GPT2LMHeadModel line up one to one: its Conv1D layers store
weights (in, out), as we do, and the LM head is tied to wte in both. So `export_run` writes a
folder `GPT2LMHeadModel.from_pretrained` and `AutoTokenizer.from_pretrained` load with no custom
code, and `read_folder` reads such a folder (a real GPT-2, or one we exported) back into our
names. Only safetensors are read: `pytorch_model.bin` is a pickle, which can run code on load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .cache import atomic_write_bytes, cache_dir
from .config import Config, ConfigError, from_dict
from .data.tokens import EOT
from .errors import LoopError, StorageError

LAYER_NORM_EPS = 1e-5  # what the C LayerNorm uses (GPT-2's layer_norm_epsilon)
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # the tanh approximation our GELU computes
SHAPE_FIELDS = ("d_model", "num_heads", "num_layers", "d_ff", "vocab_size", "n_positions")
_LAYER = {  # our per-layer name -> transformers' name under transformer.h.{l}.
    "ln1_w": "ln_1.weight",
    "ln1_b": "ln_1.bias",
    "qkv_w": "attn.c_attn.weight",
    "qkv_b": "attn.c_attn.bias",
    "proj_w": "attn.c_proj.weight",
    "proj_b": "attn.c_proj.bias",
    "ln2_w": "ln_2.weight",
    "ln2_b": "ln_2.bias",
    "fc_w": "mlp.c_fc.weight",
    "fc_b": "mlp.c_fc.bias",
    "fcproj_w": "mlp.c_proj.weight",
    "fcproj_b": "mlp.c_proj.bias",
}
_TOP = {"wte": "wte.weight", "wpe": "wpe.weight", "lnf_w": "ln_f.weight", "lnf_b": "ln_f.bias"}
_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16}


class InteropError(LoopError):
    """A folder that cannot be imported or exported; str() is the one-line message."""


def hf_name(ours: str) -> str:
    """'h3.qkv_w' -> 'transformer.h.3.attn.c_attn.weight'."""
    if ours in _TOP:
        return "transformer." + _TOP[ours]
    layer, field = ours.split(".", 1)
    return f"transformer.h.{layer[1:]}.{_LAYER[field]}"


def our_name(theirs: str) -> str | None:
    """The inverse of hf_name, for names with or without the 'transformer.' prefix; None for
    tensors we do not keep (lm_head.weight, tied to wte; attention mask buffers)."""
    name = theirs.removeprefix("transformer.")
    for ours, t in _TOP.items():
        if name == t:
            return ours
    if name.startswith("h."):
        _, layer, rest = name.split(".", 2)
        for ours, t in _LAYER.items():
            if rest == t:
                return f"h{layer}.{ours}"
    return None


# ---------------------------------------------------------------- safetensors
def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as float32 (F32, F16, BF16 and F64 accepted). Read
    directly (8-byte header length, JSON header, raw little-endian data) because numpy has no
    bfloat16, the dtype many checkpoints ship in. A damaged file (empty, truncated, a bad
    header) is an InteropError naming it."""
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except OSError as e:
        raise InteropError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError:  # numpy cannot map an empty file
        raise InteropError(f"{path}: not a safetensors file (empty)") from None
    try:
        n = int(np.frombuffer(data[:8], "<u8")[0])
        header = json.loads(bytes(data[8 : 8 + n]))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (ValueError, IndexError) as e:
        raise InteropError(f"{path}: not a safetensors file ({e})") from None
    out = {}
    base = 8 + n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES.get(info["dtype"])
            if dtype is None:
                raise InteropError(
                    f"{path}: tensor {name} has dtype {info['dtype']}; only F32, F16, BF16, F64 are read"
                )
            a, b = info["data_offsets"]
            if not 0 <= a <= b <= len(data) - base:
                raise InteropError(f"{path}: damaged (tensor {name} lies past the end of the file: truncated?)")
            raw = np.frombuffer(data[base + a : base + b], dtype=np.dtype(dtype).newbyteorder("<"))
            if info["dtype"] == "BF16":  # the top half of a float32
                arr = (raw.astype(np.uint32) << 16).view(np.float32)
            else:
                arr = raw.astype(np.float32)
            out[name] = arr.reshape(info["shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise InteropError(f"{path}: damaged (tensor {name}: {type(e).__name__}: {e})") from None
    return out


def _weights_of(folder: Path) -> dict[str, np.ndarray]:
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.exists():
        return read_safetensors(single)
    if index.exists():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InteropError(f"{index}: damaged ({type(e).__name__}: {e})") from None
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            tensors.update(read_safetensors(folder / shard))
        return tensors
    if any((folder / f).exists() for f in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise InteropError(
            f"{folder}: holds only pytorch_model.bin, a pickle (loading one can run arbitrary code), so it is "
            'not read; convert it once where you trust it: python -c "from transformers import '
            f"AutoModelForCausalLM as M; M.from_pretrained('{folder}').save_pretrained('{folder}')\" "
            "(writes model.safetensors)"
        )
    raise InteropError(f"{folder}: no model.safetensors (not a HuggingFace model folder)")


# ---------------------------------------------------------------- import
@dataclass
class HFModel:
    folder: Path
    shape: dict  # our shape fields (SHAPE_FIELDS) from config.json
    params: dict[str, np.ndarray]  # our names, wte with vocab_size rows
    tokenizer_path: Path  # a tokenizers JSON file (the folder's, or built from vocab.json + merges.txt)


RUN_MARKERS = ("checkpoints", "metrics.jsonl", "run.json", ".lock")  # files only a run folder has


def is_hf_folder(path: Path) -> bool:
    """A folder with config.json that is not a run folder (a run writes config.json too)."""
    path = Path(path)
    return (path / "config.json").exists() and not any((path / m).exists() for m in RUN_MARKERS)


def read_config(folder: Path) -> dict:
    """Our shape fields from a transformers GPT-2 config.json; refuses what our model cannot run."""
    path = folder / "config.json"
    try:
        hc = json.loads(path.read_text())
    except OSError as e:
        raise InteropError(f"{path}: cannot read: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InteropError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(hc, dict):
        raise InteropError(f"{path}: must be a JSON object, got {type(hc).__name__}")
    if hc.get("model_type") != "gpt2":
        raise InteropError(f"{path}: model_type is {hc.get('model_type')!r}; only GPT-2 ('gpt2') folders are read")
    act = hc.get("activation_function", "gelu_new")
    rules = [
        (act in TANH_GELUS, f"activation_function {act!r} (this model computes the tanh GELU, gelu_new)"),
        (
            abs(hc.get("layer_norm_epsilon", LAYER_NORM_EPS) - LAYER_NORM_EPS) < 1e-12,
            f"layer_norm_epsilon {hc.get('layer_norm_epsilon')} (the kernels use {LAYER_NORM_EPS})",
        ),
        (hc.get("tie_word_embeddings", True), "untied embeddings (the LM head here is wte)"),
        (hc.get("scale_attn_weights", True), "scale_attn_weights false"),
        (not hc.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx"),
    ]
    for ok, what in rules:
        if not ok:
            raise InteropError(f"{path}: {what} is not supported")
    for key in ("n_embd", "n_head", "n_layer", "vocab_size", "n_positions"):
        value = hc.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InteropError(f"{path}: {key} must be a positive integer, got {json.dumps(value)}")
    inner = hc.get("n_inner")
    if inner is not None and (not isinstance(inner, int) or isinstance(inner, bool) or inner <= 0):
        raise InteropError(f"{path}: n_inner must be a positive integer or null, got {json.dumps(inner)}")
    d = hc["n_embd"]
    return {
        "d_model": d,
        "num_heads": hc["n_head"],
        "num_layers": hc["n_layer"],
        "d_ff": inner or 4 * d,
        "vocab_size": hc["vocab_size"],
        "n_positions": hc["n_positions"],
    }


def _tokenizer_file(folder: Path) -> Path:
    """The folder's tokenizer.json, or one built from GPT-2's vocab.json + merges.txt (stored in
    the cache folder by content hash)."""
    if (folder / "tokenizer.json").exists():
        return folder / "tokenizer.json"
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.exists() and merges.exists()):
        raise InteropError(f"{folder}: no tokenizer (needs tokenizer.json, or vocab.json and merges.txt)")
    from tokenizers import decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if tok.token_to_id(EOT) is not None:
        tok.add_special_tokens([EOT])
    text = tok.to_str()
    path = cache_dir() / f"tokenizer-hf-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.exists():
        atomic_write_bytes(path, text.encode())
    return path


def read_tokenizer(path: Path) -> Tokenizer:
    """The tokenizers JSON file at `path`; an unreadable or damaged one is an InteropError."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad file
        raise InteropError(f"{path}: not a usable tokenizer ({str(e).splitlines()[0] if str(e) else e!r})") from None


def read_folder(folder: str | Path) -> HFModel:
    """A local HuggingFace GPT-2 folder (config.json, model.safetensors, a tokenizer) in our terms."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InteropError(f"{folder}: no such folder")
    if not (folder / "config.json").exists():
        raise InteropError(f"{folder}: no config.json (not a HuggingFace model folder)")
    shape = read_config(folder)
    tensors = _weights_of(folder)
    params = {}
    for theirs, arr in tensors.items():
        ours = our_name(theirs)
        if ours is not None:
            params[ours] = arr
    try:
        cfg = from_dict({**shape, "batch_size": 1, "max_length": shape["n_positions"]}, str(folder / "config.json"))
    except ConfigError as e:
        raise InteropError(str(e)) from None
    from .model.layout import parameter_specs

    specs = parameter_specs(cfg)
    extra = sorted(set(params) - {s.name for s in specs})
    if extra:  # e.g. more layers than config.json's n_layer: loading would silently drop them
        raise InteropError(
            f"{folder}: model.safetensors holds {hf_name(extra[0])}, which config.json (n_layer "
            f"{cfg.num_layers}, n_embd {cfg.d_model}) has no place for; fix config.json to match the weights"
        )
    for spec in specs:
        want = (cfg.vocab_size, cfg.d_model) if spec.name == "wte" else spec.shape
        got = params.get(spec.name)
        if got is None:
            raise InteropError(f"{folder}: model.safetensors has no {hf_name(spec.name)}")
        if got.shape != want:
            raise InteropError(f"{folder}: {hf_name(spec.name)} has shape {got.shape}, config.json implies {want}")
    tok_path = _tokenizer_file(folder)
    tok_vocab = read_tokenizer(tok_path).get_vocab_size()
    if tok_vocab > shape["vocab_size"]:
        raise InteropError(f"{folder}: the tokenizer has {tok_vocab} ids but the model only {shape['vocab_size']}")
    return HFModel(folder, shape, params, tok_path)


def apply_shape(cfg: Config, shape: dict, source: str) -> tuple[Config, str | None]:
    """cfg with its model shape from `source` (an imported folder, or the run being resumed). The
    training length max_length is kept, capped at n_positions. Returns the message to print when
    the config said otherwise (None when it agreed)."""
    changes = {k: v for k, v in shape.items() if getattr(cfg, k) != v and not (k == "n_positions" and v is None)}
    said = [f"{k} {getattr(cfg, k)} → {v}" for k, v in changes.items() if k != "n_positions" or cfg.n_positions]
    if cfg.max_length > shape["n_positions"]:
        changes["max_length"] = shape["n_positions"]
        said.append(f"max_length {cfg.max_length} → {shape['n_positions']} (the model's n_positions)")
    new = cfg.replace(**changes) if changes else cfg
    msg = f"the model shape comes from {source}, not the config: " + ", ".join(said) if said else None
    return new, msg


# ---------------------------------------------------------------- export
def hf_config(cfg: Config, eot: int | None) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_embd": cfg.d_model,
        "n_head": cfg.num_heads,
        "n_layer": cfg.num_layers,
        "n_inner": cfg.d_ff,
        "n_positions": cfg.positions,
        "n_ctx": cfg.positions,
        "vocab_size": cfg.vocab_size,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "tie_word_embeddings": True,
        "scale_attn_weights": True,
        # the run's dropout sits where GPT-2's embd_pdrop and resid_pdrop do (transformers applies
        # them only when training the folder); none on the attention probabilities
        "embd_pdrop": cfg.dropout,
        "resid_pdrop": cfg.dropout,
        "attn_pdrop": 0.0,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def export_params(cfg: Config, params: dict[str, np.ndarray], tokenizer_json: bytes, out: Path) -> None:
    """Write a transformers GPT-2 folder: config.json, model.safetensors, generation_config.json,
    tokenizer.json, tokenizer_config.json, special_tokens_map.json. Written beside `out` first and
    renamed into place, so a failure leaves no half folder."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    if out.exists() and any(out.iterdir()):
        raise InteropError(f"{out}: exists and is not empty; give a new folder")
    tok = Tokenizer.from_str(tokenizer_json.decode())  # verified by its source (checkpoint SHA-256, read_folder)
    eot = tok.token_to_id(EOT)
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT} if eot is not None else {}
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        tensors = {hf_name(k): np.ascontiguousarray(v, np.float32) for k, v in params.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        files = {
            "config.json": hf_config(cfg, eot),
            "generation_config.json": {"bos_token_id": eot, "eos_token_id": eot},
            "tokenizer_config.json": {
                "tokenizer_class": "GPT2TokenizerFast",
                "model_max_length": cfg.positions,
                "add_prefix_space": False,
                "add_bos_token": False,
                **special,
            },
            "special_tokens_map.json": special,
        }
        for name, obj in files.items():
            (tmp / name).write_text(json.dumps(obj, indent=2) + "\n")
        (tmp / "tokenizer.json").write_bytes(tokenizer_json)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(f"{e.filename or out}: cannot write: {e.strerror or e}") from None
    except SafetensorError as e:  # its I/O errors (a full disk) are not OSErrors
        shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(f"{tmp / 'model.safetensors'}: cannot write: {e}") from None
