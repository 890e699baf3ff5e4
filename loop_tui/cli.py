"""`loop`: the command line. Each subcommand's --help explains it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .errors import EXIT_ABORTED, EXIT_INTERNAL, EXIT_OS, EXIT_USAGE, LoopError


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    from .train.distributed import launched_rank, launched_size

    rank = f" (rank {launched_rank()})" if launched_size() > 1 and launched_rank() else ""
    print(f"loop: error{rank}: {message}", file=sys.stderr, flush=True)
    return code


def _warn(message: str) -> None:
    print(f"loop: warning: {message}", file=sys.stderr)


def warn_oversubscribed(threads: int | None) -> None:
    from . import machine

    if threads is not None and threads > machine.cpu_count():
        _warn(
            f"--threads {threads} is more than the {machine.cpu_count()} usable cores: kernels will wait on "
            "each other and run much slower"
        )


def _check_option(option: str, value: int | None, least: int) -> None:
    """A usage error (exit 2) unless value is None or in [least, INT64_MAX]."""
    from .config import INT64_MAX, ConfigError

    if value is None or least <= value <= INT64_MAX:
        return
    rule = "positive" if least == 1 else "non-negative" if least == 0 else f"at least {least}"
    raise ConfigError(f"{option} must be {rule} and below 2^63, got {value}")


# ---------------------------------------------------------------- analyze
def cmd_analyze(args) -> int:
    import orjson

    from . import analyze, machine
    from .config import load_config

    cfg = load_config(args.config)
    try:
        caches = machine.detect_caches(args.cache)
    except ValueError as e:
        return _fail(f"--cache: {e}")
    rep = analyze.report(cfg, caches)
    if args.json:
        sys.stdout.write(orjson.dumps(rep, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")
    else:
        from rich.console import Console

        Console().print(analyze.render(rep))
    return 0


# ---------------------------------------------------------------- train
TEXT_FIELD_HELP = (
    "the field of JSONL records (column of Parquet files) that holds the text (default: text); records "
    "without it are counted and skipped"
)


def build_config(args):
    from .config import load_config, with_overrides

    cfg = load_config(args.config)
    if args.set:
        cfg = with_overrides(cfg, args.set)
    changes = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.backend is not None:
        changes["backend"] = args.backend
    if args.threads is not None:
        changes["threads"] = args.threads
    if args.precision is not None:
        changes["precision"] = args.precision
    if args.report_to is not None:
        changes["report_to"] = None if args.report_to == "none" else args.report_to
    if args.text_field is not None:
        changes["text_field"] = args.text_field
    return cfg.replace(**changes) if changes else cfg


def cmd_train(args) -> int:
    from .config import ConfigError
    from .train.launch import model_shape, run_dir_for

    for option, value, least in (("--threads", args.threads, 1), ("--steps", args.steps, 1), ("--seed", args.seed, 0)):
        _check_option(option, value, least)
    cfg = build_config(args)
    warn_oversubscribed(args.threads)
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be positive, got {args.checkpoint_every}")
    if args.new_data and not args.resume:
        raise ConfigError("--new-data continues a run: use it with --resume")
    if args.init_from and args.resume:
        raise ConfigError("--init-from starts a new run from a HuggingFace folder; --resume continues a run: give one")
    run_dir = run_dir_for(cfg.name, args.out, args.resume)
    cfg, shape_note = model_shape(cfg, run_dir, args.init_from, args.resume, warn=_warn)
    if shape_note:
        print(f"loop: {shape_note}", file=sys.stderr)
    if args.print_config:
        import orjson

        print(orjson.dumps(cfg.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return 0

    dashboard, terminal = use_dashboard(args)
    if dashboard:
        from .ui.app import run_dashboard

        state = run_dashboard(
            cfg,
            run_dir,
            data=args.data,
            resume=args.resume,
            steps=args.steps,
            checkpoint_every=args.checkpoint_every,
            device=args.device,
            threads=args.threads,
            force=args.force,
            new_data=args.new_data,
            terminal=terminal,
        )
        return dashboard_summary(state, run_dir)
    return train_headless(cfg, run_dir, args)


def use_dashboard(args) -> tuple[bool, str | None]:
    """(show the dashboard, the terminal device to draw on if not our own). On a terminal, unless
    --no-tui. Under mpiexec the ranks get pipes: rank 0 draws the dashboard on mpiexec's own
    terminal when mpiexec runs on one (stdin and stdout), the other ranks never."""
    from .train.distributed import launched_rank, launched_size

    if args.no_tui:
        return False, None
    if launched_size() == 1:
        return sys.stdout.isatty() and sys.stdin.isatty(), None
    if launched_rank() != 0:
        return False, None
    from .ui.rank_terminal import launcher_terminal

    terminal = launcher_terminal()
    return terminal is not None, terminal


def dashboard_summary(state, run_dir: Path) -> int:
    """What the terminal shows after the dashboard closes, and the exit code."""
    if state.error:
        print(f"loop: error: {state.error}", file=sys.stderr)
        from .train.distributed import abort_world

        abort_world(1)  # under mpiexec the other ranks wait in a collective: end them
        return 1
    print(f"stopped at step {state.step}, loss {state.loss:.4f}; run folder {run_dir}")
    if state.sample:
        print("latest sample: " + state.sample.replace("\n", " ")[:400])
    return 0


def train_headless(cfg, run_dir: Path, args) -> int:
    from .train.console import ConsoleReporter

    reporter = ConsoleReporter(cfg.max_steps)
    try:
        return _train_headless(cfg, run_dir, args, reporter)
    finally:
        reporter.close()  # a terminal's progress bar goes, whatever ended the run


def _train_headless(cfg, run_dir: Path, args, reporter) -> int:
    from .train.launch import on_stop_signals
    from .train.trainer import Trainer

    trainer = Trainer(
        cfg,
        run_dir,
        data=args.data,
        resume=args.resume,
        threads=args.threads,
        on_event=reporter,
        device=args.device,
        force=args.force,
        new_data=args.new_data,
    )

    def stop(signum: int) -> None:
        if trainer.training:
            doing = "finishing this step and saving a checkpoint (Ctrl-C again to abort without saving)"
        else:  # still preparing: nothing trained, nothing to save
            doing = "stopping before the first step"
        try:
            print(
                f"\n{signal.Signals(signum).name}: {doing}",
                file=sys.stderr,
                flush=True,
            )
        except OSError:
            pass
        trainer.request("quit")

    def abort(signum: int) -> None:
        trainer.abort = True
        raise KeyboardInterrupt

    def hang_up() -> bool:
        from .train.console import detach_from_terminal

        detach_from_terminal()
        return False  # then stop or abort as for Ctrl-C

    on_stop_signals(stop, abort, trainer.stop_event.is_set, hang_up)
    trainer.setup()
    root = trainer.world.is_root
    if root:
        print(f"run folder: {run_dir}")
    if args.steps is None and trainer.step >= cfg.max_steps:
        trainer.close()
        print(
            f"{run_dir} is finished: step {trainer.step} of max_steps {cfg.max_steps}. Train further with "
            f"--steps N (N more steps) or a config with a larger max_steps."
        )
        return 0
    reporter.total = trainer.step + args.steps if args.steps else max(cfg.max_steps, trainer.step)
    last = trainer.run(steps=args.steps, checkpoint_every=args.checkpoint_every)
    if last and root:
        print(
            f"done: step {trainer.step}, loss {last.loss:.4f}"
            + (f", val loss {trainer.last_val_loss:.4f}" if trainer.last_val_loss is not None else "")
            + f", {last.tokens_per_s:,.0f} tokens/s. "
            + go_on_hint(trainer.stop_reason, f"loop train {args.config} --out {run_dir} --resume")
        )
    return 0


def go_on_hint(reason: str | None, resume: str) -> str:
    """How to train on after a run that ended for `reason` (Trainer.stop_reason)."""
    if reason == "final":
        return f"Train further with: {resume} --steps N"
    if reason == "early stop":
        return f"Train on past the early stop with: {resume} --set patience=null"
    if reason == "budget":
        return f"Train on with: {resume} --set budget_minutes=M (a longer budget) or --set budget_minutes=null"
    return f"Resume with: {resume}"


# ---------------------------------------------------------------- plan
def cmd_plan(args) -> int:
    import orjson

    from .cache import atomic_write_bytes
    from .config import ConfigError
    from .plan import check_budget, make_plan

    check_budget(args.minutes)  # before anything is read: a nonsense budget fails at once
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be positive, got {args.threads}")
    warn_oversubscribed(args.threads)
    out = Path(args.out)
    check_output_file(args.out)  # before the minute of planning, not after
    plan = make_plan(args.data, args.minutes, args.threads, say=lambda m: print(m, file=sys.stderr, flush=True))
    atomic_write_bytes(out, orjson.dumps(plan.cfg.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    for line in plan.explain():
        print(line)
    print(f"wrote {out}; train it with: loop train {out}")
    return 0


def check_output_file(path: str) -> None:
    """A usage error unless `path` names a file that can be written: not empty, not a folder, in a
    folder that exists and is writable."""
    from .config import ConfigError

    if not path.strip():
        raise ConfigError("--out: give a file name")
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"--out: {out} is a folder; give a file name, e.g. {out / 'plan.json'}")
    folder = out.parent
    if not folder.is_dir():
        raise ConfigError(f"--out: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"--out: cannot write in {folder}")


# ---------------------------------------------------------------- generate
def cmd_generate(args) -> int:
    import numpy as np
    from tokenizers import Tokenizer

    from .backend import make_backend
    from .model.gpt import GPT
    from .sources import load_model
    from .train.sample import check_sampling, generate

    check_sampling(args.temperature, args.top_k, args.top_p, args.tokens)
    _check_option("--threads", args.threads, 1)
    _check_option("--seed", args.seed, 0)
    prompt = text_argument("--prompt", args.prompt)
    src = load_model(args.run_dir, args.step, warn=_warn, best=args.best)
    print(f"loop: generating with {src.label}", file=sys.stderr)
    cfg = src.cfg
    backend = make_backend(
        cfg.backend if args.backend is None else args.backend, args.threads, args.device, src.precision
    )
    model = GPT(cfg, backend, batch_size=1)
    model.load_params(src.params)
    tok = Tokenizer.from_str(src.tokenizer_json.decode())
    rng = np.random.default_rng(args.seed)
    sys.stdout.write(prompt)
    sys.stdout.flush()

    def stream(piece: str) -> None:  # each piece as soon as it is sampled
        sys.stdout.write(piece)
        sys.stdout.flush()

    generate(
        model,
        tok,
        prompt,
        args.tokens,
        args.temperature,
        args.top_k,
        rng,
        top_p=args.top_p,
        on_text=stream,
        on_note=lambda m: print(f"loop: note: {m}", file=sys.stderr),
        cached=False if args.no_cache else None,
    )
    print()
    return 0


def text_argument(option: str, value: str) -> str:
    """value, which must be valid UTF-8: Python hands bytes that are not UTF-8 over as lone
    surrogates, which the tokenizer cannot encode."""
    from .config import ConfigError

    try:
        value.encode()
    except UnicodeEncodeError as e:
        bad = os.fsencode(value[e.start : e.end])
        raise ConfigError(
            f"{option} is not valid UTF-8 text (byte {bad.hex(' ')} at position {e.start}); "
            "give it in UTF-8 (e.g. iconv -t utf-8)"
        ) from None
    return value


# ---------------------------------------------------------------- export / eval
def cmd_export(args) -> int:
    from . import hf
    from .sources import load_model

    src = load_model(args.run_dir, args.step, warn=_warn, best=args.best)
    out = Path(args.out_dir)
    if (args.format or ("gguf" if out.suffix.lower() == ".gguf" else "hf")) == "gguf":
        from .gguf_export import export_gguf

        for note in export_gguf(src.cfg, src.params, src.tokenizer_json, out, args.type):
            print(f"loop: note: {note}", file=sys.stderr)
        manifest = out.parent / "Modelfile"
        print(f"exported {src.label} to {out} (GGUF, gpt2, {args.type.upper()}) and the ollama {manifest}")
        print(f"  llama-cli -m {out} -p 'Hello'    ollama create {src.cfg.name or 'loop-model'} -f {manifest}")
        return 0
    if hf.is_hf_folder(Path(args.run_dir)):
        raise hf.InteropError(f"{args.run_dir}: is already a HuggingFace folder; export takes a run folder")
    hf.export_params(src.cfg, src.params, src.tokenizer_json, out)
    print(f"exported {src.label} to {out} (transformers GPT2LMHeadModel, safetensors, tokenizer)")
    print(
        f"  python -c \"from transformers import pipeline; print(pipeline('text-generation', '{out}')('Hello')[0]"
        "['generated_text'])\""
    )
    return 0


def cmd_eval(args) -> int:
    import orjson
    from tokenizers import Tokenizer

    from .backend import make_backend
    from .config import ConfigError
    from .data.corpus import load_corpus
    from .evaluate import eval_batch_size, evaluate
    from .model.gpt import GPT
    from .sources import load_model

    _check_option("--threads", args.threads, 1)
    src = load_model(args.model, args.step, warn=_warn, best=args.best)
    cfg = src.cfg
    T = cfg.max_length if args.context is None else args.context
    if not 1 <= T <= cfg.positions:
        raise ConfigError(f"--context must be in [1, {cfg.positions}] (the model's positions), got {T}")
    corpus = load_corpus(args.data, args.text_field)
    backend = make_backend("c", args.threads, None, src.precision)

    def factory(batch: int, seq: int):
        m = GPT(cfg.replace(batch_size=batch, max_length=seq, n_positions=cfg.positions), backend, batch, seq)
        m.load_params(src.params)
        return m

    tok = Tokenizer.from_str(src.tokenizer_json.decode())
    quiet = args.json or not sys.stderr.isatty()

    def progress(done: int, total: int, took: float) -> None:
        if quiet:
            return
        eta = took / done * (total - done) if done else 0.0
        print(f"\r  scored {done / 1e6:.2f} of {total / 1e6:.2f} MB, ETA {eta:.0f}s   ", end="", file=sys.stderr)

    r = evaluate(factory, tok, corpus, T, eval_batch_size(cfg, T), progress)
    if not quiet:
        print(file=sys.stderr)
    if args.json:
        keys = ("loss", "perplexity", "bits_per_byte", "tokens", "bytes", "files")
        print(orjson.dumps({**{k: getattr(r, k) for k in keys}, "model": src.label}).decode())
    else:
        print(
            f"{src.label} on {corpus.name} ({r.files} files, {r.bytes:,} bytes, {r.tokens:,} tokens, context {T}): "
            f"loss {r.loss:.4f}, perplexity {r.perplexity:.2f}, {r.bits_per_byte:.4f} bits per byte"
        )
    return 0


# ---------------------------------------------------------------- runs
def cmd_runs(args) -> int:
    import orjson
    from rich.console import Console
    from rich.table import Table

    from .config import ConfigError
    from .train.runs import COLUMNS, NUMERIC, STATUS_STYLE, cells, scan

    folder = Path(args.folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder (runs are under runs/ by default)")
    if args.app:
        from .ui.app import LoopApp
        from .ui.runs_screen import RunsScreen

        LoopApp(lambda: RunsScreen(folder)).run()
        return 0
    runs = scan(folder)
    if args.json:
        rows = [{**r.__dict__, "path": str(r.path)} for r in runs]
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())
        return 0
    if not runs:
        print(f"{folder}: no runs (a run folder holds metrics.jsonl)")
        return 0
    t = Table(title=f"runs in {folder}", title_justify="left")
    for col in COLUMNS:
        t.add_column(col, justify="right" if col in NUMERIC else "left")
    for r in runs:
        t.add_row(*cells(r), style=STATUS_STYLE[r.status])
    # piped or captured output gets every column whole instead of rich's default 80 columns
    Console(width=None if sys.stdout.isatty() else 200).print(t)
    return 0


def cmd_view(args) -> int:
    from .config import ConfigError

    runs = [Path(r) for r in args.runs]
    for r in runs:
        if not (r / "metrics.jsonl").exists():
            raise ConfigError(f"{r}: not a run folder (no metrics.jsonl); `loop runs` lists them")
    from .ui.app import LoopApp
    from .ui.view import ViewScreen

    LoopApp(lambda: ViewScreen(runs)).run()
    return 0


# ---------------------------------------------------------------- info / tui
def cmd_info(args) -> int:
    from . import machine
    from .cache import cache_dir
    from .config import CONFIG_DIR, user_config_dir
    from .train.runs import RUNS

    print(f"configs: shipped in {CONFIG_DIR}; saved ones in {user_config_dir()} (LOOP_CONFIG_DIR overrides)")
    print(f"cache (tokenizers, token ids, measurements): {cache_dir()} (LOOP_CACHE_DIR overrides)")
    print(f"runs: {RUNS.resolve()} (under the current folder; --out RUN_DIR for another)")
    caches = machine.detect_caches()
    print(f"CPUs usable: {machine.cpu_count()}")
    print(
        "caches ("
        + caches.source
        + "): "
        + ", ".join(f"{lv.name} {lv.size // 1024} KiB x{lv.instances}" for lv in caches.levels)
    )
    for note in caches.notes:
        print(f"  {note}")
    from .backend import c_library, describe_opencl

    try:
        kernels = c_library()
        print(
            f"C kernels: ISA {kernels.isa()} (available: {', '.join(kernels.available_isas())}), "
            f"{kernels.get_num_threads()} threads, GEMM blocking {kernels.gemm_blocking()}"
        )
        native = "native" if kernels.has_native_bf16() else "no AVX512-BF16/AMX: portable, slower than fp32"
        print(
            f"bf16 GEMMs: {kernels.bf16_path()} ({native}; available: {', '.join(kernels.available_bf16_paths())}), "
            f"micro-kernel {kernels.gemm_kernel_name('bf16')}, blocking {kernels.gemm_blocking('bf16')}"
        )
    except ImportError as e:
        print(f"C kernels: not available ({e})")
    try:
        print(describe_opencl(args.device))
    except Exception as e:  # noqa: BLE001 - any OpenCL failure is reported, not fatal here
        print(f"OpenCL: not available ({e})")
    return 0


def cmd_tui(args) -> int:
    from .config import load_config, resolve_path
    from .ui.app import run_picker

    for c in args.configs:
        load_config(c)  # a bad file is reported here, as one line, before the app starts
    return run_picker([resolve_path(c) for c in args.configs])


# ---------------------------------------------------------------- parser
def add_checkpoint_choice(parser: argparse.ArgumentParser, verb: str) -> None:
    """--step N / --best: which of a run's checkpoints generate, export and eval load."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--step",
        type=int,
        metavar="N",
        help=f"{verb} the run's checkpoint of step N (default: the best checkpoint, the one of the lowest "
        "validation loss, when the run has one; else the newest)",
    )
    which.add_argument(
        "--best", action="store_true", help=f"{verb} the run's best checkpoint (checkpoints/best); an error if none"
    )


class Parser(argparse.ArgumentParser):
    """argparse with the one-line error of every other usage error (exit 2), not a usage block."""

    def error(self, message: str):
        sys.stderr.write(f"loop: error: {self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="loop",
        description="Train small GPT-2 models on a folder of text with "
        "hand-written C kernels, and see why they are fast.",
        epilog="Configs are JSON files; shipped ones can be named without a path "
        "(e.g. `loop train smoke`). Set LOOP_ISA=avx512|avx2|neon|generic to force an "
        "instruction set, LOOP_BF16=amx|avx512bf16|portable to force the bf16 GEMM "
        "path, LOOP_CACHE_DIR for the tokenizer cache, LOOP_CONFIG_DIR for saved configs (`loop info` shows "
        "where each lives).",
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"loop_tui {__version__}")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of a failure (also LOOP_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser(
        "analyze",
        help="cache-fit breakdown of a config on this machine",
        description="List every buffer a training step touches and the smallest cache level "
        "of this machine (read from sysfs) it fits in.",
    )
    a.add_argument("config", help="config file or shipped config name")
    a.add_argument("--json", action="store_true", help="stable JSON (sizes in bytes) instead of tables")
    a.add_argument("--cache", metavar="SPEC", help="what-if cache sizes, e.g. L1=48K,L2=512K,L3=8M")
    a.set_defaults(func=cmd_analyze)

    t = sub.add_parser(
        "train",
        help="train a model (dashboard on a terminal, or --no-tui)",
        description="Train CONFIG on a folder of text. Without --data it trains on Python's "
        "own documentation. Ctrl-C or SIGTERM finishes the step, saves and exits 0.",
    )
    t.add_argument("config", help="config file or shipped config name")
    t.add_argument(
        "--data",
        metavar="DIR|FILE",
        help="folder of text files (recursive) or one file; .jsonl, .jsonl.gz and .parquet files give one "
        "document per record; default: built-in corpus",
    )
    t.add_argument("--text-field", metavar="NAME", help=TEXT_FIELD_HELP)
    t.add_argument("--steps", type=int, metavar="N", help="train N steps (default: the config's max_steps)")
    t.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/<config>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    t.add_argument("--threads", type=int, metavar="N", help="kernel threads (default: all cores)")
    t.add_argument("--seed", type=int, metavar="S", help="random seed (default: the config's)")
    t.add_argument("--checkpoint-every", type=int, metavar="N", help="steps between checkpoints")
    t.add_argument("--backend", choices=("c", "opencl"), help="kernel backend (default: the config's, c)")
    t.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        help="GEMM precision (default: the config's, fp32). bf16 rounds GEMM inputs to bfloat16 and "
        "sums in fp32; weights, gradients, optimizer and all other ops stay fp32. auto: bf16 where "
        "the CPU has AVX512-BF16 or AMX, else fp32",
    )
    t.add_argument(
        "--device", metavar="NAME", help="OpenCL device (substring of its name); default: a GPU, else the CPU"
    )
    t.add_argument(
        "--report-to",
        choices=("tensorboard", "none"),
        help="also write the metrics as TensorBoard event files in the run folder (`tensorboard --logdir runs/`; "
        'needs pip install "loop_tui[tensorboard]"); metrics.jsonl is written either way. Default: the config\'s '
        "report_to, none",
    )
    t.add_argument(
        "--init-from",
        metavar="HF_DIR",
        help="fine-tune a local HuggingFace GPT-2 folder (config.json, model.safetensors, tokenizer): the model's "
        "shape and tokenizer come from it, the training settings from CONFIG (e.g. `loop train gpt2_finetune "
        "--init-from ./gpt2 --data my_articles/`)",
    )
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="set any config field (repeatable), checked as in a config file, e.g. --set learning_rate=3e-4 "
        "--set batch_size=8 (null for an optional field's default); the other options here apply after it",
    )
    t.add_argument("--print-config", action="store_true", help="print the config this would train with (JSON) and exit")
    t.add_argument("--no-tui", action="store_true", help="print progress lines instead of the dashboard")
    t.add_argument("--force", action="store_true", help="start even if the memory estimate exceeds the free RAM")
    t.add_argument(
        "--new-data",
        action="store_true",
        help="with --resume: continue on a different --data folder, encoded with the run's own tokenizer "
        "(fine-tuning on new text)",
    )
    t.set_defaults(func=cmd_train)

    pl = sub.add_parser(
        "plan",
        help="write a config sized for your text, this machine and a time budget",
        description="Measure the corpus (bytes per token at candidate vocabularies, on a sample) and this "
        "machine (a few timed training steps of probe shapes), then pick the width, depth, context, vocabulary, "
        "batch, steps and dropout with the lowest loss that data-constrained scaling laws predict for the budget "
        "(Hoffmann et al. 2022; Muennighoff et al. 2023). Prints why, writes the config; `loop train OUT` runs "
        "it, stopping at its steps or when the budget's training time is spent. Planning takes at most a tenth of "
        "the budget (10 to 60 s).",
    )
    pl.add_argument("--data", required=True, metavar="DIR", help="folder of text files (recursive)")
    pl.add_argument(
        "--minutes", required=True, type=float, metavar="M", help="training time to plan for (0.1 to 10080)"
    )
    pl.add_argument("--out", default="plan.json", metavar="FILE", help="the config to write (default plan.json)")
    pl.add_argument("--threads", type=int, metavar="N", help="kernel threads (default: all cores)")
    pl.set_defaults(func=cmd_plan)

    g = sub.add_parser(
        "generate",
        help="sample text from a trained run",
        description="Continue a prompt with a checkpoint of RUN_DIR (its best, else its newest; or --step N, --best) "
        "or a HuggingFace GPT-2 folder, "
        "printing tokens as they are produced. The prompt runs once; then each token runs alone against the "
        "cached keys and values (KV cache). A prompt longer than the model's window keeps its last tokens.",
    )
    g.add_argument("run_dir", metavar="RUN_DIR|HF_DIR")
    g.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    g.add_argument("--tokens", type=int, default=100, metavar="N", help="tokens to generate (default 100)")
    g.add_argument("--temperature", type=float, default=0.8, metavar="T", help="0 = greedy (default 0.8)")
    g.add_argument(
        "--top-k", type=int, default=40, metavar="K", help="sample from the K likeliest; 0 = all (default 40)"
    )
    g.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        metavar="P",
        help="then from the fewest tokens whose probability reaches P (nucleus); 1 = all (default 1)",
    )
    g.add_argument("--seed", type=int, default=None, help="random seed: the same seed gives the same text")
    g.add_argument(
        "--no-cache",
        action="store_true",
        help="re-run the whole window for every token instead of using the KV cache (same tokens, slower)",
    )
    g.add_argument("--threads", type=int, default=None, help="kernel threads")
    g.add_argument("--backend", choices=("c", "opencl"), default=None, help="kernel backend")
    g.add_argument("--device", metavar="NAME", help="OpenCL device (substring of its name)")
    add_checkpoint_choice(g, "sample from")
    g.set_defaults(func=cmd_generate)

    x = sub.add_parser(
        "export",
        help="write a run as a HuggingFace transformers GPT-2 folder, or a GGUF file for llama.cpp",
        description="Write RUN_DIR's best checkpoint (else its newest intact one; or --step N's) to OUT_DIR "
        "as a folder that transformers loads with no custom code: config.json, model.safetensors, "
        "generation_config.json and the tokenizer (tokenizer.json, tokenizer_config.json, special_tokens_map.json). "
        "No pickle. With --format gguf "
        "(the default for a name ending in .gguf): one GGUF file that llama.cpp, ollama and LM Studio load "
        "(architecture gpt2, the run's own BPE), and an ollama Modelfile beside it.",
    )
    x.add_argument("run_dir", metavar="RUN_DIR")
    x.add_argument("out_dir", metavar="OUT", help="a new (or empty) folder; for gguf, a new file OUT.gguf")
    x.add_argument(
        "--format", choices=("hf", "gguf"), help="hf (a transformers folder) or gguf (default: by OUT's suffix)"
    )
    x.add_argument(
        "--type",
        choices=("f32", "f16", "bf16", "q8_0"),
        default="f16",
        help="gguf: type of the weight matrices (default f16; q8_0 is 8-bit, about half of f16's size); "
        "biases, LayerNorm and positions stay f32",
    )
    add_checkpoint_choice(x, "export")
    x.set_defaults(func=cmd_export)

    e = sub.add_parser(
        "eval",
        help="loss, perplexity and bits per byte of a model on a folder of text",
        description="Score MODEL (a run folder or a HuggingFace GPT-2 folder) on the text files of --data. "
        "Each file is tokenized on its own and cut into consecutive non-overlapping windows of T+1 tokens (the "
        "last one shorter); each window predicts its tokens 2..n from the ones before. loss is the mean "
        "cross-entropy over every predicted token, perplexity exp(loss), bits per byte loss/ln2 * tokens/bytes.",
    )
    e.add_argument("model", metavar="RUN_DIR|HF_DIR")
    e.add_argument(
        "--data", required=True, metavar="DIR|FILE", help="folder of text files (e.g. held-out articles) or one file"
    )
    e.add_argument("--text-field", metavar="NAME", default="text", help=TEXT_FIELD_HELP)
    add_checkpoint_choice(e, "score")
    e.add_argument("--context", type=int, metavar="T", help="window length T (default: the model's max_length)")
    e.add_argument("--threads", type=int, metavar="N", help="kernel threads (default: all cores)")
    e.add_argument(
        "--json",
        action="store_true",
        help="print loss, perplexity, bits_per_byte, tokens, bytes, files and model (what was scored)",
    )
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser(
        "runs",
        help="every run in a folder: config, steps, losses, speed, status",
        description="List the runs in FOLDER (default runs/): config, precision, steps done/planned, last "
        "loss, best validation loss, tokens/s, MFU, when it started, and whether it is running (a trainer "
        "holds its lock), finished, stopped early (patience), out of time (its budget) or interrupted. Reads only.",
    )
    r.add_argument("folder", nargs="?", default="runs", metavar="FOLDER")
    r.add_argument("--json", action="store_true", help="one JSON object per run")
    r.add_argument(
        "--app", action="store_true", help="the runs screen of the app: Enter views a run, space + v overlays runs"
    )
    r.set_defaults(func=cmd_runs)

    v = sub.add_parser(
        "view",
        help="one run's curves, or several overlaid, from their metrics (live while they train)",
        description="Rebuild RUN's loss, validation loss and tokens/s from its metrics.jsonl, finished or "
        "still training (then it follows live), and overlay several runs with a legend. Keys: x switches "
        "the x axis between step and wall time, q quits. Reads only: it can watch a run another process trains.",
    )
    v.add_argument("runs", nargs="+", metavar="RUN")
    v.set_defaults(func=cmd_view)

    i = sub.add_parser(
        "info",
        help="where configs, cache and runs live; machine, kernels and OpenCL devices (which one is used, and why)",
    )
    i.add_argument("--device", metavar="NAME", help="show which OpenCL device NAME selects")
    i.set_defaults(func=cmd_info)
    u = sub.add_parser(
        "tui",
        help="open the config picker",
        description="Pick a config (the shipped ones, plus any CONFIG files given), edit it, start.",
    )
    u.add_argument("configs", nargs="*", metavar="CONFIG", help="extra config files to list (the last is selected)")
    u.set_defaults(func=cmd_tui)
    return p


def main(argv: list[str] | None = None) -> int:
    # tokenizers' thread pool in this process (decoding samples) stays off the kernel cores; data
    # preparation runs in a worker process that uses every core (data/tokens.py)
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("LOOP_DEBUG") == "1"
    from .config import ConfigError
    from .data.corpus import DataError
    from .train.distributed import PeerStopped, mark_done

    try:
        code = args.func(args)
        mark_done()  # under MPI: a rank that returns ended on purpose
        return code
    except BrokenPipeError:
        return 0
    except PeerStopped as e:  # under MPI: another rank failed and printed why; every rank ends with its code
        if debug:
            raise
        mark_done()
        return e.exit_code
    except KeyboardInterrupt:
        said = {
            "train": "aborted without saving (the run folder keeps its last checkpoint)",
            "plan": "planning stopped; nothing was written",
        }
        print(said.get(args.command, "aborted"), file=sys.stderr)
        mark_done()
        return EXIT_ABORTED
    except Exception as e:
        if debug:
            raise
        from .train.distributed import MPIUnavailable, launched_rank

        if isinstance(e, MPIUnavailable) and launched_rank() != 0:  # every rank has it: rank 0 says it once
            code = e.exit_code
        elif isinstance(e, (ConfigError, DataError)):
            code = _fail(str(e))
        elif isinstance(e, LoopError):
            code = _fail(str(e), e.exit_code)
        elif isinstance(e, OSError):
            code = _fail(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}", EXIT_OS)
        else:
            code = _fail(
                f"internal error: {type(e).__name__}: {e} (run again with --debug for the traceback)", EXIT_INTERNAL
            )
        from .train.distributed import abort_world, stopped_together

        if stopped_together(e):  # every rank is ending with this code: nothing to abort
            mark_done()
        else:
            abort_world(code)  # under mpirun: end every rank now, not leave them waiting in a collective
        return code


if __name__ == "__main__":
    sys.exit(main())
