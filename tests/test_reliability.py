"""Every failure a user can cause ends in one line and a documented exit code, with the run folder
intact: a second trainer, a diverging run, damaged checkpoints, a full disk, an unwritable
folder, other data on resume, a model too large for the machine, and nonsense options."""

from __future__ import annotations

import errno
import shutil
import signal
from pathlib import Path

import numpy as np
import orjson
import pytest

from loop_tui import cli, errors
from loop_tui.train import checkpoint
from loop_tui.train.trainer import Trainer

from .test_train import quick

SMOKE_DATA = Path(__file__).resolve().parent / "snapshot_apps"  # any small folder of text would do


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def resume_cli(capsys, run: Path, config: str, steps: int, *extra: str) -> tuple[int, str, str]:
    """`loop train CONFIG --out RUN --no-tui --resume --steps N`, through run_cli."""
    return run_cli(capsys, "train", config, "--out", str(run), "--no-tui", "--resume", "--steps", str(steps), *extra)


def without_best(run: Path) -> None:
    """Remove checkpoints/best (as a run from before it existed): generate then loads the newest
    intact checkpoint, which is what these tests are about."""
    best = run / "checkpoints" / checkpoint.BEST
    shutil.rmtree(best.resolve())
    best.unlink()


def one_line_error(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("loop: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def write_config(tmp_path: Path, **fields) -> str:
    raw = {
        **orjson.loads((Path(cli.__file__).parent / "configs" / "smoke.json").read_bytes()),
        "log_every": 1,
        "eval_every": 1000,
        "sample_every": 1000,
        **fields,
    }
    path = tmp_path / f"cfg-{abs(hash(orjson.dumps(raw)))}.json"
    path.write_bytes(orjson.dumps(raw))
    return str(path)


def train_steps(tmp_path, run: Path, steps: int, *extra: str, **fields) -> None:
    code = cli.main(
        ["train", write_config(tmp_path, **fields), "--out", str(run), "--no-tui", "--steps", str(steps), *extra]
    )
    assert code == 0


# ---------------------------------------------------------------- run folder lock
def test_second_trainer_on_a_folder_exits_3_naming_the_pid(tmp_path, capsys):
    run = tmp_path / "run"
    first = Trainer(quick(), run)
    first.setup()  # holds the lock
    code, _, err = run_cli(capsys, "train", "smoke", "--out", str(run), "--no-tui", "--steps", "1")
    assert code == errors.EXIT_LOCKED
    assert "in use by another trainer (PID" in one_line_error(err)
    first.close()
    assert not checkpoint.list_checkpoints(run)  # the refused trainer wrote nothing


def test_lock_is_released_when_a_run_ends(tmp_path, capsys):
    run = tmp_path / "run"
    train_steps(tmp_path, run, 2)
    train_steps(tmp_path, run, 2, "--resume")
    capsys.readouterr()


# ---------------------------------------------------------------- divergence
def test_diverging_run_stops_in_one_line_and_never_saves_nan(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = write_config(tmp_path, learning_rate=1e4, warmup_steps=1, checkpoint_every=2, grad_clip=0.0)
    code, _, err = run_cli(capsys, "train", cfg, "--out", str(run), "--no-tui", "--steps", "200")
    assert code == errors.EXIT_DIVERGED
    assert "training diverged" in one_line_error(err)
    for ckpt in checkpoint.list_checkpoints(run):  # every checkpoint left verifies (finite weights)
        checkpoint.load(ckpt)


def test_checkpoint_save_refuses_non_finite_weights(tmp_path):
    params = {"w": np.array([1.0, np.nan], np.float32)}
    with pytest.raises(checkpoint.CheckpointError, match="not finite"):
        checkpoint.save(tmp_path, 1, params, {"m": np.zeros(2, np.float32)}, {"step": 1, "config": {}}, 3)
    assert not checkpoint.list_checkpoints(tmp_path)


# ---------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("damage", ["truncate model", "truncate optimizer", "garble state"])
def test_damaged_latest_checkpoint_falls_back_with_a_warning(tmp_path, capsys, damage):
    run = tmp_path / "run"
    train_steps(tmp_path, run, 4, checkpoint_every=2)
    first, last = checkpoint.list_checkpoints(run)
    if damage == "garble state":
        (last / "state.json").write_bytes(b'{"step": 4, "conf')
    else:
        f = last / ("model.safetensors" if "model" in damage else "optimizer.safetensors")
        f.write_bytes(f.read_bytes()[:-100])
    without_best(run)
    capsys.readouterr()
    code, out, err = run_cli(capsys, "generate", str(run), "--tokens", "3")
    assert code == 0 and "Traceback" not in err
    if damage != "truncate optimizer":  # generate reads no optimizer state
        assert "damaged" in err and last.name in err
    code, out, err = resume_cli(capsys, run, write_config(tmp_path, checkpoint_every=2), 1)
    assert code == 0 and f"using {first.name}" in out + err
    assert "resumed from" in out and first.name in out


def test_no_intact_checkpoint_exits_4(tmp_path, capsys):
    run = tmp_path / "run"
    train_steps(tmp_path, run, 2, checkpoint_every=2)
    for ckpt in checkpoint.list_checkpoints(run):
        (ckpt / "model.safetensors").write_bytes(b"garbage")
    without_best(run)
    capsys.readouterr()
    code, _, err = run_cli(capsys, "generate", str(run))
    assert code == errors.EXIT_CHECKPOINT and "no intact checkpoint" in one_line_error(err)


# ---------------------------------------------------------------- full disk, unwritable folder
def test_full_disk_during_checkpoint(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    train_steps(tmp_path, run, 2, checkpoint_every=2)
    metrics_before = (run / "metrics.jsonl").read_bytes()
    good = checkpoint.list_checkpoints(run)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "_write_synced", full)
    capsys.readouterr()
    code, _, err = resume_cli(capsys, run, write_config(tmp_path, checkpoint_every=2), 2)
    line = one_line_error(err)
    assert code == errors.EXIT_CHECKPOINT and "No space left on device" in line and str(run) in line
    assert not list((run / "checkpoints").glob(".tmp-*")) and not list(run.glob("*.tmp*"))
    assert checkpoint.list_checkpoints(run) == good
    checkpoint.load(good[-1])
    assert (run / "metrics.jsonl").read_bytes().startswith(metrics_before)
    monkeypatch.undo()  # space is back
    code, _, _ = resume_cli(capsys, run, write_config(tmp_path, checkpoint_every=2), 2)
    assert code == 0 and checkpoint.latest(run).name == "step_00000004"


def test_unwritable_run_folder_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "smoke", "--out", "/sys/loop-test-run", "--no-tui", "--steps", "1")
    assert code == errors.EXIT_OS and "/sys/loop-test-run" in one_line_error(err)


# ---------------------------------------------------------------- resume checks
def test_resume_with_other_data_is_refused_unless_new_data(tmp_path, capsys):
    run = tmp_path / "run"
    train_steps(tmp_path, run, 2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("Completely different text about sailing boats and harbours. " * 400)
    capsys.readouterr()
    args = [
        "train",
        write_config(tmp_path),
        "--out",
        str(run),
        "--no-tui",
        "--resume",
        "--steps",
        "1",
        "--data",
        str(other),
    ]
    code, _, err = run_cli(capsys, *args)
    assert code == errors.EXIT_USAGE and "--new-data" in one_line_error(err)
    code, out, _ = run_cli(capsys, *args, "--new-data")
    assert code == 0 and "run's own tokenizer" in out


def test_changed_settings_on_resume_are_shown_and_kept(tmp_path, capsys):
    run = tmp_path / "run"
    train_steps(tmp_path, run, 2, learning_rate=0.001)
    capsys.readouterr()
    code, out, _ = resume_cli(capsys, run, write_config(tmp_path, learning_rate=0.0005), 1)
    assert code == 0 and "learning_rate 0.001 → 0.0005" in out
    history = [orjson.loads(x) for x in (run / "config_history.jsonl").read_bytes().splitlines()]
    assert history[-1]["changes"]["learning_rate"] == {"from": 0.001, "to": 0.0005}


def test_resume_of_a_finished_run_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = write_config(tmp_path, max_steps=3)
    assert cli.main(["train", cfg, "--out", str(run), "--no-tui"]) == 0
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "train", cfg, "--out", str(run), "--no-tui", "--resume")
    assert code == 0 and "is finished" in out and "--steps N" in out


# ---------------------------------------------------------------- memory, options
def test_model_too_large_for_memory_is_refused_before_allocating(tmp_path, capsys):
    cfg = write_config(tmp_path, d_model=65536, num_heads=1, d_ff=65536, num_layers=8)
    code, _, err = run_cli(capsys, "train", cfg, "--out", str(tmp_path / "run"), "--no-tui", "--steps", "1")
    line = one_line_error(err)
    assert code == errors.EXIT_USAGE and "needs about" in line and "available" in line and "--force" in line


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["train", "smoke", "--checkpoint-every", "0", "--no-tui"], "--checkpoint-every"),
        (["generate", "nowhere", "--tokens", "-5"], "--tokens"),
        (["generate", "nowhere", "--temperature", "-1"], "--temperature"),
        (["generate", "nowhere", "--top-k", "-2"], "--top-k"),
        (["generate", "nowhere"], "no such run folder"),
        (["train", "smoke", "--new-data", "--no-tui"], "--resume"),
    ],
)
def test_nonsense_options_are_one_line_usage_errors(capsys, argv, needle):
    code, _, err = run_cli(capsys, *argv)
    assert code == errors.EXIT_USAGE and needle in one_line_error(err)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["generate", "x", "--step", "abc"], "argument --step: invalid int value"),
        (["generate", "x", "--best", "--step", "1"], "argument --step: not allowed with argument --best"),
        (["plan", "--data", "x", "--minutes", "soon"], "argument --minutes: invalid float value"),
        (["plan", "--minutes", "5"], "required: --data"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_argument_errors_are_one_line_usage_errors_too(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == errors.EXIT_USAGE and needle in one_line_error(err) and "usage:" not in err


def test_more_threads_than_cores_warns(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "train", "smoke", "--out", str(tmp_path / "run"), "--no-tui", "--steps", "1", "--threads", "64"
    )
    assert code == 0 and "more than the" in err and "usable cores" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and "loop_tui" in capsys.readouterr().out


def test_internal_errors_are_one_line_unless_debug(capsys, monkeypatch):
    monkeypatch.setattr(cli, "cmd_info", lambda args: 1 / 0)
    parser = cli.build_parser

    def patched():
        p = parser()
        p._subparsers._group_actions[0].choices["info"].set_defaults(func=lambda args: 1 / 0)
        return p

    monkeypatch.setattr(cli, "build_parser", patched)
    code, _, err = run_cli(capsys, "info")
    assert code == errors.EXIT_INTERNAL and "--debug" in one_line_error(err)
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "info"])


# ---------------------------------------------------------------- data in bounded memory
def make_folder(path: Path, files: int, words: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vocab = np.array(
        ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=rng.integers(2, 9))) for _ in range(3000)]
    )
    path.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        text = " ".join(vocab[rng.zipf(1.3, size=words) % len(vocab)])
        (path / f"doc{i:04d}.txt").write_text("\n".join(text[j : j + 80] for j in range(0, len(text), 80)) + "\n")
    return path


def test_long_files_stream_in_pieces_cut_at_line_breaks(tmp_path):
    from loop_tui.data.corpus import load_corpus

    c = load_corpus(make_folder(tmp_path / "d", 1, 20000))
    doc = c.docs[0]
    pieces = list(c.pieces(doc, chunk=4096))
    assert len(pieces) > 10 and "".join(pieces) == doc.path.read_text()
    assert all(p.endswith("\n") for p in pieces)
    assert all(len(p.encode()) < 3 * 4096 for p in pieces)


def test_encoding_a_long_file_in_pieces_matches_whole_file_encoding(tmp_path, monkeypatch):
    from loop_tui.data import corpus as corpus_mod
    from loop_tui.data import tokens as tokens_mod

    folder = make_folder(tmp_path / "d", 2, 30000)
    c = corpus_mod.load_corpus(folder)
    tok, _ = tokens_mod.get_tokenizer(c, 400)
    monkeypatch.setattr(tokens_mod, "ENCODE_BATCH_BYTES", 10_000)  # many batches
    monkeypatch.setattr(tokens_mod, "ENCODE_PIECE_BYTES", 4096)  # many pieces per document
    assert len(list(c.pieces(c.docs[0], 4096))) > 10
    tokens_mod.encode_to_file(tok, c, [(0, 0.0, 1.0), (1, 0.0, 1.0)], tmp_path / "ids.bin", np.uint16)
    got = np.fromfile(tmp_path / "ids.bin", np.uint16)
    eot = tok.token_to_id(tokens_mod.EOT)
    want = np.concatenate([np.r_[tok.encode(d.path.read_text()).ids, eot] for d in c.docs]).astype(np.uint16)
    assert np.array_equal(got, want)  # the pieces end at line breaks, where BPE splits anyway


@pytest.mark.parametrize("stop_in", ["training tokenizer", "encoding training text"])
def test_interrupted_preparation_leaves_no_partial_cache_entry(tmp_path, monkeypatch, stop_in):
    from loop_tui.cache import cache_dir
    from loop_tui.data.corpus import load_corpus
    from loop_tui.data.tokens import Interrupted, prepare

    monkeypatch.setenv("LOOP_CACHE_DIR", str(tmp_path / "cache"))
    c = load_corpus(make_folder(tmp_path / "d", 40, 3000))
    seen: list[str] = []
    with pytest.raises(Interrupted, match="stopped while"):
        prepare(
            c, 500, 0.1, 33, progress=lambda phase, done, total: seen.append(phase), should_stop=lambda: stop_in in seen
        )
    left = sorted(p.name for p in cache_dir().iterdir())
    assert not any(name.startswith(".") or "tmp" in name for name in left), left
    assert not any(name.startswith("tokens-") for name in left), left
    if stop_in == "training tokenizer":
        assert not left


def test_latin1_folder_says_not_utf8(tmp_path, capsys):
    d = tmp_path / "latin"
    d.mkdir()
    (d / "a.txt").write_bytes("café crème brûlée\n".encode("latin-1") * 10)
    code, _, err = run_cli(capsys, "train", "smoke", "--data", str(d), "--out", str(tmp_path / "run"), "--no-tui")
    line = one_line_error(err)
    assert code == errors.EXIT_USAGE and "not UTF-8" in line and "iconv" in line


def test_sigterm_while_tokenizing_stops_promptly_in_one_line(tmp_path):
    import subprocess
    import sys
    import time

    folder = make_folder(tmp_path / "big", 20, 300_000)  # ~40 MB: tokenizing takes many seconds
    env = {**__import__("os").environ, "RAYON_NUM_THREADS": "1", "LOOP_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loop_tui",
            "train",
            "smoke",
            "--data",
            str(folder),
            "--out",
            str(tmp_path / "run"),
            "--no-tui",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    line = p.stdout.readline()  # the corpus summary: scanning is done and tokenizer training starts
    assert "20 documents" in line, line
    time.sleep(1)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == errors.EXIT_ABORTED, (out, err)
    assert "stopped while" in one_line_error(err)
    assert "saving a checkpoint" not in err  # nothing is trained yet: nothing to save
    assert not list((tmp_path / "cache").glob("tokens-*")) and not list((tmp_path / "cache").glob(".*"))


def test_second_ctrl_c_aborts_without_saving(tmp_path):
    """Headless: the first SIGINT asks to finish the step and save; a second one before that is
    done aborts at once, exit 130, and writes no checkpoint."""
    import os
    import subprocess
    import sys
    import time

    cfg = write_config(
        tmp_path,
        d_model=256,
        num_heads=4,
        num_layers=6,
        d_ff=1024,
        batch_size=16,
        max_length=128,
        log_every=1,
        checkpoint_every=100000,
    )
    run = tmp_path / "run"
    p = subprocess.Popen(
        [sys.executable, "-m", "loop_tui", "train", cfg, "--out", str(run), "--no-tui", "--steps", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in p.stdout:  # type: ignore[union-attr]
        if line.startswith("step"):
            break
    p.send_signal(signal.SIGINT)
    time.sleep(0.02)  # a step of this model takes far longer: the second Ctrl-C lands inside it
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == errors.EXIT_ABORTED, err
    assert "aborted without saving" in err and "Traceback" not in err
    assert not checkpoint.list_checkpoints(run)


# ---------------------------------------------------------------- loop runs
def test_runs_lists_finished_interrupted_and_running_runs(tmp_path, capsys):
    import fcntl
    import json

    from loop_tui.config import load_config
    from loop_tui.train.trainer import Trainer

    root = tmp_path / "runs"
    assert run_cli(capsys, "train", "smoke", "--out", str(root / "done"), "--no-tui", "--steps", "3")[0] == 0
    cfg = load_config("smoke").replace(max_steps=50, log_every=1)
    holder: list[Trainer] = []

    def quit_at_2(kind, p):
        if kind == "step" and p["step"] == 2:
            holder[0].request("quit")

    t = Trainer(cfg, root / "stopped", on_event=quit_at_2)
    holder.append(t)
    t.setup()
    t.run()
    assert run_cli(capsys, "train", "smoke", "--out", str(root / "live"), "--no-tui", "--steps", "2")[0] == 0
    with open(root / "live" / ".lock", "a+") as lock:  # another trainer holding the run
        fcntl.flock(lock, fcntl.LOCK_EX)
        code, out, _ = run_cli(capsys, "runs", str(root), "--json")
    assert code == 0
    runs = {Path(r["path"]).name: r for r in json.loads(out)}
    assert runs["done"]["status"] == "finished" and runs["done"]["step"] == 3 and runs["done"]["planned"] == 3
    assert runs["stopped"]["status"] == "interrupted" and runs["stopped"]["step"] == 2
    assert runs["stopped"]["planned"] == 50 and runs["stopped"]["config"] == "smoke"
    assert runs["live"]["status"] == "running"
    assert runs["done"]["loss"] > 0 and runs["done"]["best_val"] > 0 and runs["done"]["tokens_per_s"] > 0
    code, out, _ = run_cli(capsys, "runs", str(root))
    assert code == 0 and "interrupted" in out and "finished" in out and "smoke" in out
    code, _, err = run_cli(capsys, "runs", str(tmp_path / "nope"))
    assert code == 2 and "no such folder" in one_line_error(err)
