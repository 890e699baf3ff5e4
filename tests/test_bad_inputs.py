"""Hostile inputs (issue 22, part B): damaged run and model folders, names and prompts that are not
UTF-8, a full or read-only disk under `export`, broken `loop runs` entries, config names that are
paths, symlinked data folders, `eval` of a long file in bounded memory, and stale temporary files
of killed processes. Each ends in one line and a documented exit code, or just works."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest

from loop_tui import errors
from loop_tui.train import checkpoint

from .test_reliability import SMOKE_DATA, make_folder, one_line_error, run_cli, train_steps, write_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A smoke run of 2 steps with a checkpoint (read only by the tests: copy it to change it)."""
    from loop_tui import cli

    tmp = tmp_path_factory.mktemp("trained")
    run = tmp / "run"
    assert (
        cli.main(["train", write_config(tmp, checkpoint_every=2), "--out", str(run), "--no-tui", "--steps", "2"]) == 0
    )
    return run


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    """`trained` as a HuggingFace folder."""
    from loop_tui import cli

    out = tmp_path_factory.mktemp("exported") / "hf"
    assert cli.main(["export", str(trained), str(out)]) == 0
    return out


def mount_tmpfs(where: Path, *options: str) -> Path:
    """A tmpfs at `where` (a small disk to fill, or a read-only one); skips where mounting is not
    allowed (it needs root), since no other honest way gives ENOSPC or EROFS from the OS."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    return where


@pytest.fixture
def mounts():
    made: list[Path] = []

    def mount(where: Path, *options: str) -> Path:
        made.append(mount_tmpfs(where, *options))
        return where

    yield mount
    for m in reversed(made):
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


# ---------------------------------------------------------------- row 6: damaged run config.json
@pytest.mark.parametrize("content", [b"{garbled", b"[1]", b"\xff\xfe"])
def test_resume_with_a_damaged_run_config_uses_the_checkpoints_settings(tmp_path, capsys, content):
    run = tmp_path / "run"
    train_steps(tmp_path, run, 2, checkpoint_every=2)
    (run / "config.json").write_bytes(content)
    capsys.readouterr()
    code, _, err = run_cli(
        capsys, "train", write_config(tmp_path, checkpoint_every=2), "--out", str(run), "--no-tui", "--resume",
        "--steps", "2",
    )  # fmt: skip
    assert code == 0, err
    assert "config.json: damaged" in err and "Traceback" not in err
    assert checkpoint.latest(run).name == "step_00000004"
    assert isinstance(orjson.loads((run / "config.json").read_bytes()), dict)  # rewritten by the save


# ---------------------------------------------------------------- rows 7, 10: bytes that are not UTF-8
def test_data_file_names_that_are_not_utf8_are_read(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for p in sorted(SMOKE_DATA.glob("*.py"))[:3]:
        shutil.copy(p, data / p.name)
    odd = os.fsdecode(bytes(data) + b"/caf\xe9.txt")
    Path(odd).write_text("un caf\u00e9 noir, s'il vous pla\u00eet\n" * 200)
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", write_config(tmp_path, checkpoint_every=2), "--data", str(data), "--out", str(run),
        "--no-tui", "--steps", "2",
    )  # fmt: skip
    assert code == 0, err
    from loop_tui.data.corpus import load_corpus

    corpus = load_corpus(data)
    assert "caf\\xe9.txt" in [d.name for d in corpus.docs]  # shown escaped, read by its bytes
    code, out, err = run_cli(capsys, "eval", str(run), "--data", str(data), "--json")
    assert code == 0, err
    assert orjson.loads(out)["files"] == len(corpus.docs)


def test_a_prompt_that_is_not_utf8_is_one_line(trained, capsys):
    code, _, err = run_cli(capsys, "generate", str(trained), "--prompt", os.fsdecode(b"caf\xe9"), "--tokens", "2")
    line = one_line_error(err)
    assert code == errors.EXIT_USAGE and "--prompt" in line and "UTF-8" in line and "e9" in line


# ---------------------------------------------------------------- row 8: export onto a full disk
def test_export_onto_a_full_disk_is_one_line_and_leaves_nothing(trained, tmp_path, capsys, mounts):
    disk = mounts(tmp_path / "small", "size=128k")
    code, _, err = run_cli(capsys, "export", str(trained), str(disk / "out"))
    line = one_line_error(err)
    assert code == errors.EXIT_OS and "cannot write" in line, err
    assert list(disk.iterdir()) == []  # neither OUT nor its temporary folder


def test_export_to_a_read_only_place_is_exit_5(trained, tmp_path, capsys, mounts):
    disk = mounts(tmp_path / "ro", "size=1m", "ro")
    code, _, err = run_cli(capsys, "export", str(trained), str(disk / "out"))
    assert code == errors.EXIT_OS and "Read-only file system" in one_line_error(err)


def test_export_under_a_file_is_exit_5(trained, tmp_path, capsys):  # no mount needed: ENOTDIR
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, "export", str(trained), str(tmp_path / "afile" / "out"))
    assert code == errors.EXIT_OS and "Not a directory" in one_line_error(err)


# ---------------------------------------------------------------- row 9: --init-from damaged folders
def _config_without(key):
    def damage(folder: Path) -> None:
        cfg = orjson.loads((folder / "config.json").read_bytes())
        del cfg[key]
        (folder / "config.json").write_bytes(orjson.dumps(cfg))

    return damage


def _fewer_layers(folder: Path) -> None:  # the weights hold 2 layers, config.json says 1
    cfg = orjson.loads((folder / "config.json").read_bytes())
    cfg["n_layer"] = 1
    (folder / "config.json").write_bytes(orjson.dumps(cfg))


def _truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "n_embd missing": (_config_without("n_embd"), "n_embd"),
    "config.json is [1]": (lambda f: (f / "config.json").write_bytes(b"[1]"), "JSON object"),
    "config.json garbled": (lambda f: (f / "config.json").write_bytes(b"{\x00"), "not valid JSON"),
    "truncated weights": (_truncate, "model.safetensors"),
    "empty weights": (lambda f: (f / "model.safetensors").write_bytes(b""), "model.safetensors"),
    "garbled tokenizer": (lambda f: (f / "tokenizer.json").write_bytes(b'{"version": 1'), "tokenizer"),
    "fewer layers than the weights": (_fewer_layers, "transformer.h.1"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_init_from_a_damaged_folder_is_one_line(exported, tmp_path, capsys, damage):
    folder = tmp_path / "hf"
    shutil.copytree(exported, folder)
    make_damage, needle = DAMAGES[damage]
    make_damage(folder)
    code, _, err = run_cli(
        capsys, "train", write_config(tmp_path), "--init-from", str(folder), "--out", str(tmp_path / "run"),
        "--no-tui", "--steps", "1",
    )  # fmt: skip
    line = one_line_error(err)
    assert code == errors.EXIT_USAGE and needle in line, line
    code, _, err = run_cli(capsys, "generate", str(folder), "--tokens", "2")  # the same checks read it here
    assert code == errors.EXIT_USAGE and needle in one_line_error(err)


# ---------------------------------------------------------------- folders that hold no model
def test_generate_on_a_run_without_checkpoints_says_train_first(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")  # what a run writes before its first checkpoint
    (run / "metrics.jsonl").write_text("")
    code, _, err = run_cli(capsys, "generate", str(run))
    line = one_line_error(err)
    assert code == errors.EXIT_CHECKPOINT and "no checkpoint yet" in line and "model_type" not in line


@pytest.mark.parametrize("with_checkpoints_folder", [False, True])
def test_no_checkpoint_is_exit_4_with_or_without_the_checkpoints_folder(tmp_path, capsys, with_checkpoints_folder):
    run = tmp_path / "run"
    (run / "checkpoints" if with_checkpoints_folder else run).mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")
    code, _, err = run_cli(capsys, "generate", str(run))
    assert code == errors.EXIT_CHECKPOINT and "checkpoint" in one_line_error(err)


def test_a_folder_that_is_neither_a_run_nor_a_model_is_a_usage_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "generate", str(tmp_path))
    assert code == errors.EXIT_USAGE and "not a run folder" in one_line_error(err)


# ---------------------------------------------------------------- options out of range
@pytest.mark.parametrize(
    "argv,needle",
    [
        (["generate", "nowhere", "--threads", "0"], "--threads"),
        (["generate", "nowhere", "--threads", "-3"], "--threads"),
        (["eval", "nowhere", "--data", ".", "--threads", "0"], "--threads"),
        (["generate", "nowhere", "--seed", "-1"], "--seed"),
        (["generate", "nowhere", "--seed", str(2**64)], "--seed"),
        (["train", "smoke", "--no-tui", "--steps", str(2**64)], "--steps"),
        (["train", "smoke", "--no-tui", "--seed", str(2**64)], "--seed"),
        (["train", "smoke", "--no-tui", "--seed", "-1"], "--seed"),
    ],
)
def test_out_of_range_options_are_usage_errors(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)  # were one accepted, its run folder would go under runs/ here
    code, _, err = run_cli(capsys, *argv)
    assert code == errors.EXIT_USAGE and needle in one_line_error(err)


def test_a_config_seed_beyond_64_bits_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "analyze", write_config(tmp_path, seed=2**63))
    assert code == errors.EXIT_USAGE and "'seed'" in one_line_error(err)


def test_eval_context_must_be_positive(trained, capsys):
    code, _, err = run_cli(capsys, "eval", str(trained), "--data", str(SMOKE_DATA), "--context", "0")
    assert code == errors.EXIT_USAGE and "--context" in one_line_error(err)


# ---------------------------------------------------------------- config name
@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped", "a/b"])
def test_a_config_name_that_is_a_path_is_refused(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", write_config(tmp_path, name=name), "--no-tui", "--steps", "1")
    assert code == errors.EXIT_USAGE and "'name'" in one_line_error(err)
    assert not (tmp_path / "runs").exists() and not list(tmp_path.parent.glob("escaped*"))


# ---------------------------------------------------------------- loop runs
@pytest.mark.parametrize(
    "file,content",
    [
        ("run.json", b"[1]"),
        ("run.json", b'{"config": 5, "planned_steps": "x", "started": 7, "precision": []}'),
        ("metrics.jsonl", b'{"step": 1, "loss": 5.0}\n[1]\n{"step": "x"}\n{"step": 2, "loss": "nan?"}\n'),
    ],
)
def test_runs_lists_every_run_when_one_is_damaged(trained, tmp_path, capsys, file, content):
    shutil.copytree(trained, tmp_path / "good")
    bad = tmp_path / "bad"
    shutil.copytree(trained, bad)
    (bad / file).write_bytes(content)
    code, out, err = run_cli(capsys, "runs", str(tmp_path))
    assert code == 0, err
    assert "good" in out and "bad" in out and f"damaged {file}" in out
    code, out, _ = run_cli(capsys, "runs", str(tmp_path), "--json")
    rows = {Path(r["path"]).name: r for r in orjson.loads(out)}
    assert code == 0 and rows["bad"]["damaged"] == file and rows["good"]["damaged"] == ""


# ---------------------------------------------------------------- data folders
def test_symlinked_subfolders_are_counted_as_skipped(tmp_path):
    from loop_tui.data.corpus import load_corpus

    data = make_folder(tmp_path / "data", 2, 300)
    elsewhere = make_folder(tmp_path / "elsewhere", 1, 300)
    (data / "linked").symlink_to(elsewhere)
    (data / "loop").symlink_to(data)  # a link back up the tree: not followed either
    corpus = load_corpus(data)
    assert len(corpus.docs) == 2 and corpus.skipped == {"symlinked folder": 2}
    assert "skipped 2 symlinked folder" in corpus.summary()


# ---------------------------------------------------------------- eval streams long files
def test_eval_tokenizes_a_long_file_in_bounded_pieces_with_the_whole_files_tokens(trained, tmp_path, monkeypatch):
    from tokenizers import Tokenizer

    from loop_tui import evaluate as ev
    from loop_tui.data.corpus import load_corpus
    from loop_tui.sources import load_model

    data = make_folder(tmp_path / "data", 1, 6000)
    with open(data / "doc0000.txt", "a") as f:  # seams that are not pre-tokenizer boundaries
        f.write("  indented\n\n\ntwo blank lines \n trailing space\n" * 50)
    text = (data / "doc0000.txt").read_text()
    src = load_model(trained, warn=lambda m: None)
    tok = Tokenizer.from_str(src.tokenizer_json.decode())
    piece = 1024
    monkeypatch.setattr(ev, "ENCODE_PIECE_BYTES", piece)
    longest = [0]

    class Spy:
        def encode_batch(self, texts):
            longest[0] = max(longest[0], *(len(t) for t in texts))
            return tok.encode_batch(texts)

    class Counter:  # no model: what is checked is which tokens are scored
        def __init__(self, batch, T):
            self.windows = []

        def token_losses(self, x, y):
            self.windows.append(x.copy())
            return np.zeros(x.shape, np.float32)

    r = ev.evaluate(lambda b, T: Counter(b, T), Spy(), load_corpus(data), 32, 4)
    assert len(text) > 20 * piece and longest[0] <= 2 * piece
    whole = tok.encode(text).ids
    assert r.tokens == len(whole)
    assert r.predicted == sum(len(w) - 1 for w in ev.windows(np.asarray(whole), 32))


def test_seamless_cuts_are_pre_tokenizer_boundaries():
    from tokenizers import pre_tokenizers

    from loop_tui.evaluate import seamless_pieces

    text = "a b\n\nc \nd\n e\nf\tg\nhé\n" * 40
    pieces = list(seamless_pieces(iter([text[i : i + 7] for i in range(0, len(text), 7)]), 10))
    assert "".join(pieces) == text and len(pieces) > 5
    split = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str
    assert [w for p in pieces for w, _ in split(p)] == [w for w, _ in split(text)]


# ---------------------------------------------------------------- stale work files in the cache
def test_work_folders_of_killed_processes_are_removed_from_the_cache(tmp_path, monkeypatch):
    import socket

    from loop_tui import cache
    from loop_tui.data.corpus import load_corpus
    from loop_tui.data.tokens import prepare

    monkeypatch.setenv("LOOP_CACHE_DIR", str(tmp_path / "cache"))
    d = cache.cache_dir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    stale = [d / f".encode-{host}-{dead.pid}-abc123", d / f".bpe-{host}-{dead.pid}-x_9"]
    kept = [
        d / f".encode-{host}-{os.getpid()}-zzz",  # alive
        d / f".encode-{host}x-{dead.pid}-zzz",  # another machine's (a shared cache): its PIDs mean nothing here
    ]
    for p in stale + kept:
        p.mkdir()
        (p / "ids.bin").write_bytes(b"\0" * 10)
    assert cache.work_folder("encode") == f".encode-{host}-{os.getpid()}-"
    prepare(load_corpus(make_folder(tmp_path / "data", 2, 300)), 300, 0.1, 8)
    assert not any(p.exists() for p in stale)
    assert sorted(p for p in d.iterdir() if p.name.startswith(".")) == sorted(kept)  # its own work is gone too


# ---------------------------------------------------------------- a full cache disk
def test_a_full_cache_disk_is_exit_5(tmp_path, capsys, monkeypatch, mounts):
    cache = mounts(tmp_path / "cache", "size=96k")
    monkeypatch.setenv("LOOP_CACHE_DIR", str(cache))
    data = make_folder(tmp_path / "data", 3, 40000)
    code, _, err = run_cli(
        capsys, "train", write_config(tmp_path), "--data", str(data), "--out", str(tmp_path / "run"), "--no-tui",
        "--steps", "1",
    )  # fmt: skip
    line = one_line_error(err)
    assert code == errors.EXIT_OS and "No space left on device" in line, err
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no work folder left
