"""Tokenizer training in its own process (tokens.train_tokenizer starts it): Ctrl-C can stop it at
once, and its memory is returned to the OS when it ends.

    python -m loop_tui.data.bpe_worker SPEC.json OUT.json

SPEC holds the vocabulary size and the documents (file paths, or texts for the built-in
corpus). Progress goes to stdout as one line per piece read: the bytes read so far."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson


def main(spec_path: str, out_path: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from .corpus import Corpus, Doc
    from .tokens import EOT

    spec = orjson.loads(Path(spec_path).read_bytes())
    docs = [
        Doc(d["name"], d["size"], path=Path(d["path"]) if d.get("path") else None, text=d.get("text"))
        for d in spec["docs"]
    ]
    corpus = Corpus(spec["name"], docs, digest="")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec["vocab_size"],
        special_tokens=[EOT],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    done = 0

    def texts():
        nonlocal done
        for doc in corpus.docs:
            for piece in corpus.pieces(doc, 1 << 16):  # short strings: see tokens.ENCODE_PIECE_BYTES
                yield piece
                done += len(piece.encode())
                sys.stdout.write(f"{done}\n")
                sys.stdout.flush()

    tok.train_from_iterator(texts(), trainer=trainer)
    tmp = Path(out_path + ".part")
    tmp.write_text(tok.to_str())
    tmp.replace(out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
