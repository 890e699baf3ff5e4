"""`--report-to tensorboard`: the numbers rank 0 writes to metrics.jsonl, also written as TensorBoard
event files in the run folder, so `tensorboard --logdir runs/` shows every run side by side.
tensorboardX writes them (no torch, no TensorFlow); it is imported only when asked for.
metrics.jsonl stays the record: this is a copy for viewing."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from ..config import ConfigError

# metrics.jsonl key -> TensorBoard tag
TAGS = {
    "loss": "train/loss",
    "val_loss": "val/loss",
    "val_ppl": "val/perplexity",
    "lr": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "tokens_per_s": "speed/tokens_per_s",
    "mfu": "speed/mfu",
}
INSTALL_HINT = 'pip install "loop_tui[tensorboard]" (tensorboardX writes the events, tensorboard shows them)'


class TensorBoardWriter:
    def __init__(self, run_dir: Path, resumed_at: int):
        """resumed_at: the checkpoint's step on resume (0 for a new run). Events a crashed session
        wrote after it are hidden, as metrics.jsonl drops its lines after it."""
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ConfigError(f"--report-to tensorboard needs the tensorboardX package: {INSTALL_HINT}") from None
        purge = resumed_at + 1 if resumed_at else None
        # tensorboardX names the file by the second and the host alone: a session resumed within
        # the same second would overwrite the previous one's events
        unique = f".{os.getpid()}.{time.time_ns()}"
        self.writer = SummaryWriter(logdir=str(run_dir), purge_step=purge, flush_secs=10, filename_suffix=unique)

    def write(self, record: dict) -> None:
        step = record["step"]
        for key, tag in TAGS.items():
            value = record.get(key)
            if value is not None and math.isfinite(value):  # MFU is NaN where no peak is known (OpenCL)
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()
