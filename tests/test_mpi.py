"""Data-parallel training under a real `mpiexec` (MPICH's Hydra, from the `mpi` extra): 2 ranks match
one process with twice the batch, checkpoints, Ctrl-C and resume, a killed rank. Hydra runs more
ranks than cores without a flag, so this works on a 2-core machine."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .terminal import wait_pane
from .test_train import losses

pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e '.[mpi]')")
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec (pip install -e '.[mpi]')", allow_module_level=True)

SMOKE = {  # the smoke model; batch 4 per rank, so 2 ranks make the single process's batch of 8
    "d_model": 64, "num_heads": 4, "num_layers": 2, "d_ff": 256, "batch_size": 4, "max_length": 32,
    "vocab_size": 512, "max_steps": 40, "learning_rate": 0.003, "warmup_steps": 5, "eval_every": 10,
    "eval_batches": 4, "sample_every": 1000, "log_every": 1, "checkpoint_every": 10, "keep_checkpoints": 3,
}  # fmt: skip


def env() -> dict:
    return {**os.environ, "RAYON_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def config(tmp_path: Path, **changes) -> str:
    path = tmp_path / f"cfg-{len(list(tmp_path.glob('cfg-*')))}.json"
    path.write_text(json.dumps({**SMOKE, "name": "mpi", **changes}))
    return str(path)


def train_argv(cfg: str, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "loop_tui", "train", cfg, "--no-tui", "--out", str(run), "--threads", "1", *extra]


def mpi(n: int, argv: list[str]) -> list[str]:
    return [MPIEXEC, "-n", str(n), *argv]


def run_mpi(n: int, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(mpi(n, argv), env=env(), capture_output=True, text=True, timeout=300)


def start_mpi(n: int, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(mpi(n, argv), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One process, batch 8, 40 steps: what 2 ranks of batch 4 must reproduce."""
    d = tmp_path_factory.mktemp("single")
    run = d / "run"
    cfg = config(d, batch_size=8, max_steps=40)
    subprocess.run(train_argv(cfg, run), env=env(), check=True, capture_output=True, timeout=300)
    return run


def test_two_ranks_match_one_process_with_twice_the_batch(single, tmp_path):
    run = tmp_path / "run"
    p = run_mpi(2, train_argv(config(tmp_path, max_steps=40), run, "--steps", "30"))  # the same lr schedule
    assert p.returncode == 0, p.stderr[-2000:]
    got, want = losses(run), losses(single)
    assert sorted(got) == list(range(1, 31))
    for step, loss in got.items():
        assert loss == pytest.approx(want[step], rel=1e-5), f"step {step}"
    assert p.stdout.count("step     30/30 ") == 1  # rank 0 alone reports
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "loss" in r][-1]
    assert last["world_size"] == 2 and len(last["rank_tokens_per_s"]) == 2 and last["allreduce_s"] >= 0
    # one checkpoint folder per save, and the best (its own hidden folder), from rank 0 alone, recording the world
    folders = sorted(x.name for x in (run / "checkpoints").iterdir() if x.name != "best")
    best = (run / "checkpoints" / "best").readlink().name
    assert folders == sorted([best, "step_00000010", "step_00000020", "step_00000030"])
    state = json.loads((run / "checkpoints" / "step_00000030" / "state.json").read_text())
    assert state["world_size"] == 2 and state["global_batch"] == 8
    from loop_tui.ui.view import Series

    watched = Series(run)
    assert watched.read_more() and watched.ranks.startswith("2 ranks: ") and "all-reduce" in watched.ranks


def test_two_ranks_accumulating_two_micro_batches_match_one_process(single, tmp_path):
    """2 ranks × batch 2 × grad_accum_steps 2: the global batch of 8 the single process trains on."""
    run = tmp_path / "run"
    p = run_mpi(2, train_argv(config(tmp_path, batch_size=2, grad_accum_steps=2), run, "--steps", "8"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "2 ranks × batch 2 × 2 accumulated = global batch 8" in p.stdout
    got, want = losses(run), losses(single)
    assert sorted(got) == list(range(1, 9))
    for step, loss in got.items():
        assert loss == pytest.approx(want[step], rel=1e-5), f"step {step}"


def test_ctrl_c_then_resume_under_mpirun_continues_exactly(single, tmp_path):
    run = tmp_path / "run"
    cfg = config(tmp_path, max_steps=40, checkpoint_every=1000)
    p = start_mpi(2, train_argv(cfg, run))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.05)
    while time.monotonic() < deadline and len(losses(run)) < 5:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    saved = sorted((run / "checkpoints").iterdir())
    assert len(saved) == 1, saved
    stopped = json.loads((saved[0] / "state.json").read_text())["step"]
    assert 5 <= stopped < 40
    p = run_mpi(2, train_argv(cfg, run, "--resume"))
    assert p.returncode == 0, p.stderr[-2000:]
    got, want = losses(run), losses(single)
    assert sorted(got) == list(range(1, 41))
    np.testing.assert_allclose([got[s] for s in range(1, 41)], [want[s] for s in range(1, 41)], rtol=1e-5)
    # another rank count would change the global batch: one line says why and what to do
    p = subprocess.run(train_argv(cfg, run, "--resume", "--steps", "1"), env=env(), capture_output=True, text=True)
    assert p.returncode == 2 and "mpirun -np 2" in p.stderr and p.stderr.count("loop: error") == 1


def this_job(proc, run: Path) -> bool:
    """A rank of the job training into `run` (other jobs, e.g. other test sessions, may be running)."""
    cmdline = proc.info["cmdline"] or []
    return "loop_tui" in cmdline and str(run) in cmdline


def test_a_killed_rank_ends_the_job_and_keeps_the_checkpoint(tmp_path):
    import psutil

    run = tmp_path / "run"
    cfg = config(tmp_path, max_steps=100000, checkpoint_every=5)
    p = start_mpi(2, train_argv(cfg, run))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((run / "checkpoints").glob("step_*")):
        time.sleep(0.05)
    victim = None
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if this_job(proc, run) and proc.environ().get("PMI_RANK") == "1":
                victim = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    assert victim is not None, "rank 1 not found"
    victim.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    out, err = p.communicate(timeout=60)
    assert time.monotonic() - t0 < 30
    assert p.returncode != 0
    # one line names the dead rank (rank_watch.py, which mpiexec's clean-up does not kill); rank 0 beside it
    # when the launcher ended it before the watcher woke (poll() cannot say which ended first)
    lines = [x for x in err.splitlines() if x.startswith("loop: error")]
    assert len(lines) == 1 and f"rank 1 (PID {victim.pid}" in lines[0] and "is intact" in lines[0], err[-2000:]
    from loop_tui.train import checkpoint

    newest = checkpoint.load_newest_intact(run, print)
    assert newest.state["step"] >= 5 and all(np.isfinite(v).all() for v in newest.params.values())


def run_mpi_or_kill(n: int, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """run_mpi for a job that might hang: on timeout every process it started is killed."""
    p = subprocess.Popen(
        mpi(n, argv), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"the job hung; it printed:\n{err[-2000:]}") from None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def test_a_failed_checkpoint_write_ends_every_rank_in_one_line(tmp_path):
    """Rank 0's save failed (a full disk, here a file where the checkpoints folder must go) and
    its clean-up save started a collective while rank 1 was in the next step's all-reduce: the
    job hung forever, silent. Now every rank learns the save failed and stops at once."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("not a folder")
    p = run_mpi_or_kill(2, train_argv(config(tmp_path, max_steps=100000, checkpoint_every=5), run))
    assert p.returncode == 4, p.stderr[-2000:]
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("loop: error: ") and "cannot write checkpoint" in lines[0], p.stderr
    steps = [x for x in p.stdout.splitlines() if x.startswith("step")]
    assert steps[-1].startswith("step      5/")  # no step after the failed save


def test_a_refused_resume_says_so_once(tmp_path):
    """A resume refused on every rank (here: another global batch) printed the error once per rank,
    plus the launcher's MPI_Abort banners."""
    run = tmp_path / "run"
    cfg = config(tmp_path, max_steps=100000)
    subprocess.run(train_argv(cfg, run, "--steps", "2"), env=env(), check=True, capture_output=True, timeout=300)
    p = run_mpi_or_kill(2, train_argv(cfg, run, "--resume", "--steps", "2"))
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "global batch 4" in lines[0] and "mpirun -np 1" in lines[0], p.stderr


def test_every_rank_stops_after_the_same_step_when_rank_zeros_clock_spends_the_budget(tmp_path):
    """The ranks' clocks differ: rank 0's decides, carried to the others by the next step's
    all-reduce (its first step spends a budget of 6e-8 s, so all stop after step 2). A rank that
    trained on would hang the checkpoint's weight comparison or fail it."""
    run = tmp_path / "run"
    p = run_mpi_or_kill(2, train_argv(config(tmp_path, max_steps=100000, budget_minutes=1e-9), run))
    assert p.returncode == 0, p.stderr[-2000:]
    state = json.loads((sorted((run / "checkpoints").glob("step_*"))[-1] / "state.json").read_text())
    assert state["step"] == 2 and state["reason"] == "budget"
    assert [x for x in p.stdout.splitlines() if "time budget" in x] == [
        f"time budget of 1e-09 min reached at step 2 of 100000; the best, val loss {state['val_loss']:.4f} "
        f"at step 2, is {run / 'checkpoints' / 'best'}"
    ]


def test_started_by_mpirun_without_mpi4py_says_how_to_install(tmp_path):
    """The launcher's environment with mpi4py hidden: one line naming the extra."""
    from loop_tui import cli

    blocker = tmp_path / "mpi4py"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('hidden for this test')\n")
    p = subprocess.run(
        train_argv(config(tmp_path), tmp_path / "run"),
        env={**env(), "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "pip install -e '.[mpi]'" in p.stderr and "Traceback" not in p.stderr
    assert cli  # imported in-process too: single-process use never touches MPI


# ---------------------------------------------------------------- rank 0's dashboard on mpiexec's terminal
@pytest.fixture
def terminal(tmp_path):
    """A 120×40 tmux terminal running a command; yields (start(cmd), session)."""
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed")
    session = f"loop-mpi-{os.getpid()}"

    def start(argv: list[str]) -> None:
        line = " ".join(f"'{a}'" for a in argv)
        prefix = f"cd {tmp_path} && export RAYON_NUM_THREADS=1 LOOP_CACHE_DIR={os.environ['LOOP_CACHE_DIR']}; "
        cmd = prefix + f"{line}; echo EXIT=$?; sleep 120"
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", cmd], check=True)

    yield start, session
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_rank_zero_shows_the_dashboard_on_mpiexecs_terminal_and_q_saves(terminal, tmp_path):
    start, session = terminal
    run = tmp_path / "run"
    argv = [a for a in train_argv(config(tmp_path, max_steps=100000, checkpoint_every=1000), run) if a != "--no-tui"]
    start(mpi(2, argv))
    pane = wait_pane(session, lambda s: "MPI 2 ranks · per rank" in s and "all-reduce" in s and "step" in s)
    assert "Quit" in pane and "tok/s now" in pane  # the app (either layout), not progress lines
    subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
    pane = wait_pane(session, lambda s: "EXIT=" in s)
    assert "EXIT=0" in pane and "stopped at step" in pane, pane
    assert " icanon " in pane_tty_settings(session) + " "
    from loop_tui.train import checkpoint

    assert checkpoint.latest(run) is not None
    assert json.loads((checkpoint.latest(run) / "state.json").read_text())["world_size"] == 2


def test_killed_rank_under_the_dashboard_gives_the_terminal_back_and_names_it(terminal, tmp_path):
    import psutil

    start, session = terminal
    run = tmp_path / "run"
    argv = [a for a in train_argv(config(tmp_path, max_steps=100000, checkpoint_every=5), run) if a != "--no-tui"]
    start(mpi(2, argv))
    wait_pane(session, lambda s: "MPI 2 ranks · per rank" in s)
    victim = next(
        p for p in psutil.process_iter(["cmdline"]) if this_job(p, run) and p.environ().get("PMI_RANK") == "1"
    )
    victim.send_signal(signal.SIGKILL)
    pane = wait_pane(session, lambda s: "EXIT=" in s, timeout=60)
    assert f"rank 1 (PID {victim.pid}" in pane and "EXIT=0" not in pane, pane
    assert "Quit" not in pane  # the alternate screen is gone: the shell's own lines show
    assert " icanon " in pane_tty_settings(session) + " "  # line editing and echo are back


def pane_tty_settings(session: str) -> str:
    tty = subprocess.run(["tmux", "display", "-p", "-t", session, "#{pane_tty}"], capture_output=True, text=True)
    return subprocess.run(["stty", "-F", tty.stdout.strip(), "-a"], capture_output=True, text=True).stdout
