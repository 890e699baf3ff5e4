"""`loop plan`: a config sized for the corpus, the machine and the budget, or a one-line refusal."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from loop_tui import cli, plan
from loop_tui.config import load_config
from loop_tui.train.prepare import check_memory


@pytest.fixture
def small_grid(monkeypatch):
    """A grid and one probe small enough to plan in seconds on any machine."""
    monkeypatch.setattr(plan, "WIDTHS", (64, 128))
    monkeypatch.setattr(plan, "DEPTHS", (1, 2))
    monkeypatch.setattr(plan, "CONTEXTS", (32, 64))
    monkeypatch.setattr(plan, "VOCABS", (512, 1024))
    monkeypatch.setattr(plan, "BATCHES", (4, 8))
    monkeypatch.setattr(plan, "PROBES", ((64, 1, 32, 512, 4),))


@pytest.fixture
def text_folder(tmp_path):
    from pydoc_data.topics import topics

    folder = tmp_path / "articles"
    folder.mkdir()
    for name, text in sorted(topics.items())[:60]:
        (folder / f"{name}.txt").write_text(text)
    return folder


def test_plan_writes_a_config_that_validates_fits_memory_and_trains(small_grid, text_folder, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert cli.main(["plan", "--data", str(text_folder), "--minutes", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for word in ("tokens", "tokens/s", "parameters", "passes", "dropout"):
        assert word in printed
    cfg = load_config(str(out))
    assert cfg.budget_minutes == 2
    assert cfg.data == str(text_folder.resolve())
    assert cfg.d_model in plan.WIDTHS and cfg.num_layers in plan.DEPTHS and cfg.vocab_size in plan.VOCABS
    assert cfg.max_length in plan.CONTEXTS and cfg.batch_size in plan.BATCHES
    assert cfg.max_steps >= 1 and cfg.eval_every <= cfg.max_steps
    assert 0 <= cfg.dropout <= plan.MAX_DROPOUT and "not written" not in printed
    check_memory(cfg, force=False)  # raises if the run would be refused
    run = tmp_path / "run"
    assert cli.main(["train", str(out), "--no-tui", "--steps", "2", "--out", str(run)]) == 0
    assert (run / "metrics.jsonl").exists()


@pytest.mark.parametrize("minutes", ["0", "-5", "nan", "inf", "1e9", "0.01"])
def test_nonsense_budgets_are_refused_in_one_line(minutes, text_folder, tmp_path, capsys):
    assert (
        cli.main(["plan", "--data", str(text_folder), f"--minutes={minutes}", "--out", str(tmp_path / "p.json")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("loop: error: --minutes") and err.count("\n") == 1
    assert not (tmp_path / "p.json").exists()


def test_empty_and_unusable_folders_are_refused_in_one_line(small_grid, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = tmp_path / "binary"
    binary.mkdir()
    (binary / "blob.bin").write_bytes(b"\0\1\2" * 100)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "a.txt").write_text("hello world\n")
    for folder, why in ((empty, "empty"), (binary, "binary"), (tiny, "too little text"), (tmp_path / "nope", "exist")):
        assert cli.main(["plan", "--data", str(folder), "--minutes", "5", "--out", str(tmp_path / "p.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("loop: error:") and why in err and err.count("\n") == 1


def test_a_smaller_vocabulary_is_the_prefix_of_a_larger_one(text_folder):
    from loop_tui.data.corpus import load_corpus
    from loop_tui.data.tokens import train_tokenizer

    corpus = load_corpus(text_folder)
    text = "".join(corpus.pieces(corpus.docs[3]))
    cut = plan.smaller_vocabulary(train_tokenizer(corpus, 1024), 600)
    trained = train_tokenizer(corpus, 600)
    assert cut.get_vocab_size() == 600
    assert cut.encode(text).ids == trained.encode(text).ids


def test_repeated_data_is_worth_less_and_dropout_rises_with_passes():
    assert plan.effective_data(0.5, 1.0) == 0.5  # under one pass: all new
    four = plan.effective_data(4.0, 1.0)
    assert 0.9 * 4 < four < 4  # ~4 passes are nearly as good as new text
    assert plan.effective_data(64.0, 1.0) < 1 + plan.R_STAR  # and repetition saturates
    drops = [plan.dropout_for(p) for p in (0.5, 2, 4, 8, 16, 1000)]
    assert drops[0] == drops[1] == 0.0 and drops == sorted(drops) and drops[-1] == plan.MAX_DROPOUT


def test_plans_over_the_epoch_cap_are_left_out():
    def cand(d: int, step_s: float) -> plan.Candidate:
        return plan.Candidate(plan.shape(d, 2, 64, 512, 8), step_s, train_bytes=10_000, bytes_per_token=2.0)

    fast_small, slow_big = cand(64, 0.01), cand(256, 1.0)
    seconds = 100.0
    assert fast_small.passes(seconds) > plan.EPOCH_CAP >= slow_big.passes(seconds)
    assert plan.choose([fast_small, slow_big], seconds) == (slow_big, False)
    chosen, capped = plan.choose([fast_small], seconds)  # nothing under the cap: the run stops early
    assert chosen is fast_small and capped


def test_speed_model_fits_overhead_and_rate():
    a, b = plan.shape(64, 1, 32, 512, 4), plan.shape(128, 2, 64, 1024, 8)
    truth = plan.SpeedModel(0.002, 5e9, [])
    fitted = plan.SpeedModel.fit([(a, truth.step_s(a)), (b, truth.step_s(b))])
    assert math.isclose(fitted.overhead_s, 0.002, rel_tol=1e-6) and math.isclose(fitted.flops_per_s, 5e9, rel_tol=1e-6)


async def test_dashboard_header_counts_the_budget_down():
    from loop_tui.ui.app import LoopApp
    from loop_tui.ui.dashboard import DashboardScreen

    from .test_ui import FIXED_CACHES, recorded_kernels, recorded_state, screen_text

    state = recorded_state()
    state.elapsed_s = 65.0
    cfg = load_config("smoke").replace(budget_minutes=5.0)
    app = LoopApp(
        lambda: DashboardScreen(None, FIXED_CACHES, state=state, live=False, cfg=cfg, kernel_stats=recorded_kernels())
    )
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        header = screen_text(app).splitlines()[0]
        assert "budget 5 min · 3:55 left" in header


def test_plan_keeps_to_the_memory_there_is(small_grid, text_folder, monkeypatch):
    """With room for only the smallest shapes, the plan is one of them, and the trainer accepts it."""
    from types import SimpleNamespace

    import psutil

    from loop_tui.analyze import training_memory
    from loop_tui.train.prepare import MEMORY_HEADROOM

    # a machine as fast as its FLOPs say (deterministic): with memory to spare it plans a larger shape
    monkeypatch.setattr(plan, "time_steps", lambda cfg, backend, *a: plan.step_flops(cfg) / 5e9 + 1e-3)
    room = training_memory(plan.shape(64, 1, 64, 512, 8))["total"] / MEMORY_HEADROOM
    unlimited = plan.make_plan(str(text_folder), 2, say=lambda m: None).cfg
    assert training_memory(unlimited)["total"] > MEMORY_HEADROOM * room
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=room))
    cfg = plan.make_plan(str(text_folder), 2, say=lambda m: None).cfg
    assert training_memory(cfg)["total"] <= MEMORY_HEADROOM * room
    check_memory(cfg, force=False)


# ---------------------------------------------------------------- the budget stops `loop train`
def test_training_stops_after_the_step_that_spends_the_budget_and_resume_trains_on_only_when_told(tmp_path, capsys):
    from loop_tui.train import checkpoint

    from .test_reliability import resume_cli, run_cli, write_config

    # 6e-8 s: the first step always spends it, so the run stops after exactly one of its 1000 steps
    config = write_config(tmp_path, max_steps=1000, eval_every=500, checkpoint_every=500, budget_minutes=1e-9)
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", config, "--no-tui", "--out", str(run))
    assert code == 0 and "Traceback" not in err
    state = checkpoint.load(checkpoint.latest(run)).state
    assert state["step"] == 1 and state["reason"] == "budget"
    best = checkpoint.load(run / "checkpoints" / "best").state  # evaluated before stopping
    assert best["step"] == 1 and best["val_loss"] == state["val_loss"]
    budget_lines = [x for x in (out + err).splitlines() if "time budget" in x]
    assert budget_lines == [
        f"time budget of 1e-09 min reached at step 1 of 1000; the best, val loss {best['val_loss']:.4f} at step 1, "
        f"is {run / 'checkpoints' / 'best'}"
    ]
    assert f"Train on with: loop train {config} --out {run} --resume --set budget_minutes=M" in out
    code, out, _ = run_cli(capsys, "runs", str(run), "--json")
    assert code == 0 and orjson.loads(out)[0]["status"] == "out of time"

    # resumed, the budget is spent already: nothing trained, how to train on, exit 0
    code, out, err = run_cli(capsys, "train", config, "--no-tui", "--out", str(run), "--resume")
    assert code == 0 and "Traceback" not in err
    assert "time budget of 1e-09 min is spent" in out + err and "--set budget_minutes=null" in out + err
    assert checkpoint.load(checkpoint.latest(run)).state["step"] == 1

    code, out, err = resume_cli(capsys, run, config, 2, "--set", "budget_minutes=null")
    assert code == 0 and "time budget" not in out + err
    assert checkpoint.load(checkpoint.latest(run)).state["step"] == 3


def test_the_loss_model_is_the_fit_of_the_committed_runs():
    """plan.py's constants are what `benchmarks/plan_sweep.py --fit` gives for plan_sweep.jsonl."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import plan_sweep

    e, a, b, b_crit, rms = plan_sweep.fit(plan_sweep.fitted_rows())
    assert (round(e, 4), round(a, 1), round(b, 2), b_crit) == (plan.E, plan.A, plan.B, plan.B_CRIT)
    assert rms < 0.05
    assert round(plan_sweep.beta2_gain(plan_sweep.scored_rows()), 4) == plan.BETA2_GAIN
    most, longer = plan_sweep.long_runs_above_fit(plan_sweep.scored_rows())
    assert float(f"{most:.2g}") == plan.FITTED_FLOP
    assert tuple((float(f"{f:.3g}"), round(x, 3)) for f, x in longer) == plan.LONG_RUNS_ABOVE_FIT


def test_a_plan_with_more_compute_than_the_fitted_runs_says_its_forecast_is_too_low(
    small_grid, text_folder, monkeypatch
):
    monkeypatch.setattr(plan, "time_steps", lambda cfg, backend, *args: plan.step_flops(cfg) / 5e9 + 1e-3)
    made = plan.make_plan(str(text_folder), 2, say=lambda m: None)
    flop = 6 * made.chosen.params * made.tokens
    monkeypatch.setattr(plan, "FITTED_FLOP", flop * 1.01)
    assert not any(line.startswith("forecast:") for line in made.explain())
    monkeypatch.setattr(plan, "FITTED_FLOP", flop * 0.99)
    said = [line for line in made.explain() if line.startswith("forecast:")]
    assert len(said) == 1 and f"expect more than {made.predicted_bits_per_byte:.2f}" in said[0], said
    assert f"{flop:.1e} FLOP".replace("e+", "e") in said[0] and "0.12 to 0.26 bits per byte" in said[0]


def test_a_plan_trains_at_the_planned_beta2_and_predicts_its_measured_gain():
    recipe = plan.recipe(500, 256, 2.0, 5.0)
    assert recipe["beta2"] == plan.BETA2 != plan.FITTED_BETA2
    cand = plan.Candidate(plan.shape(256, 2, 256, 16000, 8), 0.5, train_bytes=2_000_000, bytes_per_token=4.4)
    fitted = plan.E + plan.A / cand.params**plan.ALPHA
    seen = plan.effective_data(cand.tokens(300.0) * 4.4, 2_000_000) / (1 + cand.cfg.tokens_per_step / plan.B_CRIT)
    assert cand.predicted_bits_per_byte(300.0) == pytest.approx(fitted + plan.B / seen**plan.BETA + plan.BETA2_GAIN)


def test_a_batch_past_the_critical_size_is_worth_less_and_few_steps_are_left_out():
    def cand(batch: int, step_s: float) -> plan.Candidate:
        return plan.Candidate(plan.shape(256, 4, 128, 16000, batch), step_s, train_bytes=2_000_000, bytes_per_token=4.4)

    seconds = 300.0
    small, big = cand(8, 0.6), cand(64, 4.8)  # the same tokens per second
    assert small.tokens_per_s == big.tokens_per_s
    assert small.predicted_bits_per_byte(seconds) < big.predicted_bits_per_byte(seconds)
    few = cand(8, seconds / (plan.MIN_STEPS - 1))
    few.predicted_bits_per_byte = lambda seconds: 0.0  # type: ignore[method-assign]  # the best, but too few steps
    assert plan.choose([few, small], seconds) == (small, False)
    assert plan.choose([few], seconds) == (few, False)  # nothing has enough: the best of what there is


def test_a_choice_timed_far_slower_than_predicted_is_timed_again_and_the_faster_kept(
    small_grid, text_folder, monkeypatch
):
    fast = lambda cfg: plan.step_flops(cfg) / 5e9 + 1e-3  # a machine as fast as its FLOPs say
    timings = []

    def time_steps(cfg, backend, *args):
        timings.append(cfg)
        slowed = len(timings) == 2  # the choice's first timing (after the one probe) was slowed down
        return fast(cfg) * (3 if slowed else 1)

    monkeypatch.setattr(plan, "time_steps", time_steps)
    said = []
    made = plan.make_plan(str(text_folder), 2, say=said.append)
    assert len(timings) == 3 and timings[1] == timings[2] == made.chosen.cfg, timings
    assert made.chosen.step_s == fast(made.chosen.cfg)
    assert any("when timed again" in line for line in said), said


def test_the_eta_is_the_budget_left_when_that_ends_the_run_first(tmp_path):
    from loop_tui.train.trainer import Trainer

    t = Trainer(load_config("smoke").replace(max_steps=10**9, budget_minutes=10.0, log_every=1), tmp_path / "run")
    t.setup()
    t.total_steps = t.cfg.max_steps
    stats = t.train_step()
    assert stats.eta_s == pytest.approx(600.0 - t.elapsed)
    t.close()


def test_a_budget_past_a_week_is_refused_in_one_line_and_a_long_one_shown_in_hours(tmp_path, capsys):
    from loop_tui.ui.dashboard import budget_line

    from .test_reliability import one_line_error, run_cli

    code, _, err = run_cli(
        capsys, "train", "smoke", "--no-tui", "--out", str(tmp_path / "r"), "--set", "budget_minutes=1e308"
    )
    assert code == 2 and "budget_minutes" in one_line_error(err) and "a week" in one_line_error(err)
    assert budget_line(10080, 0) == "budget 10080 min · 168:00:00 left"
    assert budget_line(30, 61.5) == "budget 30 min · 28:58 left"


def test_plan_refuses_an_unusable_out_before_planning(text_folder, tmp_path, capsys, monkeypatch):
    def no_planning(*args, **kwargs):
        raise AssertionError("--out must be checked before planning")

    monkeypatch.setattr(plan, "make_plan", no_planning)
    for out, why in (
        ("", "give a file name"),
        (str(text_folder), "is a folder"),
        (str(tmp_path / "nowhere" / "p.json"), "does not exist"),
    ):
        assert cli.main(["plan", "--data", str(text_folder), "--minutes", "5", "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("loop: error: --out") and why in err and err.count("\n") == 1


def test_ctrl_c_during_planning_says_nothing_was_written(text_folder, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plan, "make_plan", interrupted)
    out = tmp_path / "p.json"
    assert cli.main(["plan", "--data", str(text_folder), "--minutes", "5", "--out", str(out)]) == 130
    assert capsys.readouterr().err == "planning stopped; nothing was written\n" and not out.exists()
