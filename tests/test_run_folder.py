"""A run folder over its life: resumed runs that rotate their checkpoints, readers racing a trainer
that rotates them, damaged or missing tokenizers, stray folders beside the checkpoints, and what a
fresh run finds left over. Each test reproduces a failure issue 22 reported."""

from __future__ import annotations

import pathlib
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from loop_tui import errors
from loop_tui.train import checkpoint

from .test_reliability import one_line_error, resume_cli, run_cli, train_steps, without_best, write_config


def step_names(run: Path) -> list[str]:
    return [p.name for p in checkpoint.list_checkpoints(run)]


# ---------------------------------------------------------------- resume, then rotate
def test_a_resumed_run_saves_past_keep_checkpoints(tmp_path, capsys):
    """The run once read its tokenizer from the checkpoint it resumed from: after keep_checkpoints
    more saves rotation deleted it and the next save failed (exit 5)."""
    run = tmp_path / "run"
    cfg = write_config(tmp_path, checkpoint_every=1, keep_checkpoints=2)
    train_steps(tmp_path, run, 2, checkpoint_every=1, keep_checkpoints=2)
    tokenizer = (run / "tokenizer.json").read_bytes()
    capsys.readouterr()
    code, out, err = resume_cli(capsys, run, cfg, 5)
    assert code == 0, err
    assert step_names(run) == ["step_00000006", "step_00000007"]
    for path in checkpoint.list_checkpoints(run):
        assert (path / "tokenizer.json").read_bytes() == tokenizer
    assert (run / "tokenizer.json").read_bytes() == tokenizer
    code, _, err = resume_cli(capsys, run, cfg, 3)  # and once more, from a checkpoint the last resume wrote
    assert code == 0 and step_names(run) == ["step_00000009", "step_00000010"], err


def test_rotation_keeps_the_checkpoint_it_just_wrote(tmp_path, capsys):
    """Resumed past a damaged newer checkpoint, a save must not count that one among the kept and
    delete the new, intact one."""
    run = tmp_path / "run"
    train_steps(tmp_path, run, 4, checkpoint_every=2, keep_checkpoints=1)
    newest = checkpoint.latest(run)
    damaged = newest.with_name("step_00000009")
    shutil.copytree(newest, damaged)
    (damaged / "model.safetensors").write_bytes(b"garbage")
    capsys.readouterr()
    code, out, err = resume_cli(capsys, run, write_config(tmp_path, checkpoint_every=2, keep_checkpoints=1), 2)
    assert code == 0 and "skipping a damaged checkpoint" in out, err
    assert step_names(run) == ["step_00000006", "step_00000009"]
    assert checkpoint.load(checkpoint.list_checkpoints(run)[0]).state["step"] == 6


# ---------------------------------------------------------------- readers racing a trainer
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("trained")
    train_steps(d, d / "run", 2, checkpoint_every=2)
    without_best(d / "run")  # the readers then load the newest checkpoint, the one rotation races
    return d / "run"


def rotate_on_read(monkeypatch, run: Path, after: str) -> None:
    """The first time a checkpoint's `after` file is read, a trainer (keep_checkpoints 1) saves the
    next step and deletes the checkpoint being read."""
    real = pathlib.Path.read_bytes
    done = []

    def read_bytes(self: pathlib.Path) -> bytes:
        data = real(self)
        if not done and self.name == after and self.parent.parent == run / "checkpoints":
            done.append(self)
            step = int(self.parent.name.removeprefix("step_"))
            shutil.copytree(self.parent, self.parent.with_name(f"step_{step + 2:08d}"))
            shutil.rmtree(self.parent)
        return data

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)


@pytest.mark.parametrize("after", ["state.json", "model.safetensors"])
@pytest.mark.parametrize("command", ["generate", "eval", "export"])
def test_readers_load_a_whole_checkpoint_while_a_trainer_rotates(
    trained, tmp_path, capsys, monkeypatch, command, after
):
    """generate/eval/export once read the weights of one checkpoint and its tokenizer after rotation
    had deleted it (exit 70; export said "cannot write" about the file it read), or called a
    checkpoint rotated away mid-read damaged."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    text = tmp_path / "text"
    text.mkdir()
    (text / "a.txt").write_text("The quick brown fox jumps over the lazy dog. " * 40)
    rotate_on_read(monkeypatch, run, after)
    argv = {
        "generate": ["generate", str(run), "--tokens", "3", "--seed", "1"],
        "eval": ["eval", str(run), "--data", str(text)],
        "export": ["export", str(run), str(tmp_path / "hf")],
    }[command]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and "Traceback" not in err, err
    assert "damaged" not in err  # a checkpoint rotated away is not damaged
    if command == "export":
        assert (
            out.startswith("exported")
            and (tmp_path / "hf" / "tokenizer.json").read_bytes() == (run / "tokenizer.json").read_bytes()
        )


# ---------------------------------------------------------------- the tokenizer is checked like the weights
@pytest.mark.parametrize("damage", ["garble", "delete"])
def test_a_damaged_checkpoint_tokenizer_is_skipped_never_retrained(tmp_path, capsys, damage):
    """Its SHA-256 was recorded but never checked: garbled → exit 70 on resume and generate;
    deleted → resume trained a new tokenizer and overwrote the run's own."""
    run = tmp_path / "run"
    cfg = write_config(tmp_path, checkpoint_every=2)
    train_steps(tmp_path, run, 4, checkpoint_every=2)
    first, last = checkpoint.list_checkpoints(run)
    tokenizer = (run / "tokenizer.json").read_bytes()
    if damage == "garble":
        (last / "tokenizer.json").write_bytes(tokenizer[:-200] + b"#" * 200)
    else:
        (last / "tokenizer.json").unlink()
    without_best(run)
    capsys.readouterr()
    code, _, err = run_cli(capsys, "generate", str(run), "--tokens", "3")
    assert code == 0 and "skipping a damaged checkpoint" in err and "tokenizer.json" in err, err
    code, out, err = resume_cli(capsys, run, cfg, 1)
    assert code == 0 and f"using {first.name}" in out and "tokenizer.json" in out, err
    assert (run / "tokenizer.json").read_bytes() == tokenizer


def test_a_run_whose_only_checkpoint_lost_its_tokenizer_is_not_retrained(tmp_path, capsys):
    run = tmp_path / "run"
    train_steps(tmp_path, run, 2, checkpoint_every=2)
    tokenizer = (run / "tokenizer.json").read_bytes()
    (checkpoint.latest(run) / "tokenizer.json").unlink()
    capsys.readouterr()
    code, _, err = resume_cli(capsys, run, write_config(tmp_path, checkpoint_every=2), 1)
    assert code == errors.EXIT_CHECKPOINT and "tokenizer.json" in one_line_error(err)
    assert (run / "tokenizer.json").read_bytes() == tokenizer and step_names(run) == ["step_00000002"]


# ---------------------------------------------------------------- what else lies in checkpoints/
def test_a_backup_folder_beside_the_checkpoints_is_ignored(tmp_path, capsys):
    """checkpoints/step_00000002.bak/ made every command exit 70 (int('00000002.bak'))."""
    run = tmp_path / "run"
    train_steps(tmp_path, run, 2, checkpoint_every=2)
    shutil.copytree(checkpoint.latest(run), run / "checkpoints" / "step_00000002.bak")
    (run / "checkpoints" / "step_notes").mkdir()
    capsys.readouterr()
    assert run_cli(capsys, "generate", str(run), "--tokens", "2")[0] == 0
    assert run_cli(capsys, "runs", str(tmp_path))[0] == 0
    code, _, err = resume_cli(capsys, run, write_config(tmp_path, checkpoint_every=2), 2)
    assert code == 0, err
    assert (run / "checkpoints" / "step_00000002.bak").is_dir()  # the user's folder is left alone


def test_a_checkpoint_without_state_json_is_skipped_with_a_warning(tmp_path, capsys):
    """Its state.json deleted, the newest checkpoint was passed over in silence."""
    run = tmp_path / "run"
    train_steps(tmp_path, run, 4, checkpoint_every=2)
    first, last = checkpoint.list_checkpoints(run)
    (last / "state.json").unlink()
    capsys.readouterr()
    code, out, err = resume_cli(capsys, run, write_config(tmp_path, checkpoint_every=2), 1)
    assert code == 0 and f"using {first.name}" in out and "state.json" in out, err
    warnings = [x for x in out.splitlines() if "skipping a damaged checkpoint" in x]
    assert len(warnings) == 1


# ---------------------------------------------------------------- a new run, a resumed run's identity
def test_a_new_run_replaces_the_metrics_of_one_killed_before_its_first_checkpoint(tmp_path, capsys):
    """Killed (kill -9) before its first checkpoint, a run leaves metrics.jsonl and run.json but no
    checkpoint; a new run in the folder appended to them (`loop runs` showed "553/5 finished")."""
    import orjson

    run = tmp_path / "run"
    train_steps(tmp_path, run, 6)
    shutil.rmtree(run / "checkpoints")  # what a kill -9 before the first checkpoint leaves
    capsys.readouterr()
    code, out, err = run_cli(capsys, "train", write_config(tmp_path), "--out", str(run), "--no-tui", "--steps", "3")
    assert code == 0 and "metrics.jsonl" in out, err
    records = [orjson.loads(x) for x in (run / "metrics.jsonl").read_bytes().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in records if "val_loss" in r] == [3]
    code, out, _ = run_cli(capsys, "runs", str(tmp_path), "--json")
    listed = orjson.loads(out)[0]
    assert (listed["step"], listed["planned"], listed["status"]) == (3, 3, "finished")


def test_resume_keeps_the_runs_seed_whatever_seed_says(tmp_path, capsys):
    """--resume --seed 5 warned that the seed has no effect, then recorded seed 5 in config.json
    and state.json."""
    import orjson

    run = tmp_path / "run"
    cfg = write_config(tmp_path, seed=11)
    train_steps(tmp_path, run, 2, seed=11)
    capsys.readouterr()
    code, out, err = resume_cli(capsys, run, cfg, 1, "--seed", "5")
    assert code == 0 and "seed 5 has no effect" in out, err
    assert orjson.loads((run / "config.json").read_bytes())["seed"] == 11
    assert checkpoint.load(checkpoint.latest(run)).state["config"]["seed"] == 11


def test_resume_of_a_missing_folder_creates_nothing(tmp_path, capsys):
    run = tmp_path / "nowhere" / "run"
    code, _, err = resume_cli(capsys, run, write_config(tmp_path), 1)
    assert code == errors.EXIT_CHECKPOINT and "no such run folder" in one_line_error(err)
    assert not (tmp_path / "nowhere").exists()


def test_a_run_folder_deleted_mid_run_stops_in_one_line(tmp_path):
    """rm -rf of the run folder under a running trainer: it was recreated in silence, the metrics
    lost, exit 0."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    cfg = write_config(tmp_path, checkpoint_every=100000)
    p = subprocess.Popen(
        [sys.executable, "-m", "loop_tui", "train", cfg, "--out", str(run), "--no-tui", "--steps", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for line in p.stdout:  # type: ignore[union-attr]
            if line.startswith("step"):
                break
        shutil.rmtree(run)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == errors.EXIT_OS, (out, err)
    assert "deleted while training" in one_line_error(err)
    assert not run.exists()


# ---------------------------------------------------------------- refused before anything large is built
@pytest.mark.parametrize("fields", [{"num_layers": 100_000_000}, {"vocab_size": 2_000_000_000}])
def test_a_huge_config_is_refused_from_arithmetic_alone(tmp_path, fields):
    """num_layers 1e8: the memory check built 10^9 parameter specs and the OOM killer ended it
    (exit 137); vocab_size 2e9: data preparation ran first and the tokenizer library aborted
    allocating 141 GB. Run under a 4 GiB address-space limit, so a regression fails here (a
    MemoryError, exit 70) instead of taking the machine down."""
    import os
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    cfg = write_config(tmp_path, **fields)
    p = subprocess.run(
        [sys.executable, "-m", "loop_tui", "train", cfg, "--out", str(tmp_path / "run"), "--no-tui", "--steps", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
        env={**os.environ, "LOOP_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert p.returncode == errors.EXIT_USAGE, p.stderr[-2000:]
    assert "needs about" in one_line_error(p.stderr) and "--force" in p.stderr
    assert "documents" not in p.stdout  # refused before the data was read
    assert not list((tmp_path / "cache").glob("tok*"))


# ---------------------------------------------------------------- a property: any sequence of operations
def _newest_intact_step(run: Path, with_optimizer: bool) -> int | None:
    try:
        return checkpoint.load_newest_intact(run, lambda m: None, with_optimizer).state["step"]
    except checkpoint.CheckpointError:
        return None


def _best_intact(run: Path) -> bool:
    best = checkpoint.best(run)
    try:
        return best is not None and checkpoint.load(best, with_optimizer=False) is not None
    except checkpoint.CheckpointError:
        return False


def _start(argv: list[str]):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "loop_tui", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


OPERATIONS = st.one_of(
    st.tuples(st.just("train"), st.integers(1, 4)),
    st.tuples(st.just("kill -9"), st.floats(0.0, 1.0)),
    st.tuples(st.just("ctrl-c"), st.floats(0.0, 1.0)),
    st.tuples(st.just("keep_checkpoints"), st.integers(1, 3)),
    st.tuples(st.just("corrupt"), st.sampled_from(checkpoint.DATA_FILES + ("tokenizer.json", "state.json"))),
    st.tuples(st.just("corrupt best"), st.sampled_from(checkpoint.DATA_FILES + ("tokenizer.json", "state.json"))),
    st.tuples(st.sampled_from(["export", "eval", "generate", "runs"]), st.just(0)),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(OPERATIONS, min_size=2, max_size=6))
@example(operations=[("keep_checkpoints", 1), ("train", 4), ("train", 4), ("train", 4)])  # the resume-rotation bug
@example(operations=[("train", 2), ("corrupt", "tokenizer.json"), ("generate", 0), ("train", 1)])
def test_any_sequence_of_operations_keeps_the_run_folder_promises(tmp_path_factory, capsys, operations):
    """Train, kill -9 at a random moment, Ctrl-C, resume, change keep_checkpoints, corrupt a file,
    export, eval, generate, runs, in any order on one run folder: no traceback, README's exit codes,
    the best checkpoint (else the newest intact one) always loads, and after each completed run metrics.jsonl has each
    step once, up to the newest checkpoint's."""
    import signal
    import time

    import orjson

    base = tmp_path_factory.mktemp("ops")
    run = base / "run"
    text = base / "text"
    text.mkdir()
    (text / "a.txt").write_text("A held-out line of text to score, with some words in it. " * 30)
    keep = 3
    for n, (op, arg) in enumerate(operations):
        cfg = write_config(base, checkpoint_every=2, keep_checkpoints=keep)
        has_checkpoints = bool(checkpoint.list_checkpoints(run))
        train_argv = ["train", cfg, "--out", str(run), "--no-tui"] + (["--resume"] if has_checkpoints else [])
        can_resume = not has_checkpoints or _newest_intact_step(run, True) is not None
        readable = _best_intact(run) or _newest_intact_step(run, False) is not None  # what readers load
        if op == "keep_checkpoints":
            keep = arg
            continue
        if op in ("corrupt", "corrupt best"):
            target = checkpoint.latest(run) if op == "corrupt" else checkpoint.best(run)
            if target is not None and (target / arg).exists():
                (target / arg).write_bytes((target / arg).read_bytes()[:-7] + b"garbage")
            continue
        if op in ("kill -9", "ctrl-c"):
            p = _start([*train_argv, "--steps", "1000"])
            try:
                p.stdout.readline()  # type: ignore[union-attr]  # its first line: past Python's start-up
                time.sleep(arg)
                p.send_signal(signal.SIGKILL if op == "kill -9" else signal.SIGINT)
                out, err = p.communicate(timeout=120)
            finally:
                p.kill()
            assert "Traceback" not in err, err
            if op == "ctrl-c":
                allowed = {0, errors.EXIT_ABORTED} if can_resume else {errors.EXIT_CHECKPOINT}
                assert p.returncode in allowed, (operations[: n + 1], p.returncode, err)
        else:
            capsys.readouterr()
            argv = {
                "train": [*train_argv, "--steps", str(arg)],
                "export": ["export", str(run), str(base / f"hf{n}")],
                "eval": ["eval", str(run), "--data", str(text)],
                "generate": ["generate", str(run), "--tokens", "2"],
                "runs": ["runs", str(base)],
            }[op]
            code, out, err = run_cli(capsys, *argv)
            assert "Traceback" not in err, err
            if op == "train":
                want = 0 if can_resume else errors.EXIT_CHECKPOINT
            elif op == "runs":
                want = 0
            elif not run.exists():
                want = errors.EXIT_USAGE
            else:
                want = 0 if readable else errors.EXIT_CHECKPOINT
            assert code == want, (operations[: n + 1], err)
            if op == "train" and code == 0:
                newest = _newest_intact_step(run, True)
                records = [orjson.loads(x) for x in (run / "metrics.jsonl").read_bytes().splitlines()]
                assert [r["step"] for r in records if "loss" in r] == list(range(1, newest + 1))
        for path in checkpoint.list_checkpoints(run):
            assert not path.name.startswith(".")
        if checkpoint.list_checkpoints(run) and _newest_intact_step(run, False) is not None:
            checkpoint.load_newest_intact(run, lambda m: None, with_optimizer=False)
