"""The training loop: data -> model -> AdamW, with evaluation, samples, metrics and checkpoints.

A Trainer is driven from one thread (the kernels' OpenMP pool belongs to it). Other threads talk
to it only through `request()` (pause, resume, save, sample, quit) and the `on_event` callback it
calls with ("step" | "log" | "eval" | "sample" | "checkpoint" | "info" | "warning" | "done", dict).
What it writes to disk is run_folder.py's business, the memory check and tokens prepare.py's, the
weight update optimizer.py's; setup() reads as the phases of a start, run() as the loop.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..backend import make_backend, resolve_precision
from ..config import Config, ConfigError
from ..data.batches import BatchSampler, validation_windows, window_batches
from ..data.corpus import Corpus, load_corpus
from ..errors import NonFiniteError, StorageError
from ..model.gpt import GPT
from ..model.layout import parameter_count, training_flops_per_token
from . import checkpoint, run_folder
from .distributed import World, connect, stopped_together
from .optimizer import AdamW
from .prepare import ProgressThrottle, check_memory, prepare_tokens
from .sample import generate

if TYPE_CHECKING:
    from ..hf import HFModel
    from .tensorboard import TensorBoardWriter

MODEL_FIELDS = ("d_model", "num_heads", "num_layers", "d_ff", "max_length", "vocab_size", "n_positions")
# settings a resumed run may change; each change is printed and appended to config_history.jsonl
FIXED_FIELDS = ("name", "description", "data", "text_field", "backend", "threads", "seed", "init_from")
TRAINING_FIELDS = tuple(  # the rest of Config but names, paths and seed (which cannot change a resumed run)
    f.name for f in fields(Config) if f.name not in MODEL_FIELDS + FIXED_FIELDS
)
WARMUP_STEPS_EXCLUDED = 2  # first steps after (re)start: page faults, thread pool start, caches
SPEED_WINDOW = 10


@dataclass
class StepStats:
    step: int
    loss: float
    lr: float
    grad_norm: float
    step_time_s: float
    tokens_per_s: float  # moving average over recent steps (warm-up excluded)
    mfu: float
    elapsed_s: float
    eta_s: float


class Trainer:
    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        data: str | None = None,
        resume: bool = False,
        threads: int | None = None,
        on_event: Callable[[str, dict], None] | None = None,
        device: str | None = None,
        force: bool = False,
        new_data: bool = False,
        world: World | None = None,
    ):
        """force: start even if the memory estimate exceeds the available RAM. new_data: on
        resume, accept a corpus other than the run's and encode it with the run's tokenizer."""
        self.cfg, self.run_dir, self.resume, self.device_name = cfg, Path(run_dir), resume, device
        self.force, self.new_data = force, new_data
        self.world = world or connect()  # MPI ranks when started by mpirun, else one process
        self.world_stop = False  # some rank was asked to stop: every rank stops after this step
        self.world_out_of_time = False  # rank 0's clock had spent the time budget: every rank stops after this step
        self.allreduce_s = 0.0  # seconds in the gradient all-reduce, last step
        self.abort = False  # set by a second Ctrl-C: stop without saving
        self.stop_event = threading.Event()  # a quit request: also stops data preparation
        self.training = False  # setup() is done: a quit request now saves a checkpoint
        self.data_path = data if data is not None else cfg.data
        self.text_field = cfg.text_field
        self.threads = threads or cfg.threads
        self.on_event = on_event or (lambda kind, payload: None)
        self.requests: queue.Queue[str] = queue.Queue()
        self.paused = False
        self.step = 0
        self.total_steps = cfg.max_steps  # run() sets the real target
        self.steps_this_run = 0  # steps since this process started (the first few are warm-up)
        self.elapsed = 0.0  # training seconds across resumes
        self.step_times: deque[float] = deque(maxlen=SPEED_WINDOW)
        self.last: StepStats | None = None
        self.last_sample = ""
        self.last_val_loss: float | None = None
        self.best: tuple[int, float] | None = None  # (step, val loss) of the lowest validation loss so far
        self.evals_since_best = 0  # evaluations since then (patience stops the run when it reaches it)
        # why run() ended, as its last checkpoint records it: final | early stop | budget | quit | interrupted
        self.stop_reason: str | None = None
        self.tensorboard: TensorBoardWriter | None = None  # on rank 0 with report_to "tensorboard"

    # ------------------------------------------------------------------ setup
    def _lock_run_dir(self) -> None:
        self._lock_file = run_folder.lock(self.run_dir)

    def close(self) -> None:
        """Release the run folder (run() calls this when it ends)."""
        for name in ("metrics_file", "_lock_file"):
            f = getattr(self, name, None)
            if f is not None and not f.closed:
                f.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def _settings_changed(self, saved: dict, step: int) -> None:
        if saved.get("seed") != self.cfg.seed:
            self.emit(
                "warning",
                message=f"seed {self.cfg.seed} has no effect on a resumed run: the weights and the "
                f"batch order continue from the checkpoint (seed {saved.get('seed')})",
            )
        changes = {
            f: (saved.get(f), getattr(self.cfg, f)) for f in TRAINING_FIELDS if saved.get(f) != getattr(self.cfg, f)
        }
        if not changes:
            return
        self.emit(
            "info",
            message="resuming with changed settings: "
            + ", ".join(f"{f} {old} → {new}" for f, (old, new) in changes.items()),
        )
        run_folder.append_config_history(self.run_dir, step, changes)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Everything before the first step. Under MPI, rank 0 alone locks the run folder, reads
        its checkpoint and prepares the tokenizer; the other ranks get the state, the tokenizer and
        the weights from it, so only rank 0 needs the run folder (every rank needs the data).
        A failure releases the run folder."""
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        loaded, run_tokenizer = self._open_run_folder()  # rank 0's checkpoint to resume, if any
        state = self.world.bcast_obj(loaded.state if loaded else None)
        if state is not None:
            self._continue_settings(state)
        corpus = self._read_corpus(state)
        init = self._prepare_tokens(corpus, state, run_tokenizer)
        self._build()
        self._set_weights(init, state, loaded)
        if state is not None:
            self._continue_progress(state, loaded.path if loaded else None)
        self._announce()
        if self.world.is_root:
            self.metrics_file = run_folder.open_metrics(self.run_dir)
        self.training = True

    def _open_run_folder(self) -> tuple[checkpoint.Checkpoint | None, Path | None]:
        """Rank 0 locks the run folder and, resuming, loads its checkpoint and restores the
        tokenizer: (the checkpoint, the run's tokenizer file), (None, None) for a new run."""
        loaded, run_tokenizer = None, None
        with self.world.together():  # a refusal: one line from rank 0, every rank ends with its exit code
            check_memory(self.cfg, self.force)  # from the config alone, before anything large is built or read
            if self.world.is_root:
                if self.resume and not self.run_dir.is_dir():  # before the lock would create it
                    raise checkpoint.CheckpointError(f"--resume: {self.run_dir}: no such run folder, so no checkpoint")
                self._lock_run_dir()
                if not self.resume:
                    run_folder.clear_unfinished_start(self.run_dir, lambda m: self.emit("warning", message=m))
                if self.resume:
                    loaded = self._load_for_resume()
                    run_tokenizer = run_folder.restore_tokenizer(self.run_dir, loaded)
                elif checkpoint.latest(self.run_dir) is not None:
                    raise ConfigError(
                        f"{self.run_dir}: already has checkpoints; pass --resume to continue it or --out for a new run"
                    )
                if self.cfg.report_to == "tensorboard":  # before data preparation: a missing package fails fast
                    from .tensorboard import TensorBoardWriter

                    self.tensorboard = TensorBoardWriter(self.run_dir, loaded.state["step"] if loaded else 0)
        return loaded, run_tokenizer

    def _continue_settings(self, state: dict) -> None:
        """A resumed run reads its own data unless given other, and keeps its seed."""
        saved = state["config"]
        if self.data_path is None:  # the run's own data, read as it was
            self.data_path = state.get("data")
            self.text_field = saved.get("text_field", self.text_field)
        if self.world.is_root:
            self._settings_changed(saved, state["step"])
        # the run's seed, not --seed's: config.json and every checkpoint keep recording the original
        self.cfg = self.cfg.replace(seed=saved.get("seed", self.cfg.seed))

    def _read_corpus(self, state: dict | None) -> Corpus:
        with self.world.together():
            corpus = load_corpus(self.data_path, self.text_field)
            if state is not None and state.get("corpus_digest") not in (None, corpus.digest) and not self.new_data:
                raise ConfigError(
                    f"--resume: {corpus.name} is not the text this run trained on (its corpus digest "
                    "differs); pass --new-data to continue training on it with the run's own tokenizer"
                )
        self.emit("info", message=corpus.summary())
        if self.data_path is None:
            self.emit("info", message="no --data given: training on Python's built-in documentation (pydoc topics)")
        if state is not None and state.get("corpus_digest") not in (None, corpus.digest):
            self.emit("info", message=f"continuing on new text ({corpus.name}) with the run's own tokenizer")
        return corpus

    def _prepare_tokens(self, corpus: Corpus, state: dict | None, run_tokenizer: Path | None) -> HFModel | None:
        """self.tokens and self.tokenizer_json; a fine-tune's HF folder (weights and tokenizer) when it starts one."""
        cfg, world = self.cfg, self.world
        t0 = time.perf_counter()
        init = None
        if state is None and cfg.init_from and world.is_root:  # a fine-tune: weights and tokenizer from HF
            from ..hf import read_folder

            init = read_folder(cfg.init_from)
            run_tokenizer = init.tokenizer_path
            self.emit("info", message=f"starting from {cfg.init_from} (weights and tokenizer)")
        # the run's tokenizer, held from here on: each checkpoint writes it from memory, so no file
        # this run started from (a rotated checkpoint, a cleaned cache) is needed again
        self.tokens, self.tokenizer_json = prepare_tokens(
            world, cfg, corpus, run_tokenizer, ProgressThrottle(self.emit), self.stop_event.is_set
        )
        self.corpus_digest = corpus.digest
        self.emit(
            "info",
            message=f"tokenizer: byte-level BPE, {self.tokens.vocab_used} ids "
            f"({time.perf_counter() - t0:.1f}s); {len(self.tokens.train):,} train tokens, "
            f"{len(self.tokens.val):,} validation tokens; {self.tokens.note}",
        )
        if self.tokens.vocab_used < cfg.vocab_size:
            self.emit(
                "warning",
                message=f"corpus supports only {self.tokens.vocab_used} BPE ids; "
                f"the other {cfg.vocab_size - self.tokens.vocab_used} embedding rows stay unused",
            )
        return init

    def _build(self) -> None:
        """The backend, the model, the optimizer and the batches."""
        cfg = self.cfg
        self.precision = resolve_precision(cfg.precision, cfg.backend)
        self.backend = make_backend(cfg.backend, self.threads, self.device_name, self.precision)
        if self.precision == "bf16" and not self.backend.native_bf16:
            self.emit(
                "warning",
                message=f"bf16 on this CPU runs the portable path (no AVX512-BF16 or AMX: "
                f"{self.backend.device}): inputs rounded to bf16 on fp32 FMAs, slower than fp32",
            )
        self.model = GPT(cfg, self.backend)
        self.sampler_model = GPT(cfg, self.backend, batch_size=1, params=self.model.params)
        self.optimizer = AdamW(self.backend, self.model.params.size)
        # one global batch of N x grad_accum_steps x batch_size windows per step, drawn as a single
        # process with that batch would draw it; rank r trains on rows [r * K * B, (r + 1) * K * B)
        self.sampler = BatchSampler(self.tokens.train, self.global_batch, cfg.max_length, cfg.seed + 1)
        # batches of the whole update (batch_size x grad_accum_steps): how a run splits its batch into
        # micro-batches leaves its validation set, and so its best checkpoint and patience, as they were
        val_starts = validation_windows(
            self.tokens.val, cfg.max_length, cfg.eval_batches * cfg.batch_size * cfg.grad_accum_steps
        )
        self.val = window_batches(self.tokens.val, val_starts, cfg.batch_size, cfg.max_length)

    def _set_weights(self, init: HFModel | None, state: dict | None, loaded: checkpoint.Checkpoint | None) -> None:
        """A fine-tune's HF weights, fresh ones, or (resuming) the checkpoint's weights and moments."""
        if init is not None:
            self.model.load_params(init.params)
        elif state is None:
            self.model.init_weights(self.cfg.seed)
        elif self.world.is_root:
            assert loaded is not None  # rank 0 loaded the checkpoint
            self.model.load_params(loaded.params)
            self.backend.write(self.optimizer.m, loaded.optimizer["m"])
            self.backend.write(self.optimizer.v, loaded.optimizer["v"])
        if self.world.size > 1:  # rank 0's weights and moments everywhere, then checked equal at each checkpoint
            for buf in (self.model.params.flat, self.optimizer.m, self.optimizer.v):
                self.world.bcast_(buf)

    def _continue_progress(self, state: dict, ckpt: Path | None) -> None:
        """Step, clock, batch stream and best checkpoint where the resumed checkpoint left them."""
        self.step, self.elapsed = state["step"], state["elapsed_s"]
        self.sampler.state = state["sampler"]
        self.last_val_loss = state.get("val_loss")
        if state.get("best"):
            self.best = (state["best"]["step"], state["best"]["val_loss"])
        self.evals_since_best = state.get("evals_since_best", 0)
        if self.world.is_root:
            run_folder.truncate_metrics(self.run_dir, self.step)
            self._reconcile_best()
        self.emit("info", message=f"resumed from {ckpt or 'the checkpoint'} at step {self.step}")

    def _reconcile_best(self) -> None:
        """checkpoints/best as the resumed checkpoint knows it (rank 0). A best of a later step was
        written by the run that was cut short (a kill -9, a crash) after this checkpoint: its steps
        are being trained again, so that best goes. The resumed step's own weights are the best when
        its state says so; a best of an earlier step that the later one replaced is lost, and the
        next evaluation starts a new one."""
        folder = checkpoint.best(self.run_dir)
        later = checkpoint.step_in(folder) if folder is not None else None
        if later is None or later <= self.step:
            return
        checkpoint.remove_best(self.run_dir)
        note = f"the best checkpoint of step {later} came after step {self.step}, where this run resumes: removed"
        if self.best is not None and self.best[0] == self.step:
            params, optim, state = self._checkpoint_contents("best")
            checkpoint.save_best(
                self.run_dir, self.step, params, optim, state, {checkpoint.TOKENIZER: self.tokenizer_json}
            )
            note += f"; step {self.step}'s weights are the best again"
        elif self.best is not None:
            note += f"; the best before it (step {self.best[0]}) was replaced by it, so the next evaluation starts anew"
            self.best, self.evals_since_best = None, 0
        self.emit("warning", message=note)

    def _announce(self) -> None:
        """The model's size and cost, the measured peaks MFU is against, and the MPI layout."""
        cfg, world = self.cfg, self.world
        self.flops_per_step = training_flops_per_token(cfg) * cfg.tokens_per_step * world.size
        # MFU is against the peak of the precision the GEMMs run in (summed over the ranks)
        own = {p: self.backend.peak_gflops(p) for p in ("fp32", self.precision)}  # None: not measured
        peaks = {p: world.sum([v])[0] for p, v in own.items() if v is not None}
        self.peak = peaks[self.precision] * 1e9 if peaks else None
        self.emit(
            "info",
            message=f"model: {parameter_count(cfg) / 1e6:.2f} M parameters, "
            f"{self.flops_per_step / 1e9:.1f} GFLOP per step; backend {self.backend.device}"
            + (
                "; measured peak "
                + ", ".join(f"{p} {v:.0f}" for p, v in peaks.items())
                + f" GFLOP/s (MFU against {self.precision})"
                if peaks
                else ""
            ),
        )
        if world.size > 1:
            world.watch_peers(self.run_dir)
            self.emit(
                "info",
                message=f"data parallel over MPI: {world.size} ranks × batch {cfg.batch_size}"
                + (f" × {cfg.grad_accum_steps} accumulated" if cfg.grad_accum_steps > 1 else "")
                + f" = global batch {self.global_batch}, {self.threads or 'all'} kernel threads per rank; gradients "
                "averaged by one Allreduce per step; ranks: "
                + ", ".join(f"{r} = PID {pid} on {host}" for r, (host, pid) in enumerate(world.peers)),
            )

    def _load_for_resume(self) -> checkpoint.Checkpoint:
        """The newest intact checkpoint, checked against this config and MPI world (rank 0)."""
        if checkpoint.latest(self.run_dir) is None:
            raise checkpoint.CheckpointError(f"{self.run_dir}: no checkpoint to resume from")
        loaded = checkpoint.load_newest_intact(self.run_dir, lambda m: self.emit("warning", message=m))
        saved = loaded.state["config"]
        for f in MODEL_FIELDS:
            if saved.get(f) != getattr(self.cfg, f):
                raise ConfigError(
                    f"{loaded.path}: checkpoint has {f}={saved.get(f)}, config has {getattr(self.cfg, f)}"
                )
        self._check_world(loaded.state)
        return loaded

    def _check_world(self, state: dict) -> None:
        """A resumed run keeps its global batch (the sampler's stream depends on it)."""
        ranks, B = state.get("world_size", 1), self.cfg.batch_size * self.cfg.grad_accum_steps
        before = state.get("global_batch", ranks * state["config"]["batch_size"])
        if before != self.global_batch:
            raise ConfigError(
                f"--resume: this run trained {ranks} rank(s) × batch {before // ranks} (global batch {before}); "
                f"{self.world.size} rank(s) × batch {B} would change the batches it draws: resume with "
                f"mpirun -np {ranks}, or a config whose batch_size × grad_accum_steps × ranks is {before}"
            )

    def emit(self, kind: str, **payload) -> None:
        if self.world.is_root:  # one voice for the whole world
            self.on_event(kind, payload)

    def request(self, command: str) -> None:
        """Thread-safe: 'pause', 'resume', 'toggle_pause', 'save', 'sample', 'quit'."""
        if command == "quit":
            self.stop_event.set()  # seen by data preparation, which runs before the request queue
        self.requests.put(command)

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step over every rank and micro-batch."""
        return self.world.size * self.cfg.grad_accum_steps * self.cfg.batch_size

    # ------------------------------------------------------------------ one step
    def train_step(self) -> StepStats:
        cfg, o, model = self.cfg, self.backend, self.model
        t0 = time.perf_counter()
        inputs, targets = self.sampler.next()
        world = self.world
        B, K = cfg.batch_size, cfg.grad_accum_steps
        loss = 0.0
        for micro in range(K):
            # this rank's micro-batch: its rows of the global batch, which also key its dropout masks
            first = (world.rank * K + micro) * B
            rows = slice(first, first + B)
            loss += model.forward_backward(inputs[rows], targets[rows], self.step, first, zero_grads=micro == 0) / K
        if world.size > 1:
            world.average_(model.gradients.flat)
            self.allreduce_s = world.take_allreduce_s()
            # the ranks' clocks differ: rank 0's (the one its checkpoints keep) decides the time
            # budget, as spent before this step, so every rank stops after the same step
            spent = world.is_root and self.out_of_time()
            total, stops, out_of_time = world.sum([loss, float(self.stop_event.is_set()), float(spent)])
            loss, self.world_stop, self.world_out_of_time = total / world.size, stops > 0, out_of_time > 0
        # the gradients hold the sum of K micro-batch means: the big batch's mean is 1/K of it
        grad_norm = math.sqrt(o.sum_squares(model.gradients.flat)) / K
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):  # before AdamW: the weights stay good
            what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
            raise NonFiniteError(
                f"step {self.step + 1}: {what}: training diverged and stopped; lower learning_rate "
                f"(now {cfg.learning_rate:g}) or raise warmup_steps (now {cfg.warmup_steps}); "
                f"the weights of step {self.step} are kept"
            )
        lr = self.optimizer.step(cfg, model, self.step, grad_norm)
        dt = time.perf_counter() - t0
        self.step += 1
        self.elapsed += dt
        self.steps_this_run += 1
        if self.steps_this_run > WARMUP_STEPS_EXCLUDED:
            self.step_times.append(dt)
        avg = float(np.mean(self.step_times)) if self.step_times else dt
        tps = cfg.tokens_per_step * world.size / avg
        stats = StepStats(
            self.step,
            loss,
            lr,
            grad_norm,
            dt,
            tps,
            self.flops_per_step / avg / self.peak if self.peak else float("nan"),
            self.elapsed,
            self._eta_s(avg),
        )
        self.last = stats
        return stats

    def _eta_s(self, step_s: float) -> float:
        """Seconds of training left: the steps left at `step_s` each, or the time budget's rest if sooner."""
        left = step_s * (self.total_steps - self.step)
        if self.cfg.budget_minutes is not None:
            left = min(left, max(0.0, self.cfg.budget_minutes * 60 - self.elapsed))
        return left

    def evaluate(self) -> float:
        """Mean loss over every token of the fixed validation windows (under MPI each rank scores
        every N-th batch)."""
        w = self.world
        total, count = 0.0, 0
        for x, y, rows in self.val[w.rank :: w.size]:
            total += float(np.sum(self.model.token_losses(x, y)[:rows], dtype=np.float64))
            count += rows * x.shape[1]
        summed, counted = w.sum([total, float(count)])
        self.last_val_loss = summed / counted
        return self.last_val_loss

    def sample(self, prompt: str = "", tokens: int | None = None) -> str:
        rng = np.random.default_rng(self.cfg.seed * 1000003 + self.step)
        self.last_sample = generate(
            self.sampler_model, self.tokens.tokenizer, prompt, tokens or self.cfg.sample_tokens, rng=rng
        )
        return self.last_sample

    # ------------------------------------------------------------------ persistence
    def _record(self, record: dict) -> None:
        if not self.world.is_root:
            return
        run_folder.append_metrics(self.run_dir, self.metrics_file, record, self.tensorboard)

    def save_checkpoint(self, reason: str) -> Path | None:
        """Rank 0 writes; under MPI every rank first checks that its weights equal rank 0's, and
        every rank learns whether the write failed, so all stop together (no rank left waiting in
        the next step's all-reduce while rank 0 reports)."""
        path = None
        with self.world.together():
            o, model = self.backend, self.model
            if self.world.size > 1 and not self.world.same_everywhere([o.to_numpy(model.params.flat)]):
                raise NonFiniteError(f"step {self.step}: the ranks' weights differ (SHA-256); not saved")
            if self.world.is_root:
                path = self._write_checkpoint(reason)
        return path

    def save_best(self) -> None:
        """checkpoints/best becomes this step's weights (rank 0 writes; every rank learns of a failure)."""
        with self.world.together():
            if self.world.is_root:
                self._check_run_dir()
                params, optim, state = self._checkpoint_contents("best")
                path = checkpoint.save_best(
                    self.run_dir, self.step, params, optim, state, {checkpoint.TOKENIZER: self.tokenizer_json}
                )
                self.emit("checkpoint", step=self.step, path=str(path), reason="best")

    def _checkpoint_contents(self, reason: str) -> tuple[dict, dict, dict]:
        o, model = self.backend, self.model
        params = model.export_params()
        optim = {"m": np.array(o.to_numpy(self.optimizer.m)), "v": np.array(o.to_numpy(self.optimizer.v))}
        state = {
            "step": self.step,
            "elapsed_s": self.elapsed,
            "sampler": self.sampler.state,
            "config": self.cfg.to_dict(),
            "data": self.data_path,
            "corpus_digest": self.corpus_digest,
            "tokenizer": "tokenizer.json",
            "val_loss": self.last_val_loss,
            "reason": reason,
            "precision": self.precision,
            "world_size": self.world.size,
            "global_batch": self.global_batch,
            "best": {"step": self.best[0], "val_loss": self.best[1]} if self.best else None,
            "evals_since_best": self.evals_since_best,
        }
        return params, optim, state

    def _write_checkpoint(self, reason: str) -> Path:
        self._check_run_dir()
        contents = self._checkpoint_contents(reason)
        path = run_folder.write_checkpoint(self.run_dir, self.cfg, self.step, contents, self.tokenizer_json)
        self.emit("checkpoint", step=self.step, path=str(path), reason=reason)
        return path

    def _can_save_after(self, failure: BaseException | None) -> bool:
        """Whether the clean-up save may run after `failure`. Under MPI a save is collective: only
        after a failure every rank met at the same point (a diverged step, a failed save or
        refusal settled by World.together); after one rank's own failure the others are in another
        collective, and rank 0's error ends them all. Never into a run folder that was deleted."""
        if failure is None:
            return True
        if self.world.size > 1 and not (isinstance(failure, NonFiniteError) or stopped_together(failure)):
            return False
        try:
            self._check_run_dir()
        except StorageError:
            return False
        return True

    def _check_run_dir(self) -> None:
        run_folder.check_not_deleted(self.run_dir, getattr(self, "_lock_file", None), self.step)

    # ------------------------------------------------------------------ the loop
    def run(self, steps: int | None = None, checkpoint_every: int | None = None) -> StepStats | None:
        """Train until max_steps (or `steps` more), a 'quit' request, or an error. Always saves
        a final checkpoint when anything was trained, and returns the last step's stats."""
        cfg = self.cfg
        self.total_steps = self.step + steps if steps else max(cfg.max_steps, self.step)
        if self.world.is_root:
            run_folder.write_run_record(self.run_dir, cfg, self.total_steps, self.precision, self.world.size)
        every = checkpoint_every or cfg.checkpoint_every
        self.steps_this_run = 0
        saved_at = self.step
        quit_requested = stopped_early = False
        out_of_time = self.out_of_time()  # a resumed run's clock is rank 0's, the same on every rank
        if out_of_time:
            self.emit(
                "info",
                message=f"time budget of {cfg.budget_minutes:g} min is spent ({self.elapsed / 60:.1f} min trained, "
                f"step {self.step}): nothing to train; train on with --set budget_minutes=M (more minutes) "
                "or --set budget_minutes=null (no budget)",
            )
        failed: BaseException | None = None
        try:
            while self.step < self.total_steps and not (quit_requested or out_of_time):
                # under MPI a quit request only sets stop_event: the next step's all-reduce carries it,
                # so every rank stops after the same step
                if self._handle_requests() and self.world.size == 1:
                    quit_requested = True
                    break
                if self.paused:
                    time.sleep(0.05)
                    continue
                if self.world.is_root:
                    self._check_run_dir()
                s = self.train_step()
                quit_requested = self.world_stop
                out_of_time = self.world_out_of_time if self.world.size > 1 else self.out_of_time()
                last = s.step == self.total_steps or out_of_time
                self.emit("step", **s.__dict__)
                if s.step % cfg.log_every == 0 or last:
                    rec = {k: v for k, v in s.__dict__.items()}
                    if self.world.size > 1:  # every rank's own speed, and the all-reduce's share
                        times = self.world.gather_obj(s.step_time_s)
                        rec["rank_tokens_per_s"] = [cfg.tokens_per_step / t for t in times]
                        rec["allreduce_s"] = self.allreduce_s
                        rec["world_size"] = self.world.size
                    self._record(rec)
                    self.emit("log", **rec)
                if s.step % cfg.eval_every == 0 or last:
                    val = self.evaluate()
                    self._record(
                        {"step": s.step, "val_loss": val, "val_ppl": math.exp(min(val, 50)), "elapsed_s": self.elapsed}
                    )
                    self.emit("eval", step=s.step, val_loss=val, val_ppl=math.exp(min(val, 50)))
                    stopped_early = self._after_evaluation(val)
                    quit_requested = quit_requested or stopped_early
                if self.world.is_root and (s.step % cfg.sample_every == 0 or last):
                    self.emit("sample", step=s.step, text=self.sample())
                if out_of_time:
                    self._say_budget_reached()
                if s.step % every == 0:
                    saved_at = self.step  # a failed save is not tried again at the same step
                    self.save_checkpoint("periodic")
        except BaseException as e:
            failed = e
            raise
        finally:
            try:
                self.stop_reason = (
                    "early stop"
                    if stopped_early
                    else "budget"
                    if out_of_time
                    else "quit"
                    if quit_requested
                    else "final"
                    if self.step >= self.total_steps
                    else "interrupted"
                )
                if self.step > saved_at and not self.abort and self._can_save_after(failed):
                    self.save_checkpoint(self.stop_reason)
            except Exception as e:
                if not failed:
                    raise
                self.emit("warning", message=f"final checkpoint not saved: {e}")
            finally:
                self.close()
                self.emit("done", step=self.step)
        return self.last

    def out_of_time(self) -> bool:
        """Whether this process's training time has spent the config's time budget (`loop plan`'s)."""
        return self.cfg.budget_minutes is not None and self.elapsed >= self.cfg.budget_minutes * 60

    def _say_budget_reached(self) -> None:
        best = ""
        if self.best:
            step, loss = self.best
            path = self.run_dir / "checkpoints" / checkpoint.BEST
            best = f"; the best, val loss {loss:.4f} at step {step}, is {path}"
        reached = f"time budget of {self.cfg.budget_minutes:g} min reached at step {self.step} of {self.total_steps}"
        self.emit("info", message=reached + best)

    def _after_evaluation(self, val: float) -> bool:
        """Keep the best checkpoint; True when patience says the run stops here."""
        if self.best is None or val < self.best[1]:
            self.best, self.evals_since_best = (self.step, val), 0
            self.save_best()
            return False
        self.evals_since_best += 1
        patience = self.cfg.patience
        if patience is None or self.evals_since_best < patience:
            return False
        step, loss = self.best
        n = self.evals_since_best
        self.emit(
            "info",
            message=f"early stop at step {self.step}: no lower validation loss in {n} evaluation{'s' * (n != 1)}; "
            f"the best, val loss {loss:.4f} at step {step}, is {self.run_dir / 'checkpoints' / checkpoint.BEST}",
        )
        return True

    def _handle_requests(self) -> bool:
        while True:
            try:
                cmd = self.requests.get_nowait()
            except queue.Empty:
                return False
            if cmd == "quit":
                self.stop_event.set()
                return True
            if cmd in ("pause", "resume", "toggle_pause"):
                self.paused = {"pause": True, "resume": False}.get(cmd, not self.paused)
                self.emit("info", message="paused" if self.paused else "resumed")
            elif cmd == "save":
                self.save_checkpoint("requested")
            elif cmd == "sample":
                self.emit("sample", step=self.step, text=self.sample())
