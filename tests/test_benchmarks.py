"""`make bench` runs to the end: every module under benchmarks/ imports, every pytest benchmark runs
once at the smoke config's shapes, and every script-style table runs its smallest case. Nothing here
reads a timing: a case passes when it runs to the end."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "conftest")
SCRIPTS = sorted(m for m in MODULES if "\ndef main(" in (BENCH / f"{m}.py").read_text())

# the smallest run of each script-style table (Makefile's bench target runs them at full size) and
# the optional module it cannot run without, or why it has none
SMALLEST: dict[str, list[tuple[list[str], str | None]] | str] = {
    "attention_table": [
        (["--threads", "1", "--batch", "1", "--heads", "2", "--head-size", "8", "--seq", "16", "--repeat", "1"], None)
    ],
    "bf16_weight_copy": [(["--config", "smoke", "--threads", "1"], None)],
    "dashboard_overhead": [(["--config", "smoke", "--steps", "3", "--rounds", "1"], None)],
    "gemm_paths": "its shapes are fixed where the paths it compares differ (C over 32 MiB, 4096-row weight "
    "gradients) and it then times whole wiki_cache_optimized steps: minutes, with no smaller case",
    "gemm_table": [
        (["--threads", "1", "--config", "smoke"], None),
        (["--threads", "1", "--config", "smoke", "--precision", "bf16"], "torch"),
    ],
    "generate_table": [
        (["--shape", "wiki_cache_optimized", "--tokens", "2", "--repeat", "1", "--uncached-tokens", "1"], "torch")
    ],
    "mpi_scaling": [(["--config", "smoke", "--steps", "1"], None)],
    "mpi_table": [(["--config", "smoke", "--steps", "3", "--rounds", "1"], "mpi4py")],
    "opencl_table": [(["--config", "smoke", "--steps", "1"], "pyopencl")],
    "plan_sweep": [(["--fit"], None)],
    "quality_table": "its smallest case needs a folder of articles: see test_quality_table_scores_every_row…",
    "tokenizer_memory": [(["--mb", "1", "--files", "10", "--vocab", "300"], None)],
    "train_table": [(["--config", "smoke", "--steps", "1", "--threads", "1", "--precision", "fp32"], None)],
}


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAYON_NUM_THREADS": "1", **env}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("module", MODULES)
def test_every_benchmark_module_imports(module, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    importlib.import_module(module)


def test_every_script_has_a_smallest_case_or_a_reason():
    assert sorted(SMALLEST) == SCRIPTS


def test_pytest_benchmarks_run_once_at_the_smoke_shapes():
    out = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(BENCH), "--benchmark-disable"],
        LOOP_BENCH_CONFIGS="smoke",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout, out.stdout[-1000:]


@pytest.mark.slow  # seconds each, most of it starting processes and the tables' own pauses
@pytest.mark.parametrize(
    "script,argv,needs",
    [
        pytest.param(s, *case, id=f"{s}{i or ''}")
        for s in sorted(SMALLEST)
        for i, case in enumerate(SMALLEST[s] if isinstance(SMALLEST[s], list) else [([], None)])
    ],
)
def test_script_runs_its_smallest_case(script, argv, needs):
    why = SMALLEST[script]
    if isinstance(why, str):
        pytest.skip(why)
    if needs:  # the script would print that it is missing and stop, which proves nothing
        pytest.importorskip(needs, reason=f"{script} {' '.join(argv)} needs {needs}, which is not installed")
    if script == "opencl_table":
        from loop_tui.opencl.device import all_devices

        if not all_devices():
            pytest.skip("no OpenCL platform (pip install 'pyopencl[pocl]')")
    out = run([sys.executable, str(BENCH / f"{script}.py"), *argv])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.strip(), out.stderr[-3000:]


@pytest.mark.slow  # about a minute: a plan, two budgets of (a), (b) and (c), and a `loop eval` per row and curve point
def test_quality_table_scores_every_row_on_a_small_corpus_and_continues_a_table(tmp_path):
    """quality_table at its smallest: the default seed and PyTorch when installed, every row scored (the
    script exits non-zero when one is not). One budget, then --continue with a second: the first budget's
    rows are reused as they were, the seed's run is resumed (more steps, not a new run), and a table from
    another CPU is refused in one line."""
    import json
    from pydoc_data.topics import topics

    articles = tmp_path / "articles"
    articles.mkdir()
    for name, text in sorted(topics.items())[:40]:
        (articles / f"{name}.txt").write_text(text)
    argv = [str(BENCH / "quality_table.py"), "--wiki", str(articles), "--seeds", "default", "--threads", "1"]
    argv += ["--work", str(tmp_path / "work")]
    first = run([sys.executable, *argv, "--minutes", "0.1"])
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = run([sys.executable, *argv, "--minutes", "0.1,0.15", "--continue"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def table(stdout: str) -> list[list[str]]:
        """The table's rows (a shape column: not the curves' or the verdicts' lines), split at spaces."""
        rows = [line.split() for line in stdout.splitlines() if line.strip().startswith(("0.1m", "0.15m"))]
        return [r for r in rows if any(word.startswith("ctx") for word in r)]

    rows = table(out.stdout)
    names = {(r[0], r[1], r[2]) for r in rows}
    want = {(m, "(a)", "loop") for m in ("0.1m", "0.15m")} | {(m, "(b)", "default") for m in ("0.1m", "0.15m")}
    try:
        import torch  # noqa: F401

        # (c) twice: with (a)'s hyperparameters, and with nanoGPT's small-data values
        want |= {(m, "(c)", name) for m in ("0.1m", "0.15m") for name in ("PyTorch", "PyTorch,")}
        nanogpt = [r for r in rows if r[2] == "PyTorch,"]
        assert all("0.001," in r and "0.99," in r and "0.20," in r for r in nanogpt), out.stdout
        assert sum("of (c) PyTorch" in line for line in out.stdout.splitlines()) == 2, out.stdout
    except ImportError:
        pass
    assert names == want, out.stdout
    assert not any("nan" in r for r in rows), out.stdout
    assert [r for r in rows if r[0] == "0.1m"] == table(first.stdout), first.stdout + out.stdout
    recorded = (tmp_path / "work" / "rows.jsonl").read_text().splitlines()
    assert len(recorded) == len(want), recorded  # each row measured once
    # the seed's one run: stopped at 0.1 minutes, then resumed to 0.15 (more steps, not a new run)
    steps = [int(r[-2]) for r in rows if r[1] == "(b)"]
    assert steps[0] < steps[1], out.stdout

    other = [json.dumps({**json.loads(line), "cpu": "CPU: another one"}) for line in recorded]
    (tmp_path / "work" / "rows.jsonl").write_text("\n".join(other) + "\n")
    refused = run([sys.executable, *argv, "--minutes", "0.1,0.15", "--continue"])
    assert refused.returncode != 0
    assert "another one" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr


def test_plan_sweep_trains_scores_and_records_a_shape(tmp_path):
    """plan_sweep at its smallest: one tiny shape for a few seconds on a small corpus, one JSON line with
    a finite held-out bits per byte, in the results file it was given (not the committed one)."""
    import json
    import math
    from pydoc_data.topics import topics

    articles = tmp_path / "articles"
    articles.mkdir()
    for name, text in sorted(topics.items())[:40]:
        (articles / f"{name}.txt").write_text(text)
    results = tmp_path / "sweep.jsonl"
    argv = ["--wiki", str(articles), "--minutes", "0.05", "--threads", "1", "--results", str(results)]
    out = run([sys.executable, str(BENCH / "plan_sweep.py"), *argv, "--work", str(tmp_path / "work"), "64,1,32,2048,8"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["shape"] == [64, 1, 32, 2048, 8] and not rows[0]["failed"], rows
    assert math.isfinite(rows[0]["bits_per_byte"]) and rows[0]["steps"] >= 1, rows
