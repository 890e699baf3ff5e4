"""A folder of text files as documents, read lazily so any corpus fits in bounded memory.

Loading scans each file once in 1 MiB blocks: hidden, empty, binary (NUL bytes) and non-UTF-8
files are skipped and counted, and the corpus digest is computed on the way; no text is kept.
Symlinked subfolders are not followed (a link can loop back up the tree) and are counted as
skipped; symlinked files are read. File names need not be UTF-8: they are opened by their bytes
and shown with the odd bytes escaped (caf\xe9.txt).
Later passes (tokenizer training, encoding) stream each document as pieces of about 1 MiB cut
at line breaks (`pieces`). Only an empty result is an error, and it says why every file was
skipped. With no folder, the corpus is Python's own documentation (pydoc_data.topics), which
every Python ships, so a demo needs no download."""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LoopError

CHUNK_BYTES = 1 << 20  # read and tokenize in pieces of about this size


class DataError(LoopError):
    """Unusable data; str() is the one-line message for the user."""


@dataclass(frozen=True)
class Doc:
    name: str  # path relative to the folder, printable (a topic name for the built-in corpus)
    size: int  # bytes of UTF-8 text
    path: Path | None = None  # the file, read again when needed
    text: str | None = None  # held in memory instead (the small built-in corpus only)


@dataclass
class Corpus:
    name: str  # folder path (printable), or "builtin:pydoc"
    docs: list[Doc]  # sorted by name
    digest: str  # sha256 over every (name, text), first 16 hex digits
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    @property
    def bytes(self) -> int:
        return sum(d.size for d in self.docs)

    def summary(self) -> str:
        s = f"{self.name}: {len(self.docs)} documents, {self.bytes / 1e6:.2f} MB of text"
        if self.skipped:
            s += "; skipped " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return s

    def pieces(self, doc: Doc, chunk: int | None = None) -> Iterator[str]:
        """The document's text in pieces of about `chunk` bytes (default CHUNK_BYTES), each ending
        at a line break when one is near (always the same cuts for the same text)."""
        chunk = chunk or CHUNK_BYTES
        if doc.text is not None:
            yield from _cut(iter([doc.text]), chunk)
            return
        with open(doc.path, "rb") as f:  # type: ignore[arg-type]
            decoder = codecs.getincrementaldecoder("utf-8")()
            blocks = iter(lambda: f.read(chunk), b"")
            yield from _cut((decoder.decode(b) for b in blocks), chunk, tail=lambda: decoder.decode(b"", final=True))


def _cut(texts: Iterator[str], chunk: int, tail: Callable[[], str] | None = None) -> Iterator[str]:
    carry = ""
    for text in texts:
        carry += text
        while len(carry) >= chunk:
            cut = carry.rfind("\n", 0, chunk * 2) + 1
            if cut <= 0:  # no line break in reach: cut anyway (between characters)
                cut = chunk
            yield carry[:cut]
            carry = carry[cut:]
    if tail is not None:
        carry += tail()
    if carry:
        yield carry


def path_to_json(path: Path) -> str:
    """A file path as a JSON-safe string (its bytes as Latin-1): names that are not UTF-8 survive."""
    return os.fsencode(path).decode("latin-1")


def path_from_json(text: str) -> Path:
    return Path(os.fsdecode(text.encode("latin-1")))


def printable(path: str | Path) -> str:
    """A path as text that can be printed anywhere: bytes that are not UTF-8 (which Python holds
    as lone surrogates) shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def builtin_corpus() -> Corpus:
    from pydoc_data.topics import topics

    h = hashlib.sha256()
    docs = []
    for name, text in sorted(topics.items()):
        raw = text.encode()
        h.update(name.encode() + b"\0" + raw + b"\0")
        docs.append(Doc(name, len(raw), text=text))
    return Corpus("builtin:pydoc (Python's documentation topics)", docs, h.hexdigest()[:16])


def _scan(path: Path, h_doc: hashlib._Hash) -> str | None:
    """Feed the file's bytes into h_doc; the reason to skip it, or None if it is usable text."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    blank = True
    try:
        with open(path, "rb") as f:
            first = True
            while block := f.read(CHUNK_BYTES):
                if first and b"\0" in block[:8192]:
                    return "binary"
                first = False
                try:
                    decoder.decode(block)
                except UnicodeDecodeError:
                    return "not UTF-8"
                blank = blank and not block.strip()
                h_doc.update(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "not UTF-8"
    except OSError:
        return "unreadable"
    return "empty" if blank else None


HINTS = {
    "not UTF-8": "convert them to UTF-8 (e.g. iconv -f latin1 -t utf-8)",
    "binary": "give a folder of plain text",
    "hidden": "names starting with '.' are skipped",
    "empty": "the files hold no text",
    "unreadable": "check their permissions",
    "symlinked folder": "links to folders are not followed; give the linked folder as --data or copy it in",
}


def load_folder(path: str | Path) -> Corpus:
    root = Path(path)
    name = printable(root)
    if not root.exists():
        raise DataError(f"{name}: data folder does not exist")
    if not root.is_dir():
        raise DataError(f"{name}: is not a folder (give a folder of text files)")
    docs: list[Doc] = []
    skipped: dict[str, int] = {}
    digest = hashlib.sha256()

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            if p.is_file():
                skip("hidden")
            continue
        if p.is_symlink() and p.is_dir():
            skip("symlinked folder")
            continue
        if not p.is_file():
            continue
        trial = digest.copy()  # the corpus digest goes on from here only if the file is kept
        trial.update(os.fsencode(rel) + b"\0")
        reason = _scan(p, trial)
        if reason:
            skip(reason)
            continue
        trial.update(b"\0")
        digest = trial
        size = p.stat().st_size
        docs.append(Doc(printable(rel), size, path=p))
    if not docs:
        why = "; ".join(f"{n} {r}: {HINTS.get(r, '')}" for r, n in sorted(skipped.items()))
        raise DataError(
            f"{name}: no usable text files" + (f" (skipped {why})" if skipped else " (the folder is empty)")
        )
    return Corpus(name, docs, digest.hexdigest()[:16], skipped)


def load_corpus(path: str | Path | None) -> Corpus:
    return builtin_corpus() if path is None else load_folder(path)
