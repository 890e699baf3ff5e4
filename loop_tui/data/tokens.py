"""Byte-level BPE (HuggingFace tokenizers) trained on the corpus, and the corpus as token ids.

Both are cached under the cache folder ($LOOP_CACHE_DIR, default ~/.cache/loop_tui) by corpus
digest and vocabulary size. Documents are split into train and validation by file (about
val_fraction of them, at least one) so the validation loss is measured on unseen documents.
Ids are stored as uint16 memmaps (uint32 when the vocabulary exceeds 65535)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..cache import atomic_write_bytes, cache_dir
from .corpus import Corpus, DataError

EOT = "<|endoftext|>"


def train_tokenizer(corpus: Corpus, vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((text for _, text in corpus.docs), trainer=trainer)
    return tok


def get_tokenizer(corpus: Corpus, vocab_size: int) -> tuple[Tokenizer, Path]:
    path = cache_dir() / f"tokenizer-{corpus.digest}-{vocab_size}.json"
    if path.exists():
        return Tokenizer.from_file(str(path)), path
    tok = train_tokenizer(corpus, vocab_size)
    atomic_write_bytes(path, tok.to_str().encode())
    return tok, path


def split_docs(corpus: Corpus, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of train and validation documents (by file, seeded, at least one each when possible)."""
    n = len(corpus.docs)
    if n == 1:
        return [0], []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(n * val_fraction))
    return sorted(order[n_val:]), sorted(order[:n_val])


@dataclass
class TokenData:
    train: np.ndarray  # 1-D memmap of ids
    val: np.ndarray
    tokenizer: Tokenizer
    tokenizer_path: Path
    vocab_used: int  # ids the tokenizer actually has (may be below the config's vocab_size)
    note: str  # how the split was made


def _encode(tok: Tokenizer, texts: list[str], dtype) -> np.ndarray:
    eot = tok.token_to_id(EOT)
    ids = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eot)
    return np.asarray(ids, dtype=dtype)


def _cached_ids(path: Path, make, dtype) -> np.ndarray:
    if not path.exists():
        atomic_write_bytes(path, make().tobytes())
    return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)


def prepare(corpus: Corpus, vocab_size: int, val_fraction: float, min_tokens: int,
            tokenizer_file: Path | None = None) -> TokenData:
    """Token ids of the corpus, split into train and validation. With tokenizer_file (a resumed
    run's own tokenizer), encode with it instead of training one on this corpus."""
    if tokenizer_file is not None:
        import hashlib

        tok_path = Path(tokenizer_file)
        tok = Tokenizer.from_file(str(tok_path))
        tok_key = "tok" + hashlib.sha256(tok_path.read_bytes()).hexdigest()[:16]
    else:
        tok, tok_path = get_tokenizer(corpus, vocab_size)
        tok_key = ""
    dtype = np.uint16 if vocab_size <= 65535 else np.uint32
    train_idx, val_idx = split_docs(corpus, val_fraction)
    key = f"{corpus.digest}-{vocab_size}-{val_fraction}{tok_key}"
    d = cache_dir()
    train = _cached_ids(d / f"tokens-{key}-train.bin", lambda: _encode(tok, [corpus.docs[i][1] for i in train_idx], dtype), dtype)
    if val_idx:
        val = _cached_ids(d / f"tokens-{key}-val.bin", lambda: _encode(tok, [corpus.docs[i][1] for i in val_idx], dtype), dtype)
        note = f"validation: {len(val_idx)} of {len(corpus.docs)} documents"
    else:  # a single document: hold out its last tokens instead
        cut = int(len(train) * (1 - val_fraction))
        train, val = train[:cut], train[cut:]
        note = f"validation: last {len(val)} tokens of the only document"
    if len(val) < min_tokens:  # validation documents too short for one window: borrow the train tail
        cut = len(train) - min_tokens
        train, val = train[:cut], train[cut:]
        note += f" (too short; using the last {min_tokens} training tokens)"
    if len(train) < min_tokens:
        raise DataError(f"{corpus.name}: only {len(train)} training tokens, a batch window needs {min_tokens}; "
                        f"add text or lower max_length")
    return TokenData(train, val, tok, tok_path, tok.get_vocab_size(), note)
