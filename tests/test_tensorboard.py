"""`loop train --report-to tensorboard`: the metrics.jsonl numbers, read back with TensorBoard's own
event reader, across a crash and a resume; nothing written (or imported) without it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import orjson
import pytest

from loop_tui import cli
from loop_tui.train import checkpoint

QUIET = ("--no-tui", "--set", "log_every=1", "--set", "eval_every=2", "--set", "sample_every=1000")


def records(run: Path) -> list[dict]:
    return [orjson.loads(line) for line in (run / "metrics.jsonl").read_bytes().splitlines()]


def events(run: Path) -> dict[str, dict[int, float]]:
    """Every scalar TensorBoard shows for the run folder: tag -> step -> value."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(run))
    acc.Reload()
    out: dict[str, dict[int, float]] = {}
    for tag in acc.Tags()["scalars"]:
        steps = [e.step for e in acc.Scalars(tag)]
        assert len(steps) == len(set(steps)), f"{tag}: a step shown twice: {steps}"
        out[tag] = {e.step: e.value for e in acc.Scalars(tag)}
    return out


def test_events_match_metrics_jsonl_across_a_crash_and_resume(tmp_path):
    pytest.importorskip("tensorboardX")
    run = tmp_path / "run"
    argv = ["train", "smoke", "--out", str(run), *QUIET, "--report-to", "tensorboard", "--set", "checkpoint_every=2"]
    assert cli.main([*argv, "--steps", "4"]) == 0
    # a crash after step 4's metrics but before its checkpoint: the resume redoes steps 3 and 4 (with
    # another learning rate, so step 4's loss differs) and TensorBoard must show only the new ones
    shutil.rmtree(checkpoint.latest(run))
    assert checkpoint.latest(run).name == "step_00000002"
    assert cli.main([*argv, "--steps", "2", "--resume", "--set", "learning_rate=3e-3"]) == 0
    logged = records(run)
    train = {r["step"]: r for r in logged if "loss" in r}
    val = {r["step"]: r for r in logged if "val_loss" in r}
    assert sorted(train) == [1, 2, 3, 4] and sorted(val) == [2, 4]
    shown = events(run)
    for key, tag in [
        ("loss", "train/loss"),
        ("lr", "train/learning_rate"),
        ("grad_norm", "train/grad_norm"),
        ("tokens_per_s", "speed/tokens_per_s"),
        ("mfu", "speed/mfu"),
    ]:
        assert shown[tag] == {s: pytest.approx(r[key], rel=1e-6) for s, r in train.items()}, tag
    assert shown["val/loss"] == {s: pytest.approx(r["val_loss"], rel=1e-6) for s, r in val.items()}
    assert shown["val/perplexity"] == {s: pytest.approx(r["val_ppl"], rel=1e-6) for s, r in val.items()}
    assert shown["train/learning_rate"][4] == pytest.approx(train[4]["lr"]) and train[4]["lr"] > 1e-3  # the new rate


def test_off_by_default_writes_no_events(tmp_path):
    run = tmp_path / "run"
    assert cli.main(["train", "smoke", "--out", str(run), *QUIET, "--steps", "1"]) == 0
    assert (run / "metrics.jsonl").is_file() and not list(run.glob("events.out.tfevents.*"))


def test_missing_package_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
    run = tmp_path / "run"
    code = cli.main(["train", "smoke", "--out", str(run), *QUIET, "--steps", "1", "--report-to", "tensorboard"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and 'pip install "loop_tui[tensorboard]"' in err
    assert not (run / "metrics.jsonl").exists()
