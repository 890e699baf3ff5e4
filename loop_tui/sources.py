"""Where a trained model comes from: a run folder's checkpoint (the newest intact one, or a given
step), a single checkpoint folder, or a HuggingFace GPT-2 folder. `loop generate`, `loop eval`
and `loop export` all load through `load_model`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Config, ConfigError, from_dict
from .train import checkpoint


@dataclass
class ModelSource:
    cfg: Config
    params: dict[str, np.ndarray]  # our names; wte with vocab_size rows
    tokenizer_json: bytes  # read with the weights: a checkpoint rotated away later cannot take it
    label: str  # what was loaded, for messages: 'runs/x step 300' or an HF folder
    precision: str = "fp32"


def load_model(path: str | Path, step: int | None = None, warn: Callable[[str], None] = print) -> ModelSource:
    from . import hf

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such run folder or model folder")
    if hf.is_hf_folder(path):
        if step is not None:
            raise ConfigError(f"--step: {path} is a HuggingFace folder; it has no steps")
        m = hf.read_folder(path)
        raw = {**m.shape, "batch_size": 1, "max_length": m.shape["n_positions"], "name": path.name}
        tokenizer = m.tokenizer_path.read_bytes()
        return ModelSource(from_dict(raw, str(path / "config.json")), m.params, tokenizer, str(path))
    if (path / "checkpoints").is_dir():
        if step is None:
            ckpt = checkpoint.load_newest_intact(path, warn, with_optimizer=False)
        else:
            folder = path / "checkpoints" / f"{checkpoint.PREFIX}{step:08d}"
            if not folder.is_dir():
                have = ", ".join(str(checkpoint.step_of(p)) for p in checkpoint.list_checkpoints(path))
                raise ConfigError(f"--step {step}: {path} has no checkpoint of that step (it has: {have or 'none'})")
            ckpt = checkpoint.load(folder, with_optimizer=False)
    elif (path / "state.json").exists():
        ckpt = checkpoint.load(path, with_optimizer=False)
    elif any((path / m).exists() for m in hf.RUN_MARKERS):
        raise checkpoint.CheckpointError(f"{path}: no checkpoint yet: train it first (or wait for its first save)")
    else:
        raise ConfigError(f"{path}: not a run folder (no checkpoints/) nor a HuggingFace folder (no config.json)")
    state = ckpt.state
    if ckpt.tokenizer is None:
        raise checkpoint.CheckpointError(f"{ckpt.path}: has no tokenizer.json (not a checkpoint `loop train` wrote)")
    cfg = from_dict(state["config"], str(ckpt.path / "state.json"))
    label = f"{path} step {state['step']}"
    return ModelSource(cfg, ckpt.params, ckpt.tokenizer, label, state.get("precision", cfg.precision))
