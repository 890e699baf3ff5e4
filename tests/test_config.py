"""Config loading: every validation rule gives one line naming file, field and rule."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from loop_tui.config import Config, ConfigError, load_config, shipped_configs

GOOD = {
    "d_model": 64,
    "num_heads": 4,
    "num_layers": 2,
    "d_ff": 256,
    "batch_size": 8,
    "max_length": 32,
    "vocab_size": 512,
}


def write(tmp_path, data, name="c.json"):
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else orjson.dumps(data))
    return p


def test_shipped_configs_load_with_original_values():
    expected = {
        "wiki_gpu_optimized": (512, 8, 6, 2048, 64, 256),
        "wiki_cache_optimized": (384, 8, 4, 1536, 32, 128),
        "wiki_performance_tuned": (320, 8, 5, 1280, 40, 96),
    }
    for name, values in expected.items():
        c = load_config(name)
        assert (c.d_model, c.num_heads, c.num_layers, c.d_ff, c.batch_size, c.max_length) == values
        assert c.vocab_size == 16000
    names = {p.stem for p in shipped_configs()}
    assert {"smoke", "default"} <= names
    for p in shipped_configs():
        assert isinstance(load_config(str(p)), Config)
        assert load_config(str(p)).dropout == 0.0  # shipped runs train as they always did


def test_defaults_fill_training_fields(tmp_path):
    c = load_config(str(write(tmp_path, GOOD)))
    assert c.name == "c" and c.learning_rate == 6e-4 and c.backend == "c" and c.data is None


@pytest.mark.parametrize(
    "change,pattern",
    [
        ({"d_modle": 1}, r"field 'd_modle': unknown key \(did you mean 'd_model'\?\)"),
        ({"zzz": 1}, r"field 'zzz': unknown key$"),
        ({"d_model": None}, r"field 'd_model': must be an integer, got null"),
        ({"d_model": "64"}, r"field 'd_model': must be an integer"),
        ({"d_model": 64.0}, r"field 'd_model': must be an integer"),
        ({"d_model": True}, r"field 'd_model': must be an integer"),
        ({"learning_rate": "fast"}, r"field 'learning_rate': must be a number"),
        ({"d_model": 0}, r"field 'd_model': must be positive, got 0"),
        ({"batch_size": -3}, r"field 'batch_size': must be positive, got -3"),
        ({"max_length": 0}, r"field 'max_length': must be positive"),
        ({"d_model": 66}, r"field 'd_model': must be divisible by num_heads \(66 % 4 != 0\)"),
        ({"vocab_size": 100}, r"field 'vocab_size': must be at least 257"),
        ({"learning_rate": 0}, r"field 'learning_rate': must be positive"),
        ({"beta2": 1.0}, r"field 'beta2': must be in \[0, 1\)"),
        ({"val_fraction": 0}, r"field 'val_fraction': must be in \(0, 1\)"),
        ({"dropout": 1.0}, r"field 'dropout': must be in \[0, 1\), got 1.0$"),
        ({"dropout": -0.1}, r"field 'dropout': must be in \[0, 1\), got -0.1$"),
        ({"dropout": "some"}, r"field 'dropout': must be a number"),
        ({"backend": "cuda"}, r"field 'backend': must be one of c, opencl"),
        ({"threads": 0}, r"field 'threads': must be positive or null"),
        ({"warmup_steps": -1}, r"field 'warmup_steps': must not be negative"),
    ],
)
def test_invalid_field(tmp_path, change, pattern):
    p = write(tmp_path, {**GOOD, **change})
    with pytest.raises(ConfigError, match=pattern) as e:
        load_config(str(p))
    assert str(p) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "missing", ["d_model", "num_heads", "num_layers", "d_ff", "batch_size", "max_length", "vocab_size"]
)
def test_missing_key(tmp_path, missing):
    with pytest.raises(ConfigError, match=f"field '{missing}': missing"):
        load_config(str(write(tmp_path, {k: v for k, v in GOOD.items() if k != missing})))


@pytest.mark.parametrize(
    "content,pattern",
    [
        (b'{"d_model": 64, ', "not valid JSON"),
        (b"hello", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_file_content(tmp_path, content, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(str(write(tmp_path, content)))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match="no such config file .*shipped configs: .*smoke"):
        load_config("nonexistent_name")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))


@pytest.mark.parametrize("argv", [["analyze", "{bad}"], ["train", "{bad}", "--no-tui"]])
def test_cli_reports_one_line_and_exit_2(tmp_path, argv):
    bad = write(tmp_path, {**GOOD, "d_model": 66})
    argv = [a.replace("{bad}", str(bad)) for a in argv]
    r = subprocess.run([sys.executable, "-m", "loop_tui", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "d_model" in r.stderr and "divisible" in r.stderr


def test_cli_bad_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blob.bin").write_bytes(b"\0\1\2")
    for data, msg in ((tmp_path / "empty", "no usable text files"), (tmp_path / "missing", "does not exist")):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "loop_tui",
                "train",
                "smoke",
                "--no-tui",
                "--data",
                str(data),
                "--out",
                str(tmp_path / "run"),
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_help_explains():
    r = subprocess.run([sys.executable, "-m", "loop_tui", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--resume" in r.stdout and "--no-tui" in r.stdout


def test_saved_configs_are_found_by_name_and_shipped_names_win(tmp_path, monkeypatch):
    from loop_tui.config import CONFIG_DIR, saved_configs

    monkeypatch.setenv("LOOP_CONFIG_DIR", str(tmp_path))
    write(tmp_path, {**GOOD, "max_steps": 7}, "mine.json")
    write(tmp_path, {**GOOD, "max_steps": 8}, "smoke.json")  # hidden by the shipped smoke
    assert load_config("mine").max_steps == 7 and load_config("mine").name == "mine"
    assert load_config("smoke").max_steps == orjson.loads((CONFIG_DIR / "smoke.json").read_bytes())["max_steps"]
    assert [p.name for p in saved_configs()] == ["mine.json"]
    with pytest.raises(ConfigError, match=f"saved in {tmp_path}: mine"):
        load_config("nonexistent_name")


def test_xdg_config_home_holds_saved_configs(tmp_path, monkeypatch):
    from loop_tui.config import user_config_dir

    monkeypatch.delenv("LOOP_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert user_config_dir() == tmp_path / "loop_tui" / "configs"


# ---------------------------------------------------------------- loop train --set / --print-config
def print_config(capsys, *argv: str) -> dict:
    from loop_tui import cli

    assert cli.main(["train", "smoke", *argv, "--print-config"]) == 0
    return orjson.loads(capsys.readouterr().out)


def test_set_types_each_field_as_a_config_file_would(capsys):
    smoke = load_config("smoke").to_dict()
    got = print_config(
        capsys,
        *("--set", "learning_rate=3e-4", "--set", "batch_size=2", "--set", "beta2=.99", "--set", "name=mine"),
        *("--set", "threads=2", "--set", "threads=null", "--set", "data=some folder", "--set", "precision=bf16"),
    )
    expected = {**smoke, "learning_rate": 3e-4, "batch_size": 2, "beta2": 0.99, "name": "mine", "threads": None}
    assert got == {**expected, "data": "some folder", "precision": "bf16"}
    assert type(got["batch_size"]) is int and type(got["learning_rate"]) is float
    # the dedicated options apply after --set
    assert print_config(capsys, "--set", "seed=1", "--seed", "2")["seed"] == 2
    assert print_config(capsys) == smoke


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("learning_rate=-1", "--set: field 'learning_rate': must be positive, got -1"),
        ("batch_size=2.5", "--set: field 'batch_size': must be an integer, got 2.5"),
        ("batch_size=big", "--set: field 'batch_size': must be an integer, got \"big\""),
        ("learnig_rate=1e-3", "--set: field 'learnig_rate': unknown key (did you mean 'learning_rate'?)"),
        ("num_heads=5", "--set: field 'd_model': must be divisible by num_heads (64 % 5 != 0)"),
        ("val_fraction=inf", "--set: field 'val_fraction': must be finite"),
        ("dropout=1", "--set: field 'dropout': must be in [0, 1), got 1"),
        ("backend=cuda", "--set: field 'backend': must be one of c, opencl, got 'cuda'"),
        ("d_model=null", "--set: field 'd_model': must be an integer, got null"),
        ("learning_rate", "--set: expected KEY=VALUE (e.g. learning_rate=3e-4), got 'learning_rate'"),
    ],
)
def test_set_errors_are_one_line_and_exit_2(tmp_path, capsys, assignment, message):
    from loop_tui import cli

    code = cli.main(["train", "smoke", "--no-tui", "--out", str(tmp_path / "run"), "--set", assignment])
    err = capsys.readouterr().err
    assert code == 2 and err == f"loop: error: {message}\n"
    assert not (tmp_path / "run").exists()


def test_set_reaches_the_runs_config_and_its_history(tmp_path, capsys):
    from loop_tui import cli

    run = str(tmp_path / "run")
    quiet = ("--set", "eval_every=1000", "--set", "sample_every=1000", "--set", "log_every=1")
    first = ["train", "smoke", "--no-tui", "--out", run, "--steps", "2", *quiet, "--set", "learning_rate=1e-3"]
    assert cli.main(first) == 0
    saved = orjson.loads((tmp_path / "run" / "config.json").read_bytes())
    assert saved["learning_rate"] == 1e-3 and saved["log_every"] == 1
    records = [orjson.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_bytes().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]  # log_every=1 took effect
    argv = ["train", "smoke", "--no-tui", "--out", run, "--steps", "1", "--resume", *quiet]
    assert cli.main([*argv, "--set", "learning_rate=5e-4"]) == 0
    assert "learning_rate 0.001 → 0.0005" in capsys.readouterr().out
    history = [orjson.loads(x) for x in (tmp_path / "run" / "config_history.jsonl").read_bytes().splitlines()]
    assert history[-1]["step"] == 2 and history[-1]["changes"] == {"learning_rate": {"from": 1e-3, "to": 5e-4}}
    assert orjson.loads((tmp_path / "run" / "config.json").read_bytes())["learning_rate"] == 5e-4
