"""README's exit-code table is what `loop` does: every row of the table is triggered here (row 6,
a dead MPI rank, by test_mpi.py::test_a_killed_rank_ends_the_job_and_keeps_the_checkpoint, which
needs mpiexec), and the table has exactly the codes errors.py defines."""

from __future__ import annotations

import fcntl
import os
import re
import signal
from pathlib import Path

import pytest

from loop_tui import errors, machine
from loop_tui.train import trainer as trainer_mod

from .test_bad_inputs import mount_tmpfs
from .test_reliability import one_line_error, run_cli, write_config

README = Path(__file__).resolve().parent.parent / "README.md"
COVERED_ELSEWHERE = {errors.EXIT_RANK_LOST: "test_mpi.py::test_a_killed_rank_ends_the_job_and_keeps_the_checkpoint"}


def readme_codes() -> dict[int, str]:
    table = README.read_text().split("Exit codes:", 1)[1].lstrip().split("\n\n", 1)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", table, re.M)}


def train(tmp_path, capsys, *extra: str, **fields) -> tuple[int, str]:
    code, _, err = run_cli(
        capsys, "train", write_config(tmp_path, **fields), "--out", str(tmp_path / "run"), "--no-tui", *extra
    )
    return code, err


# each trigger: (tmp_path, capsys, monkeypatch) -> (exit code, stderr); a row naming several causes has several
def done(tmp_path, capsys, monkeypatch):
    return train(tmp_path, capsys, "--steps", "1")


def diverged(tmp_path, capsys, monkeypatch):
    return train(tmp_path, capsys, "--steps", "200", learning_rate=1e4, warmup_steps=1, grad_clip=0.0)


def bad_option(tmp_path, capsys, monkeypatch):
    return train(tmp_path, capsys, "--steps", "0")


def locked(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "a+") as held:  # another trainer's lock (a second open file: flock conflicts)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return train(tmp_path, capsys, "--steps", "1")


def no_checkpoint(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")  # a run killed before its first save
    code, _, err = run_cli(capsys, "generate", str(run))
    return code, err


def resume_without_checkpoint(tmp_path, capsys, monkeypatch):
    (tmp_path / "run").mkdir()
    return train(tmp_path, capsys, "--steps", "1", "--resume")


def checkpoint_on_read_only_disk(tmp_path, capsys, monkeypatch):
    """The checkpoints folder turns read-only mid-run (a read-only tmpfs mounted over it)."""
    save = trainer_mod.Trainer.save_checkpoint

    def read_only_then_save(self, reason):
        if not (self.run_dir / "checkpoints").is_mount():
            mount_tmpfs(self.run_dir / "checkpoints", "size=1m", "ro")
        return save(self, reason)

    monkeypatch.setattr(trainer_mod.Trainer, "save_checkpoint", read_only_then_save)
    try:
        return train(tmp_path, capsys, "--steps", "4", checkpoint_every=2)
    finally:
        os.system(f"umount -l {tmp_path / 'run' / 'checkpoints'} 2>/dev/null")


def run_folder_under_a_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, "train", "smoke", "--out", str(tmp_path / "afile" / "run"), "--no-tui")
    return code, err


def export_to_read_only_disk(tmp_path, capsys, monkeypatch):
    assert train(tmp_path, capsys, "--steps", "2", checkpoint_every=2)[0] == 0
    disk = mount_tmpfs(tmp_path / "ro", "size=1m", "ro")
    try:
        code, _, err = run_cli(capsys, "export", str(tmp_path / "run"), str(disk / "out"))
    finally:
        os.system(f"umount -l {disk}")
    return code, err


def bug(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(machine, "cpu_count", lambda: 1 // 0)  # `loop info` meets a bug
    code, _, err = run_cli(capsys, "info")
    return code, err


def second_ctrl_c(tmp_path, capsys, monkeypatch):
    step = trainer_mod.Trainer.train_step

    def two_ctrl_cs(self):
        os.kill(os.getpid(), signal.SIGINT)  # the first asks to finish the step and save
        os.kill(os.getpid(), signal.SIGINT)  # the second aborts
        return step(self)

    monkeypatch.setattr(trainer_mod.Trainer, "train_step", two_ctrl_cs)
    return train(tmp_path, capsys, "--steps", "5")


TRIGGERS = {
    errors.EXIT_OK: [done],
    errors.EXIT_DIVERGED: [diverged],
    errors.EXIT_USAGE: [bad_option],
    errors.EXIT_LOCKED: [locked],
    errors.EXIT_CHECKPOINT: [no_checkpoint, resume_without_checkpoint, checkpoint_on_read_only_disk],
    errors.EXIT_OS: [run_folder_under_a_file, export_to_read_only_disk],
    errors.EXIT_INTERNAL: [bug],
    errors.EXIT_ABORTED: [second_ctrl_c],
}


def test_the_table_has_exactly_the_defined_codes():
    defined = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    assert set(readme_codes()) == defined == set(TRIGGERS) | set(COVERED_ELSEWHERE)


@pytest.mark.parametrize(
    "code,trigger",
    [(code, t) for code, ts in TRIGGERS.items() for t in ts],
    ids=[f"{code}-{t.__name__}" for code, ts in TRIGGERS.items() for t in ts],
)
def test_each_row_of_the_table(tmp_path, capsys, monkeypatch, code, trigger):
    got, err = trigger(tmp_path, capsys, monkeypatch)
    assert got == code, err
    if code not in (errors.EXIT_OK, errors.EXIT_ABORTED):
        one_line_error(err)
