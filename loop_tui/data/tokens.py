"""Byte-level BPE (HuggingFace tokenizers) trained on the corpus, and the corpus as token ids.

Both are cached under the cache folder ($LOOP_CACHE_DIR, default ~/.cache/loop_tui) by corpus
digest and vocabulary size. Documents are split into train and validation (about val_fraction
of them; text files by file, at least one; JSONL/Parquet records by record) so the validation
loss is measured on unseen documents.
Ids are stored as uint16 memmaps (uint32 when the vocabulary exceeds 65535).

Memory stays bounded whatever the corpus size: the tokenizer trains in a child process on
documents streamed in ~1 MiB pieces (its memory is the BPE trainer's word counts, not the text),
and encoding runs in batches of ~1 MiB written straight into the cache file. Both report
progress through `progress(phase, done_bytes, total_bytes)` and stop within about a second when
`should_stop()` turns true, raising Interrupted; a cache entry is renamed into place only once
complete, so an interruption never leaves half of one."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..cache import atomic_write_bytes, cache_dir, remove_stale, work_folder
from ..errors import EXIT_ABORTED, EXIT_OS, LoopError, StorageError
from .corpus import Corpus, DataError, Part

EOT = "<|endoftext|>"
ENCODE_BATCH_BYTES = 1 << 20  # text per encode_batch call
# text per encoded string: tokenizers keeps ~300 bytes of alignments per byte of one string, so
# long strings are cut (at line breaks, where the byte-level pre-tokenizer splits anyway)
ENCODE_PIECE_BYTES = 1 << 16
Progress = Callable[[str, int, int], None]


class Interrupted(LoopError):
    """Ctrl-C or SIGTERM while preparing data: nothing was trained."""

    exit_code = EXIT_ABORTED


def _no_progress(phase: str, done: int, total: int) -> None:
    pass


def _never() -> bool:
    return False


def _run_worker(
    corpus: Corpus, job: dict, work: Path, phase: str, total: int, progress: Progress, should_stop: Callable[[], bool]
) -> None:
    """Run one job of bpe_worker.py on the corpus in a child process: Ctrl-C stops it at once (the
    tokenizer's merge phase runs in Rust and would not see a signal until it ended), and its memory
    goes back to the OS when it ends. It uses every core (LOOP_DATA_THREADS overrides): nothing
    else runs while data is prepared."""
    import subprocess
    import sys
    import threading

    import orjson

    from ..machine import cpu_count
    from .corpus import path_to_json

    spec = work / "spec.json"
    docs = [
        {
            "name": d.name,
            "size": d.size,
            "path": path_to_json(d.path) if d.path else None,
            "text": d.text,
            "kind": d.kind,
            "records": d.records,
        }
        for d in corpus.docs
    ]
    spec.write_bytes(orjson.dumps({"name": corpus.name, "docs": docs, "text_field": corpus.text_field, **job}))
    threads = os.environ.get("LOOP_DATA_THREADS") or str(cpu_count())
    child = subprocess.Popen(
        [sys.executable, "-m", "loop_tui.data.bpe_worker", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAYON_NUM_THREADS": threads},
    )
    done = [0]

    def read_progress() -> None:
        for line in child.stdout:  # type: ignore[union-attr]
            done[0] = int(line)

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    try:
        while child.poll() is None:
            if should_stop():
                raise Interrupted(f"stopped while {phase}; nothing was trained (the cache keeps only complete entries)")
            progress(phase, min(done[0], total), total)
            try:
                child.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        if child.returncode != 0:
            err = (child.stderr.read().strip().splitlines() or ["no message"])[-1]  # type: ignore[union-attr]
            if child.returncode == EXIT_OS:  # the OS refused (a full cache disk): its one line says where and why
                raise StorageError(err)
            raise DataError(f"{corpus.name}: {phase} failed (exit code {child.returncode}: {err})")
        progress(phase, total, total)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        reader.join(1)


def train_tokenizer(
    corpus: Corpus, vocab_size: int, progress: Progress = _no_progress, should_stop: Callable[[], bool] = _never
) -> Tokenizer:
    """Byte-level BPE trained on the corpus (streamed in pieces) by a worker process."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=work_folder("bpe")) as work:
        out = Path(work) / "tokenizer.json"
        _run_worker(
            corpus,
            {"job": "train", "vocab_size": vocab_size, "out": str(out)},
            Path(work),
            "training tokenizer",
            corpus.bytes,
            progress,
            should_stop,
        )
        return Tokenizer.from_str(out.read_text())


def encode_in_worker(
    tokenizer_file: Path,
    corpus: Corpus,
    parts: list[Part],
    path: Path,
    dtype,
    progress: Progress = _no_progress,
    should_stop: Callable[[], bool] = _never,
    phase: str = "encoding",
) -> None:
    """encode_to_file run by a worker process; `path` appears only when complete."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=work_folder("encode")) as work:
        out = Path(work) / "ids.bin"
        job = {
            "job": "encode",
            "tokenizer": str(tokenizer_file),
            "parts": parts,
            "out": str(out),
            "dtype": np.dtype(dtype).name,
            "phase": phase,
        }
        _run_worker(corpus, job, Path(work), phase, parts_bytes(corpus, parts), progress, should_stop)
        os.replace(out, path)


def get_tokenizer(
    corpus: Corpus, vocab_size: int, progress: Progress = _no_progress, should_stop: Callable[[], bool] = _never
) -> tuple[Tokenizer, Path]:
    path = cache_dir() / f"tokenizer-{corpus.digest}-{vocab_size}.json"
    if path.exists():
        return Tokenizer.from_file(str(path)), path
    tok = train_tokenizer(corpus, vocab_size, progress, should_stop)
    atomic_write_bytes(path, tok.to_str().encode())
    return tok, path


def split_docs(corpus: Corpus, val_fraction: float, seed: int = 0) -> tuple[list[Part], list[Part]]:
    """Train and validation parts. Text files are split by file (seeded, at least one each when
    there are two); every record file gives about val_fraction of its records to validation, chosen
    by record_share. A lone text file is all train (prepare holds out its tail instead)."""
    files = [i for i, d in enumerate(corpus.docs) if d.kind == "text"]
    record_files = [i for i, d in enumerate(corpus.docs) if d.kind != "text"]
    train: list[Part] = [(i, val_fraction, 1.0) for i in record_files]
    val: list[Part] = [(i, 0.0, val_fraction) for i in record_files]
    if len(files) == 1:
        train.append((files[0], 0.0, 1.0))
    elif files:
        order = list(files)
        random.Random(seed).shuffle(order)
        n_val = max(1, round(len(files) * val_fraction))
        train += [(i, 0.0, 1.0) for i in order[n_val:]]
        val += [(i, 0.0, 1.0) for i in order[:n_val]]
    return sorted(train), sorted(val)


def parts_bytes(corpus: Corpus, parts: list[Part]) -> int:
    """Bytes of text in the parts (a record file's share estimated from its size)."""
    return sum(int(corpus.docs[i].size * (hi - lo)) for i, lo, hi in parts)


@dataclass
class TokenData:
    train: np.ndarray  # 1-D memmap of ids
    val: np.ndarray
    tokenizer: Tokenizer
    tokenizer_path: Path
    vocab_used: int  # ids the tokenizer actually has (may be below the config's vocab_size)
    note: str  # how the split was made


def encode_to_file(
    tok: Tokenizer,
    corpus: Corpus,
    parts: list[Part],
    path: Path,
    dtype,
    progress: Progress = _no_progress,
    should_stop: Callable[[], bool] = _never,
    phase: str = "encoding",
) -> None:
    """Token ids of the documents in `parts` (each followed by EOT) into `path`, in ~1 MiB
    batches; the file appears only when complete."""
    eot = np.array([tok.token_to_id(EOT)], dtype)
    total = parts_bytes(corpus, parts)
    done = 0
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            batch: list[str] = []
            ends: list[bool] = []  # the piece ends its document: EOT follows it
            size = 0

            def flush() -> None:
                nonlocal done, size
                # encode_batch_fast: no offsets tracked (ids are all we keep), about twice as fast
                encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
                for enc, end in zip(encode(batch), ends, strict=True):
                    f.write(np.asarray(enc.ids, dtype).tobytes())
                    if end:
                        f.write(eot.tobytes())
                done += size
                batch.clear()
                ends.clear()
                size = 0
                progress(phase, done, total)
                if should_stop():
                    raise Interrupted(
                        f"stopped while {phase}; nothing was trained (the token cache keeps only complete entries)"
                    )

            for i, lo, hi in parts:
                for piece, end in corpus.texts(corpus.docs[i], ENCODE_PIECE_BYTES, lo, hi):
                    batch.append(piece)
                    ends.append(end)
                    size += len(piece.encode())
                    if size >= ENCODE_BATCH_BYTES:
                        flush()
            if batch:
                flush()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def split_note(corpus: Corpus, val_parts: list[Part], val_fraction: float) -> str:
    files = sum(d.kind == "text" for d in corpus.docs)
    records = sum(d.records for d in corpus.docs)
    held_files = sum(corpus.docs[i].kind == "text" for i, _, _ in val_parts)
    said = [f"{held_files} of {files} documents"] if files else []
    if records:
        said.append(f"about {val_fraction:.0%} of {records:,} records")
    return " and ".join(said)


def _cached_ids(path: Path, make: Callable[[Path], None], dtype) -> np.ndarray:
    if not path.exists():
        make(path)
    return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)


def token_cache_path(corpus: Corpus, vocab_size: int, val_fraction: float, part: str, tok_key: str = "") -> Path:
    """Where prepare() keeps the corpus's token ids of `part` ("train" or "val")."""
    return cache_dir() / f"tokens-{corpus.digest}-{vocab_size}-{val_fraction}{tok_key}-{part}.bin"


def prepare(
    corpus: Corpus,
    vocab_size: int,
    val_fraction: float,
    min_tokens: int,
    tokenizer_file: Path | None = None,
    progress: Progress = _no_progress,
    should_stop: Callable[[], bool] = _never,
) -> TokenData:
    """Token ids of the corpus, split into train and validation. With tokenizer_file (a resumed
    run's own tokenizer), encode with it instead of training one on this corpus."""
    remove_stale()
    if tokenizer_file is not None:
        import hashlib

        tok_path = Path(tokenizer_file)
        tok = Tokenizer.from_file(str(tok_path))
        tok_key = "tok" + hashlib.sha256(tok_path.read_bytes()).hexdigest()[:16]
    else:
        tok, tok_path = get_tokenizer(corpus, vocab_size, progress, should_stop)
        tok_key = ""
    dtype = np.uint16 if vocab_size <= 65535 else np.uint32
    train_parts, val_parts = split_docs(corpus, val_fraction)

    def encoder(parts: list[Part], phase: str):
        return lambda path: encode_in_worker(tok_path, corpus, parts, path, dtype, progress, should_stop, phase)

    train = _cached_ids(
        token_cache_path(corpus, vocab_size, val_fraction, "train", tok_key),
        encoder(train_parts, "encoding training text"),
        dtype,
    )
    if val_parts:
        val = _cached_ids(
            token_cache_path(corpus, vocab_size, val_fraction, "val", tok_key),
            encoder(val_parts, "encoding validation text"),
            dtype,
        )
        note = "validation: " + split_note(corpus, val_parts, val_fraction)
    else:  # a single document: hold out its last tokens instead
        cut = int(len(train) * (1 - val_fraction))
        train, val = train[:cut], train[cut:]
        note = f"validation: last {len(val)} tokens of the only document"
    if len(val) < min_tokens:  # validation documents too short for one window: borrow the train tail
        cut = len(train) - min_tokens
        train, val = train[:cut], train[cut:]
        note += f" (too short; using the last {min_tokens} training tokens)"
    if len(train) < min_tokens:
        raise DataError(
            f"{corpus.name}: only {len(train)} training tokens, a batch window needs {min_tokens}; "
            f"add text or lower max_length"
        )
    return TokenData(train, val, tok, tok_path, tok.get_vocab_size(), note)
