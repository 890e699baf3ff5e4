"""Training as a user runs it: exact resume, signals, kill -9 safety, learning on real text."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from loop_tui.config import load_config
from loop_tui.train import checkpoint
from loop_tui.train.optimizer import lr_at
from loop_tui.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_bytes().splitlines():
        r = orjson.loads(line)
        if "loss" in r:
            out[r["step"]] = r["loss"]
    return out


def quick(**kw):
    base = dict(log_every=1, eval_every=1000, sample_every=1000, checkpoint_every=1000)
    return load_config("smoke").replace(**{**base, **kw})


def train(cfg, run_dir, steps, resume=False):
    t = Trainer(cfg, run_dir, resume=resume)
    t.setup()
    t.run(steps=steps)
    return t


def test_lr_schedule():
    cfg = quick(max_steps=100, warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(1e-4)
    assert lr_at(cfg, 9) == pytest.approx(1e-3)
    assert lr_at(cfg, 100) == pytest.approx(1e-4)
    assert all(lr_at(cfg, s) >= lr_at(cfg, s + 1) for s in range(10, 100))


def test_resume_equals_uninterrupted_run(tmp_path):
    cfg = quick(max_steps=24)
    train(cfg, tmp_path / "straight", 24)
    train(cfg, tmp_path / "split", 11)
    train(cfg, tmp_path / "split", 13, resume=True)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 25))
    assert all(a[s] == b[s] for s in a), {s: (a[s], b[s]) for s in a if a[s] != b[s]}


def test_dropout_resume_equals_uninterrupted_run_and_evaluation_is_without_it(tmp_path):
    """With dropout the masks are keyed by the step, so a resumed run repeats the uninterrupted one
    bit for bit; dropout changes the training losses, and the validation loss of the trained weights
    is the one a model without dropout computes from them."""
    import numpy as np

    from loop_tui.model.gpt import GPT

    cfg = quick(max_steps=8, dropout=0.2)
    straight = train(cfg, tmp_path / "straight", 8)
    train(cfg, tmp_path / "split", 3)
    train(cfg, tmp_path / "split", 5, resume=True)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert all(a[s] == b[s] for s in a), {s: (a[s], b[s]) for s in a if a[s] != b[s]}
    train(cfg.replace(dropout=0.0), tmp_path / "plain", 1)
    assert losses(tmp_path / "plain")[1] != a[1]  # same weights and batch at step 1: the masks differ
    plain = GPT(cfg.replace(dropout=0.0), straight.backend)
    plain.load_params(straight.model.export_params())
    val = np.concatenate([plain.token_losses(x, y)[:rows] for x, y, rows in straight.val])
    assert straight.evaluate() == pytest.approx(float(np.mean(val, dtype=np.float64)), rel=1e-12)


def test_checkpoint_contents_and_retention(tmp_path):
    cfg = quick(max_steps=12, checkpoint_every=3, keep_checkpoints=2)
    train(cfg, tmp_path, 12)
    kept = checkpoint.list_checkpoints(tmp_path)
    assert [p.name for p in kept] == ["step_00000009", "step_00000012"]
    c = checkpoint.load(kept[-1])
    assert c.state["step"] == 12 and c.state["config"]["d_model"] == cfg.d_model
    assert set(c.optimizer) == {"m", "v"} and "wte" in c.params
    assert (kept[-1] / "tokenizer.json").exists() and (tmp_path / "tokenizer.json").exists()


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    from loop_tui.config import ConfigError

    train(quick(max_steps=2), tmp_path, 2)
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(quick(), tmp_path).setup()


def test_pause_and_save_requests(tmp_path):
    t = Trainer(quick(max_steps=5), tmp_path)
    t.setup()
    t.request("save")
    t.request("quit")
    t.run()
    assert t.step == 0
    assert checkpoint.latest(tmp_path).name == "step_00000000"


def _start(args, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "loop_tui", "train", "smoke", "--no-tui", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_steps(proc, n=1):
    seen = 0
    for line in proc.stdout:
        if line.startswith("step"):
            seen += 1
            if seen >= n:
                return
    raise AssertionError("training printed no step line: " + proc.stderr.read())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_finishes_step_saves_and_exits_zero(tmp_path, sig):
    """SIGHUP (the terminal or SSH session closed) once killed the run with 129, unsaved, leaving
    a .tmp-step_* folder."""
    run = tmp_path / "run"
    p = _start(["--steps", "100000", "--out", str(run), "--checkpoint-every", "100000"], tmp_path)
    _wait_for_steps(p)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    ck = checkpoint.latest(run)
    assert ck is not None
    state = checkpoint.load(ck).state
    assert state["step"] >= 10 and state["reason"] == "quit"
    assert not list((run / "checkpoints").glob(".*"))


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.029])
def test_kill_9_leaves_previous_checkpoint_loadable(tmp_path, delay):
    """A checkpoint every step, so a kill lands inside a save more often than not; three runs
    killed at different moments of the save cycle."""
    run = tmp_path / "run"
    p = _start(["--steps", "100000", "--out", str(run), "--checkpoint-every", "1"], tmp_path)
    _wait_for_steps(p, 1)
    time.sleep(delay)
    p.kill()
    p.wait()
    assert not [x for x in checkpoint.list_checkpoints(run) if x.name.startswith(".")]
    ck = checkpoint.latest(run)
    assert ck is not None
    checkpoint.load(ck)  # every file complete and parseable
    t = Trainer(quick(), run, resume=True)
    t.setup()
    assert t.step == int(ck.name.split("_")[1])
    t.run(steps=2)
    assert t.step == int(ck.name.split("_")[1]) + 2


def test_val_loss_falls_on_wiki(tmp_path, wiki_dir):
    cfg = quick(max_steps=150, eval_every=150, learning_rate=3e-3, log_every=50)
    t = Trainer(cfg, tmp_path, data=str(wiki_dir))
    t.setup()
    first = t.evaluate()
    t.run()
    assert first > math.log(cfg.vocab_size) - 0.3  # untrained: about uniform
    assert t.last_val_loss < first - 0.8, (first, t.last_val_loss)
