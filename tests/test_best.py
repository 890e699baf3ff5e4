"""Spending the minutes well: validation that compares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loop_tui.data.batches import validation_windows
from loop_tui.model.gpt import GPT
from loop_tui.train.trainer import Trainer

from .test_train import quick


@pytest.fixture
def small_corpus(tmp_path) -> str:
    """Twenty short files: a held-out set of one file, a few dozen windows of the smoke config."""
    import pydoc_data.topics as topics

    folder = tmp_path / "corpus"
    folder.mkdir()
    texts = list(topics.topics.values())
    for i in range(20):
        (folder / f"doc{i:02d}.txt").write_text(texts[i][:3000])
    return str(folder)


def ready(cfg, run_dir: Path, data: str | None = None) -> Trainer:
    t = Trainer(cfg, run_dir, data=data)
    t.setup()
    return t


# ---------------------------------------------------------------- validation
def test_validation_scores_every_held_out_window_when_they_are_few(tmp_path, small_corpus):
    cfg = quick(eval_batches=1000)
    t = ready(cfg, tmp_path / "run", small_corpus)
    ids, T = t.tokens.val, cfg.max_length
    every = list(range(0, len(ids) - T, T))  # consecutive windows of T + 1 tokens
    assert len(every) > cfg.batch_size  # more than one batch, the last one part-filled
    assert [rows for _, _, rows in t.val] == [min(cfg.batch_size, len(every) - b) for b in range(0, len(every), 8)]
    first, second = t.evaluate(), t.evaluate()
    assert first == second
    one = GPT(cfg, t.backend, batch_size=1, params=t.model.params)
    each = [one.loss(ids[s : s + T][None], ids[s + 1 : s + T + 1][None]) for s in every]
    assert first == pytest.approx(float(np.mean(each)), rel=1e-5)
    t.close()


def test_validation_of_a_large_held_out_set_is_a_fixed_evenly_spread_subset(tmp_path):
    starts = validation_windows(np.arange(100_000), 32, 40)
    assert len(starts) == 40 and starts[0] == 0 and starts[-1] == (100_000 - 33) // 32 * 32
    assert np.all(starts % 32 == 0) and np.all(np.diff(starts) > 0)
    assert np.ptp(np.diff(starts)) <= 32  # evenly spread over the whole set, not its start
    cfg = quick(eval_batches=2)
    a = ready(cfg, tmp_path / "a")
    b = ready(cfg.replace(seed=7), tmp_path / "b")
    assert sum(rows for _, _, rows in a.val) == 2 * cfg.batch_size
    assert all(np.array_equal(x, y) for (x, _, _), (y, _, _) in zip(a.val, b.val, strict=True))
    a.close()
    b.close()
