"""Before training: the memory check from the config alone, and the corpus turned into token ids
with the run's tokenizer, the same one on every MPI rank."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from ..cache import atomic_write_bytes, cache_dir
from ..config import Config, ConfigError
from ..data.corpus import Corpus
from ..data.tokens import TokenData, prepare
from .distributed import World

MEMORY_HEADROOM = 0.9  # refuse a run whose arenas need more than this share of the available RAM


def check_memory(cfg: Config, force: bool) -> None:
    """Refuse (unless `force`) a config whose training arenas do not fit in the available RAM."""
    import psutil

    from ..analyze import human_bytes, training_memory

    need = training_memory(cfg)["total"]
    avail = psutil.virtual_memory().available
    if need > MEMORY_HEADROOM * avail and not force:
        raise ConfigError(
            f"{cfg.name}: training needs about {human_bytes(need)} of memory but only "
            f"{human_bytes(avail)} is available (`loop analyze` breaks it down); use a smaller "
            f"model or batch{accumulation_hint(cfg, MEMORY_HEADROOM * avail)}, or --force to try anyway"
        )


def accumulation_hint(cfg: Config, room: float) -> str:
    """', or set grad_accum_steps=K with batch_size=B/K' for the smallest K that fits in `room`
    bytes and keeps the same batch per step ('' when no divisor of batch_size does)."""
    from ..analyze import training_memory

    for k in range(2, cfg.batch_size + 1):
        if cfg.batch_size % k == 0:
            smaller = cfg.replace(batch_size=cfg.batch_size // k, grad_accum_steps=cfg.grad_accum_steps * k)
            if training_memory(smaller)["total"] <= room:
                return (
                    f", or set grad_accum_steps={smaller.grad_accum_steps} with batch_size={smaller.batch_size}"
                    " (the same update, with the memory of the smaller batch)"
                )
    return ""


class ProgressThrottle:
    """Data preparation progress as "progress" events: at most every 0.5 s and at each phase's end."""

    def __init__(self, emit: Callable[..., None]):
        self.emit = emit
        self.at, self.phase, self.phase_start = 0.0, "", 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if phase != self.phase:
            self.phase_start = now
        elif now - self.at < 0.5 and done < total:
            return
        self.at, self.phase = now, phase
        took = now - self.phase_start
        rate = done / took if took > 0 and done else 0.0
        eta = (total - done) / rate if rate > 0 else float("nan")
        self.emit("progress", phase=phase, done=done, total=total, bytes_per_s=rate, eta_s=eta)


def prepare_tokens(
    world: World,
    cfg: Config,
    corpus: Corpus,
    tokenizer_file: Path | None,
    progress: Callable[[str, int, int], None],
    stopped: Callable[[], bool],
) -> tuple[TokenData, bytes]:
    """The corpus as token ids, and the tokenizer's JSON. Rank 0 encodes with `tokenizer_file`
    (or trains one when None); the other ranks receive its tokenizer and encode their own copy
    of the data with it, whatever made it."""

    def encode(tokenizer: Path | None) -> TokenData:
        return prepare(corpus, cfg.vocab_size, cfg.val_fraction, cfg.max_length + 1, tokenizer, progress, stopped)

    tokens = encode(tokenizer_file) if world.is_root else None
    tokenizer_json = world.bcast_obj(tokens.tokenizer_path.read_bytes() if tokens is not None else None)
    if tokens is None:
        tokens = encode(cached_tokenizer(tokenizer_json))
    return tokens, tokenizer_json


def cached_tokenizer(data: bytes) -> Path:
    """Rank 0's tokenizer as a file in the cache, named by its content."""
    path = cache_dir() / f"tokenizer-rank0-{hashlib.sha256(data).hexdigest()[:16]}.json"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path
