"""AdamW with gradient clipping and the learning-rate schedule, on the backend's buffers."""

from __future__ import annotations

import math

from ..backend import Backend
from ..config import Config
from ..model.gpt import GPT


def lr_at(cfg: Config, step: int) -> float:
    """Linear warmup to learning_rate, then cosine down to min_lr_ratio * learning_rate."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    floor = cfg.learning_rate * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.learning_rate - floor) * (1 + math.cos(math.pi * progress))


class AdamW:
    """The first and second moments, and one update of the model's weights from its gradients."""

    def __init__(self, backend: Backend, size: int):
        self.backend = backend
        self.m = backend.zeros(size)
        self.v = backend.zeros(size)

    def step(self, cfg: Config, model: GPT, step: int, grad_norm: float) -> float:
        """Update the weights for optimizer step `step` (0-based) and return its learning rate.
        The gradients hold the sum of grad_accum_steps micro-batch means, with norm `grad_norm`
        already divided by grad_accum_steps; the update clips that norm to grad_clip."""
        clip = min(1.0, cfg.grad_clip / (grad_norm + 1e-6)) if cfg.grad_clip > 0 else 1.0
        grad_scale = clip / cfg.grad_accum_steps
        lr = lr_at(cfg, step)
        P, G = model.params.flat, model.gradients.flat
        for (a, b), wd in ((model.decay_range, cfg.weight_decay), (model.plain_range, 0.0)):
            self.backend.adamw(
                P[a:b],
                G[a:b],
                self.m[a:b],
                self.v[a:b],
                lr,
                cfg.beta1,
                cfg.beta2,
                cfg.adam_eps,
                wd,
                step + 1,
                grad_scale,
            )
        return lr
