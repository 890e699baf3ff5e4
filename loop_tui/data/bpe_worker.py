"""Data preparation in its own process (tokens.py starts it): Ctrl-C can stop it at once, it may
use every core, and its memory goes back to the OS when it ends.

    python -m loop_tui.data.bpe_worker SPEC.json

SPEC holds the documents (file paths, or texts for the built-in corpus), the records' text field
and the job: "train" a byte-level BPE of `vocab_size` ids into `out`, or "encode" the documents
of `parts` (tokens.Part: [doc index, lo, hi]) with the tokenizer file `tokenizer` into the ids file
`out` (`dtype`). Progress goes to stdout, one line per piece done: the bytes of text processed so far."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson


def report(done: int) -> None:
    sys.stdout.write(f"{done}\n")
    sys.stdout.flush()


def train(corpus, spec: dict) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from .tokens import ENCODE_PIECE_BYTES, EOT

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
            for piece in corpus.pieces(doc, ENCODE_PIECE_BYTES):  # short strings: see ENCODE_PIECE_BYTES
                yield piece
                done += len(piece.encode())
                report(done)

    tok.train_from_iterator(texts(), trainer=trainer)
    tmp = Path(spec["out"] + ".part")
    tmp.write_text(tok.to_str())
    tmp.replace(spec["out"])


def encode(corpus, spec: dict) -> None:
    from tokenizers import Tokenizer

    from .tokens import encode_to_file

    tok = Tokenizer.from_file(spec["tokenizer"])
    encode_to_file(
        tok,
        corpus,
        [tuple(part) for part in spec["parts"]],
        Path(spec["out"]),
        spec["dtype"],
        progress=lambda phase, done, total: report(done),
        phase=spec["phase"],
    )


def main(spec_path: str) -> None:
    from .corpus import Corpus, Doc, path_from_json

    spec = orjson.loads(Path(spec_path).read_bytes())
    docs = [
        Doc(
            d["name"],
            d["size"],
            path=path_from_json(d["path"]) if d.get("path") else None,
            text=d.get("text"),
            kind=d["kind"],
            records=d["records"],
        )
        for d in spec["docs"]
    ]
    corpus = Corpus(spec["name"], docs, digest="", text_field=spec["text_field"])
    try:
        {"train": train, "encode": encode}[spec["job"]](corpus, spec)
    except OSError as e:  # the parent turns this exit code and line into a StorageError
        from ..errors import EXIT_OS

        print(f"{e.filename or spec['out']}: {e.strerror or e}", file=sys.stderr)
        sys.exit(EXIT_OS)


if __name__ == "__main__":
    main(sys.argv[1])
