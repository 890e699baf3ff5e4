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


def load_model(
    path: str | Path, step: int | None = None, warn: Callable[[str], None] = print, best: bool = False
) -> ModelSource:
    """A run folder gives its checkpoint of `step`, or with `best` its checkpoints/best, or by
    default the best when it has one (the lowest validation loss), else its newest intact one."""
    from . import hf

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such run folder or model folder")
    if hf.is_hf_folder(path):
        if step is not None or best:
            option = "--best" if best else "--step"
            raise ConfigError(f"{option}: {path} is a HuggingFace folder; it has no steps")
        m = hf.read_folder(path)
        raw = {**m.shape, "batch_size": 1, "max_length": m.shape["n_positions"], "name": path.name}
        tokenizer = m.tokenizer_path.read_bytes()
        return ModelSource(from_dict(raw, str(path / "config.json")), m.params, tokenizer, str(path))
    which = ""
    if (path / "checkpoints").is_dir():
        best_folder = checkpoint.best(path)
        if best:
            if best_folder is None:
                raise checkpoint.CheckpointError(
                    f"--best: {path} has no best checkpoint yet (checkpoints/best is written at each "
                    "evaluation that lowers the validation loss)"
                )
            ckpt, which = checkpoint.load(best_folder, with_optimizer=False), "the best"
        elif step is None:
            found = _intact_best(best_folder, warn) if best_folder is not None else None
            which = "the best" if found is not None else "the newest"
            ckpt = found or checkpoint.load_newest_intact(path, warn, with_optimizer=False)
        elif best_folder is not None and checkpoint.step_in(best_folder) == step:
            ckpt, which = checkpoint.load(best_folder, with_optimizer=False), "the best"
        else:
            folder = path / "checkpoints" / f"{checkpoint.PREFIX}{step:08d}"
            if not folder.is_dir():
                have = ", ".join(str(checkpoint.step_of(p)) for p in checkpoint.list_checkpoints(path))
                if best_folder is not None:
                    have += f"; the best: step {checkpoint.step_in(best_folder)}"
                raise ConfigError(f"--step {step}: {path} has no checkpoint of that step (it has: {have or 'none'})")
            ckpt = checkpoint.load(folder, with_optimizer=False)
    elif (path / "state.json").exists():
        if step is not None or best:
            option = "--best" if best else f"--step {step}"
            raise ConfigError(
                f"{option}: {path} is one checkpoint, not a run folder; give the run folder ({path.parent.parent}) "
                "to choose among its checkpoints, or leave the option out"
            )
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
    if which:
        val = state.get("val_loss")
        label += f" ({which} checkpoint" + (f", val loss {val:.4f})" if isinstance(val, (int, float)) else ")")
    return ModelSource(cfg, ckpt.params, ckpt.tokenizer, label, state.get("precision", cfg.precision))


def _intact_best(folder: Path, warn: Callable[[str], None]) -> checkpoint.Checkpoint | None:
    """The best checkpoint, or None (with a warning) when it is damaged: the newest serves instead."""
    try:
        return checkpoint.load(folder, with_optimizer=False)
    except checkpoint.CheckpointError as e:
        warn(f"skipping the best checkpoint: {e}; using the newest")
        return None
