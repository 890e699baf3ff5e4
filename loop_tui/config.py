"""Run configuration: one typed, validated object loaded from a JSON file (orjson).

Every error is a ConfigError whose message names the file, the field and the rule, so the CLI
can print one line and exit 2. Model fields are required; training fields have defaults
(README lists them).
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import orjson

from .errors import EXIT_USAGE

PACKAGE_ROOT = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_ROOT / "configs"  # the shipped configs: package data, read-only in an installed package
DEFAULT_CONFIG = "default"
VOCAB_ALIGN = 64
INT64_MAX = 2**63 - 1  # seeds and counts reach the kernels and numpy as 64-bit integers
MAX_BUDGET_MINUTES = 7 * 24 * 60  # a week: the longest budget_minutes (and `loop plan --minutes`)


class ConfigError(ValueError):
    """A config that cannot be used; str() is the one-line message for the user."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Config:
    # model (required)
    d_model: int  # width of the residual stream (GPT-2 small: 768)
    num_heads: int  # attention heads; d_model must divide by it (head size d_model / num_heads)
    num_layers: int  # transformer blocks
    d_ff: int  # MLP hidden width (GPT-2: 4 * d_model)
    batch_size: int  # sequences per forward/backward (per rank under MPI; see grad_accum_steps)
    max_length: int  # tokens per sequence (the context length T)
    vocab_size: int  # BPE ids, including the 256 bytes and <|endoftext|>
    # training (optional)
    name: str = ""  # shown in run folder names and the dashboard; default: the file's stem
    description: str = ""  # free text for the picker
    max_steps: int = 1000  # length of the run (and of the cosine schedule)
    learning_rate: float = 6e-4  # peak AdamW learning rate, reached after warmup_steps
    min_lr_ratio: float = 0.1  # the cosine decays to learning_rate * min_lr_ratio at max_steps
    warmup_steps: int = 50  # linear warm-up from learning_rate / warmup_steps
    weight_decay: float = 0.1  # decoupled AdamW decay, on weight matrices only (not biases, LayerNorm)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    adam_eps: float = 1e-8  # AdamW denominator epsilon
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    # share of the embeddings, attention outputs and MLP outputs zeroed in training (GPT-2's residual
    # dropout; kept ones scaled by 1 / (1 - dropout)); never in evaluation, sampling or export
    dropout: float = 0.0
    eval_every: int = 100  # steps between validation losses
    # validation: every held-out window (consecutive, non-overlapping) when they fill at most this
    # many batches of batch_size * grad_accum_steps, else this many batches' worth of windows spread
    # evenly over them (the same every time)
    eval_batches: int = 8
    # evaluations without a lower validation loss before the run stops (None: never stops early)
    patience: int | None = None
    # micro-batches of batch_size summed into one optimizer step: the update of one batch of
    # batch_size * grad_accum_steps sequences, with the memory of batch_size
    grad_accum_steps: int = 1
    sample_every: int = 200  # steps between text samples
    sample_tokens: int = 48  # tokens per sample
    log_every: int = 10  # steps between metrics.jsonl lines (and headless progress lines)
    checkpoint_every: int = 200  # steps between checkpoints (one is also saved at the end and on Ctrl-C)
    keep_checkpoints: int = 3  # newest checkpoints kept; older ones are deleted
    val_fraction: float = 0.05  # share of the documents (files; records of JSONL/Parquet) held out for validation
    seed: int = 1337  # weights and batch order; the same seed gives the same run, bit for bit
    data: str | None = None  # folder of text files; None: Python's own documentation
    text_field: str = "text"  # the field (Parquet: column) of JSONL/Parquet records that holds the text
    backend: str = "c"  # "c" (the C kernels) or "opencl"
    threads: int | None = None  # kernel threads; None: all usable cores
    # GEMM inputs: "fp32"; "bf16" (rounded to bf16, summed in fp32; weights, gradients, optimizer and
    # every other op stay fp32); "auto" (bf16 where the CPU has AVX512-BF16 or AMX, else fp32)
    precision: str = "fp32"
    # rows of the position table: the longest context the model can ever take (None: max_length).
    # GPT-2 checkpoints have 1024; a fine-tune may train on shorter sequences and keep them all
    n_positions: int | None = None
    init_from: str | None = None  # the HuggingFace GPT-2 folder the run started from (set by --init-from)
    report_to: str | None = None  # "tensorboard": metrics.jsonl's numbers also as TensorBoard events in the run
    # the training time `loop plan` sized max_steps for: the dashboard counts it down, and training
    # stops after the step that spends it
    budget_minutes: float | None = None

    @property
    def head_size(self) -> int:
        return self.d_model // self.num_heads

    @property
    def positions(self) -> int:
        """Rows of the position table (n_positions, or max_length when unset)."""
        return self.n_positions or self.max_length

    @property
    def padded_vocab(self) -> int:
        """vocab_size rounded up to a multiple of 64 inside the arenas (GEMM-friendly rows, as llm.c
        pads GPT-2's 50257 to 50304); the padded ids never reach the loss, gradients or sampling."""
        return -(-self.vocab_size // VOCAB_ALIGN) * VOCAB_ALIGN

    @property
    def tokens_per_step(self) -> int:
        """Tokens in one optimizer step (of one rank): every micro-batch of grad accumulation."""
        return self.batch_size * self.grad_accum_steps * self.max_length

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> Config:
        d = self.to_dict()
        d.update(changes)
        return from_dict(d, f"<{self.name or 'config'}>")


REQUIRED = ("d_model", "num_heads", "num_layers", "d_ff", "batch_size", "max_length", "vocab_size")
POSITIVE_INT = REQUIRED + (
    "max_steps",
    "eval_every",
    "eval_batches",
    "sample_every",
    "sample_tokens",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "grad_accum_steps",
)
NON_NEGATIVE = ("warmup_steps", "weight_decay", "grad_clip", "seed", "sample_tokens")
BACKENDS = ("c", "opencl")
PRECISIONS = ("fp32", "bf16", "auto")
REPORTERS = ("tensorboard",)
_TYPES = {f.name: f.type for f in fields(Config)}


def _type_ok(name: str, value) -> bool:
    t = _TYPES[name]
    if "None" in t and value is None:
        return True
    if t.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if t.startswith("float"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t.startswith("str"):
        return isinstance(value, str)
    return True


def _type_name(name: str) -> str:
    t = _TYPES[name].replace(" | None", " or null")
    return {"int": "an integer", "float": "a number", "str": "a string"}.get(t.split(" ")[0], t) + (
        " or null" if "null" in t else ""
    )


def from_dict(raw, source: str) -> Config:
    def fail(field: str, rule: str) -> ConfigError:
        return ConfigError(f"{source}: field '{field}': {rule}")

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: must be a JSON object, got {type(raw).__name__}")
    for key in raw:
        if key not in _TYPES:
            close = difflib.get_close_matches(key, list(_TYPES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise fail(key, f"unknown key{hint}")
    for key in REQUIRED:
        if key not in raw:
            raise fail(key, "missing (required)")
    for key, value in raw.items():
        if not _type_ok(key, value):
            raise fail(key, f"must be {_type_name(key)}, got {orjson.dumps(value).decode()}")
        if isinstance(value, float) and not math.isfinite(value):
            raise fail(key, "must be finite")
        if isinstance(value, int) and abs(value) > INT64_MAX:
            raise fail(key, f"must be below 2^63, got {value}")
    name = raw.get("name", "")
    if "/" in name or "\0" in name:
        # the default run folder is runs/<name>-<time>: a path here would put it outside runs/
        raise fail("name", f"must be a plain name (no '/'), got {name!r}")
    for key in POSITIVE_INT:
        if key in raw and raw[key] <= 0:
            raise fail(key, f"must be positive, got {raw[key]}")
    for key in NON_NEGATIVE:
        if key in raw and raw[key] < 0:
            raise fail(key, f"must not be negative, got {raw[key]}")
    if raw["d_model"] % raw["num_heads"]:
        raise fail("d_model", f"must be divisible by num_heads ({raw['d_model']} % {raw['num_heads']} != 0)")
    if raw["vocab_size"] < 257:
        raise fail("vocab_size", f"must be at least 257 (256 bytes + 1 merge), got {raw['vocab_size']}")
    if raw["vocab_size"] > 2**31 - 1:
        raise fail("vocab_size", "must fit in int32")
    if "learning_rate" in raw and raw["learning_rate"] <= 0:
        raise fail("learning_rate", f"must be positive, got {raw['learning_rate']}")
    for key in ("beta1", "beta2", "min_lr_ratio"):
        if key in raw and not 0 <= raw[key] < 1 + (key == "min_lr_ratio"):
            raise fail(key, f"must be in [0, 1{']' if key == 'min_lr_ratio' else ')'}, got {raw[key]}")
    if "dropout" in raw and not 0 <= raw["dropout"] < 1:
        raise fail("dropout", f"must be in [0, 1), got {raw['dropout']}")
    if "val_fraction" in raw and not 0 < raw["val_fraction"] < 1:
        raise fail("val_fraction", f"must be in (0, 1), got {raw['val_fraction']}")
    if "adam_eps" in raw and raw["adam_eps"] <= 0:
        raise fail("adam_eps", f"must be positive, got {raw['adam_eps']}")
    if raw.get("backend", "c") not in BACKENDS:
        raise fail("backend", f"must be one of {', '.join(BACKENDS)}, got {raw['backend']!r}")
    if raw.get("precision", "fp32") not in PRECISIONS:
        raise fail("precision", f"must be one of {', '.join(PRECISIONS)}, got {raw['precision']!r}")
    if raw.get("report_to") not in (None, *REPORTERS):
        raise fail("report_to", f"must be one of {', '.join(REPORTERS)} or null, got {raw['report_to']!r}")
    if raw.get("precision") == "bf16" and raw.get("backend", "c") != "c":
        raise fail("precision", "bf16 runs on the c backend only (the OpenCL kernels are fp32)")
    if raw.get("n_positions") is not None and raw["n_positions"] < raw["max_length"]:
        raise fail("n_positions", f"must be at least max_length ({raw['max_length']}), got {raw['n_positions']}")
    if "text_field" in raw and not raw["text_field"]:
        raise fail("text_field", "must not be empty")
    if raw.get("budget_minutes") is not None and not 0 < raw["budget_minutes"] <= MAX_BUDGET_MINUTES:
        raise fail(
            "budget_minutes",
            f"must be positive and at most {MAX_BUDGET_MINUTES} (a week), or null, got {raw['budget_minutes']}",
        )
    if raw.get("patience") is not None and raw["patience"] <= 0:
        raise fail("patience", f"must be positive or null (no early stop), got {raw['patience']}")
    if raw.get("threads") is not None and raw["threads"] <= 0:
        raise fail("threads", f"must be positive or null, got {raw['threads']}")
    return Config(**raw)


def _typed(name: str, text: str):
    """A --set value as a config file would hold it: a number for a numeric field (as JSON reads it, so
    -1 stays an integer; Python's float syntax too, e.g. .5), text for the rest, null (or none) for an
    optional or numeric field. Text that is no number stays text, so from_dict names what the field needs."""
    t = _TYPES.get(name, "str")
    numeric = t.startswith(("int", "float"))
    if text.lower() in ("null", "none") and ("None" in t or numeric):  # a name may be "none"
        return None
    if numeric:
        try:
            value = orjson.loads(text)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
        except orjson.JSONDecodeError:
            pass
        try:
            return float(text) if t.startswith("float") else int(text)
        except ValueError:
            return text
    return text


def with_overrides(cfg: Config, assignments: list[str]) -> Config:
    """cfg with each KEY=VALUE of `loop train --set` applied, typed and validated as a config file is."""
    changes = {}
    for item in assignments:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set: expected KEY=VALUE (e.g. learning_rate=3e-4), got {item!r}")
        changes[key.strip()] = _typed(key.strip(), value.strip())
    return from_dict({**cfg.to_dict(), **changes}, "--set")


def user_config_dir() -> Path:
    """Where configs the user saves go ($LOOP_CONFIG_DIR, default the platform's config folder,
    e.g. ~/.config/loop_tui/configs); never inside the package, which may be read-only."""
    override = os.environ.get("LOOP_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs

    return platformdirs.user_config_path("loop_tui") / "configs"


def resolve_path(name_or_path: str) -> Path:
    """A path as given, or a config's name: shipped ('smoke' -> loop_tui/configs/smoke.json, so a
    name always means the same shipped file), else one the user saved."""
    p = Path(name_or_path)
    if p.exists() or p.suffix == ".json" or "/" in name_or_path:
        return p
    shipped = CONFIG_DIR / f"{name_or_path}.json"
    saved = user_config_dir() / f"{name_or_path}.json"
    return saved if saved.exists() and not shipped.exists() else shipped


def load_config(name_or_path: str) -> Config:
    path = resolve_path(name_or_path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        known = ", ".join(p.stem for p in shipped_configs())
        saved = ", ".join(p.stem for p in saved_configs())
        raise ConfigError(
            f"{path}: no such config file (shipped configs: {known}"
            + (f"; saved in {user_config_dir()}: {saved}" if saved else "")
            + ")"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.args[0]})") from None
    cfg = from_dict(raw, str(path))
    return cfg if cfg.name else cfg.replace(name=path.stem)


def shipped_configs() -> list[Path]:
    return sorted(CONFIG_DIR.glob("*.json"))


def saved_configs() -> list[Path]:
    """Configs the user saved (the picker's "save as"), except any that a shipped name hides."""
    shipped = {p.name for p in shipped_configs()}
    return sorted(p for p in user_config_dir().glob("*.json") if p.name not in shipped)
