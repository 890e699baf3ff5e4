"""Spending the minutes well: validation that compares, the best checkpoint, early stopping and
gradient accumulation."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from loop_tui import errors
from loop_tui.data.batches import validation_windows
from loop_tui.model.gpt import GPT
from loop_tui.sources import load_model
from loop_tui.train import checkpoint
from loop_tui.train.trainer import Trainer

from .test_reliability import one_line_error, run_cli
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


# ---------------------------------------------------------------- best checkpoint and early stopping
def scripted_validation(monkeypatch, losses: list[float]) -> None:
    """Trainer.evaluate returns these validation losses in turn (the weights' own would need a
    long run to turn up)."""
    it = iter(losses)

    def evaluate(self):
        self.last_val_loss = next(it)
        return self.last_val_loss

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def test_best_checkpoint_survives_rotation_and_is_what_generate_export_eval_load(tmp_path, monkeypatch, capsys):
    scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 2.6, 2.7])
    run = tmp_path / "run"
    cfg = quick(max_steps=10, eval_every=2, checkpoint_every=2, keep_checkpoints=2)
    t = ready(cfg, run)
    t.run(steps=10)
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["step_00000008", "step_00000010"]
    best = checkpoint.load(run / "checkpoints" / "best")
    assert best.state["step"] == 4 and best.state["val_loss"] == 2.0 and best.tokenizer is not None
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == [".best-step_00000004"]
    assert checkpoint.load(checkpoint.latest(run)).state["best"] == {"step": 4, "val_loss": 2.0}

    assert "step 4 (the best checkpoint, val loss 2.0000)" in load_model(run).label  # the default
    assert load_model(run, best=True).label == load_model(run).label
    assert load_model(run, 4).label.endswith("step 4 (the best checkpoint, val loss 2.0000)")  # rotated, kept as best
    assert load_model(run, 10).label == f"{run} step 10"
    for key, value in best.params.items():
        assert np.array_equal(load_model(run).params[key], value)

    code, out, err = run_cli(capsys, "generate", str(run), "--tokens", "3", "--seed", "1", "--best")
    assert code == 0 and f"generating with {run} step 4 (the best checkpoint" in err
    code, out, err = run_cli(capsys, "export", str(run), str(tmp_path / "hf"), "--step", "10")
    assert code == 0 and f"exported {run} step 10 to" in out


def test_patience_stops_at_the_evaluation_that_runs_it_out(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 2.0, 1.0])
    run = tmp_path / "run"
    events = []
    t = Trainer(
        quick(max_steps=20, eval_every=2, checkpoint_every=100, patience=2),
        run,
        on_event=lambda kind, p: events.append((kind, p)),
    )
    t.setup()
    t.run(steps=20)
    # evaluations at 2, 4 (best), 6 and 8 (no lower loss: 2.0 is not below 2.0): stopped after step 8
    assert t.step == 8
    stops = [p["message"] for kind, p in events if kind == "info" and "early stop" in p["message"]]
    assert stops == [
        f"early stop at step 8: no lower validation loss in 2 evaluations; the best, val loss 2.0000 at step 4, "
        f"is {run / 'checkpoints' / 'best'}"
    ]
    final = checkpoint.load(checkpoint.latest(run)).state
    assert final["step"] == 8 and final["reason"] == "early stop" and final["evals_since_best"] == 2
    assert checkpoint.load(run / "checkpoints" / "best").state["step"] == 4


def test_patience_counts_across_resume(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 2.6])
    run = tmp_path / "run"
    cfg = quick(max_steps=20, eval_every=2, checkpoint_every=100, patience=2)
    ready(cfg, run).run(steps=6)  # evaluations at 2, 4 (best) and 6 (one without improvement)
    t = Trainer(cfg, run, resume=True)
    t.setup()
    assert t.best == (4, 2.0) and t.evals_since_best == 1
    t.run(steps=10)
    assert t.step == 8


def test_an_early_stopped_run_says_how_to_train_on_and_is_listed_as_stopped_early(tmp_path, monkeypatch, capsys):
    from .test_reliability import write_config

    scripted_validation(monkeypatch, [3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    config = write_config(tmp_path, max_steps=20, eval_every=2, checkpoint_every=100, patience=2)
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", config, "--no-tui", "--out", str(run))
    assert code == 0 and "no lower validation loss in 2 evaluations" in out + err
    assert f"Train on past the early stop with: loop train {config} --out {run} --resume --set patience=null" in out
    code, out, _ = run_cli(capsys, "runs", str(run), "--json")
    assert code == 0 and orjson.loads(out)[0]["status"] == "stopped early"
    # resumed with the same patience: one more evaluation without a lower loss, counted as three
    code, out, err = run_cli(capsys, "train", config, "--no-tui", "--out", str(run), "--resume")
    assert code == 0 and "no lower validation loss in 3 evaluations" in out + err


@pytest.mark.parametrize("best_at_resumed_step", [True, False])
def test_a_best_written_after_the_resumed_checkpoint_is_not_kept(tmp_path, monkeypatch, best_at_resumed_step):
    """kill -9 after a best of a later step than the newest checkpoint: resumed, that best is from
    steps trained again, so it goes; the resumed step's weights are the best again if they were."""
    losses = [3.0, 2.0, 1.0, 0.5] if best_at_resumed_step else [2.0, 3.0, 1.0, 0.5]
    scripted_validation(monkeypatch, losses + [9.0] * 10)
    run = tmp_path / "run"
    cfg = quick(max_steps=8, eval_every=1, checkpoint_every=2)
    ready(cfg, run).run(steps=4)  # checkpoints at 2 and 4, the best at 4
    for late in ("step_00000003", "step_00000004"):  # as if killed after step 3's best, before step 4's save
        shutil.rmtree(run / "checkpoints" / late, ignore_errors=True)
    assert checkpoint.step_in(run / "checkpoints" / "best") == 4
    events = []
    t = Trainer(cfg, run, resume=True, on_event=lambda kind, p: events.append((kind, p)))
    t.setup()
    warned = [p["message"] for kind, p in events if kind == "warning"]
    assert len(warned) == 1 and "best checkpoint of step 4 came after step 2" in warned[0], warned
    if best_at_resumed_step:
        assert t.best == (2, 2.0) and checkpoint.step_in(run / "checkpoints" / "best") == 2
        assert checkpoint.load(run / "checkpoints" / "best").state["step"] == 2
    else:  # the step-1 best it knew was replaced by step 4's: none until the next evaluation
        assert t.best is None and checkpoint.best(run) is None
    t.close()


def test_a_new_best_replaces_the_old_one_whole(tmp_path):
    params = {"w": np.ones(4, np.float32)}
    root = tmp_path / "checkpoints"
    checkpoint.save_best(tmp_path, 3, params, {}, {"step": 3, "config": {}})
    (root / ".best-step_00000005").mkdir()  # a kill -9 between writing a best and switching the link
    checkpoint.save_best(tmp_path, 7, {"w": np.zeros(4, np.float32)}, {}, {"step": 7, "config": {}})
    assert os.readlink(root / "best") == ".best-step_00000007"
    assert sorted(p.name for p in root.iterdir()) == [".best-step_00000007", "best"]
    assert checkpoint.load(root / "best").state["step"] == 7


def test_a_damaged_best_gives_way_to_the_newest_with_a_warning(tmp_path, capsys):
    run = tmp_path / "run"
    ready(quick(max_steps=2, eval_every=1), run).run(steps=2)
    model = run / "checkpoints" / "best" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-100])
    code, _, err = run_cli(capsys, "generate", str(run), "--tokens", "2")
    assert code == 0 and "skipping the best checkpoint" in err and f"generating with {run} step 2 (the newest" in err
    code, _, err = run_cli(capsys, "generate", str(run), "--tokens", "2", "--best")
    assert code == errors.EXIT_CHECKPOINT and "damaged" in one_line_error(err)


def test_step_and_best_errors_are_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    ready(quick(max_steps=2, eval_every=1), run).run(steps=2)
    code, _, err = run_cli(capsys, "generate", str(run), "--step", "99")
    line = one_line_error(err)
    assert code == errors.EXIT_USAGE and "--step 99" in line and "it has: 2; the best: step" in line
    (run / "checkpoints" / "best").unlink()
    code, _, err = run_cli(capsys, "eval", str(run), "--data", str(tmp_path), "--best")
    assert code == errors.EXIT_CHECKPOINT and "--best" in one_line_error(err)
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "export", str(run), str(tmp_path / "out"), "--best", "--step", "2")
    assert e.value.code == errors.EXIT_USAGE and one_line_error(capsys.readouterr().err).startswith(
        "loop: error: loop export: argument --step: not allowed with argument --best"
    )
    # one checkpoint folder has no steps to choose from: the option is refused, not ignored
    one = run / "checkpoints" / "step_00000002"
    for option in (["--step", "1"], ["--best"]):
        code, _, err = run_cli(capsys, "generate", str(one), *option)
        assert code == errors.EXIT_USAGE and "is one checkpoint, not a run folder" in one_line_error(err)


# ---------------------------------------------------------------- gradient accumulation
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_gradient_accumulation_is_the_update_of_the_big_batch(tmp_path, dropout):
    # an epsilon near the gradients' size: AdamW's update then depends on their scale, not only direction
    big = ready(quick(batch_size=8, dropout=dropout, adam_eps=1e-3), tmp_path / "big")
    accumulated = ready(quick(batch_size=2, grad_accum_steps=4, dropout=dropout, adam_eps=1e-3), tmp_path / "acc")
    assert accumulated.flops_per_step == big.flops_per_step  # tokens/s and MFU count every micro-batch
    for _ in range(3):
        a, b = big.train_step(), accumulated.train_step()
        assert b.loss == pytest.approx(a.loss, abs=1e-5) and b.grad_norm == pytest.approx(a.grad_norm, rel=1e-5)
    for name, value in big.model.export_params().items():
        np.testing.assert_allclose(accumulated.model.export_params()[name], value, rtol=0, atol=1e-5, err_msg=name)
    # validation windows of the whole batch, not the micro-batch: the same set, so the best and patience agree
    assert sum(rows for _, _, rows in accumulated.val) == sum(rows for _, _, rows in big.val) < len(big.tokens.val)
    assert accumulated.evaluate() == pytest.approx(big.evaluate(), abs=1e-5)
    big.close()
    accumulated.close()


def test_a_run_may_resume_with_another_split_of_the_same_global_batch(tmp_path):
    """batch 8 may continue as 2 micro-batches of 4 (the same batches drawn, the same update); a
    split that changes the global batch is refused in one line."""
    from loop_tui.config import ConfigError

    from .test_train import losses, train

    cfg = quick(max_steps=6, batch_size=8)
    train(cfg, tmp_path / "straight", 6)
    train(cfg, tmp_path / "split", 3)
    train(cfg.replace(batch_size=4, grad_accum_steps=2), tmp_path / "split", 3, resume=True)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert sorted(b) == list(range(1, 7)) and all(b[s] == pytest.approx(a[s], abs=1e-5) for s in a)
    with pytest.raises(ConfigError, match="batch_size × grad_accum_steps × ranks is 8"):
        Trainer(cfg.replace(grad_accum_steps=2), tmp_path / "split", resume=True).setup()


def test_memory_refusal_suggests_gradient_accumulation(tmp_path, monkeypatch):
    import psutil

    from loop_tui.analyze import training_memory
    from loop_tui.config import ConfigError
    from loop_tui.train import prepare

    cfg = quick(batch_size=8)
    half = training_memory(cfg.replace(batch_size=4, grad_accum_steps=2))["total"]
    full = training_memory(cfg)["total"]
    assert half < full
    room = (half + full) / 2 / prepare.MEMORY_HEADROOM

    class Memory:
        available = int(room)

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory())
    with pytest.raises(ConfigError, match=r"or set grad_accum_steps=2 with batch_size=4 \(the same update"):
        Trainer(cfg, tmp_path / "run").setup()


def test_grad_accum_steps_is_validated():
    from loop_tui.config import ConfigError

    with pytest.raises(ConfigError, match="grad_accum_steps"):
        quick(grad_accum_steps=0)
    with pytest.raises(ConfigError, match="patience"):
        quick(patience=0)
    assert orjson.loads(orjson.dumps(quick(patience=3).to_dict()))["patience"] == 3
