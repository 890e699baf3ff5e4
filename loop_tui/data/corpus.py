"""A folder of text files (or one file) as documents, read lazily so any corpus fits in bounded memory.

Loading scans each file once in 1 MiB blocks: hidden, empty, binary (NUL bytes) and non-UTF-8
files are skipped and counted, and the corpus digest is computed on the way; no text is kept.
Symlinked subfolders are not followed (a link can loop back up the tree) and are counted as
skipped; symlinked files are read. File names need not be UTF-8: they are opened by their bytes
and shown with the odd bytes escaped (caf\xe9.txt).
Later passes (tokenizer training, encoding) stream each document as pieces of about 1 MiB cut
at line breaks (`pieces`). Only an empty result is an error, and it says why every file was
skipped. With no folder, the corpus is Python's own documentation (pydoc_data.topics), which
every Python ships, so a demo needs no download.

Datasets as people download them are records: JSON Lines (`.jsonl`, `.jsonl.gz`, one object per
line) and Parquet (`.parquet`, read in batches of rows with pyarrow, an optional extra). Each
record's text field ("text" unless told) is one document; records without it are counted and
skipped. Such a file is read one line or one batch of rows at a time, as a text file is read in
blocks. `.json` and `.csv` files are skipped with a count: their syntax is not text to learn."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ..errors import LoopError

CHUNK_BYTES = 1 << 20  # read and tokenize in pieces of about this size
DEFAULT_TEXT_FIELD = "text"
PARQUET_BATCH_ROWS = 1024  # rows decoded at a time: memory is bounded by the longest texts, not the file
NOT_TEXT_SUFFIXES = (".json", ".csv")  # structured files whose syntax is not text to learn
PYARROW_HINT = "reading Parquet needs pyarrow: pip install 'loop_tui[parquet]' (or pip install pyarrow)"


class DataError(LoopError):
    """Unusable data; str() is the one-line message for the user."""


@dataclass(frozen=True)
class Doc:
    name: str  # path relative to the folder, printable (a topic name for the built-in corpus)
    size: int  # bytes of UTF-8 text
    path: Path | None = None  # the file, read again when needed
    text: str | None = None  # held in memory instead (the small built-in corpus only)
    kind: str = "text"  # "text" (the file is one document), or "jsonl"/"parquet" (each record is one)
    records: int = 0  # records kept (a jsonl or parquet file)


# A slice of a document for one split: (index in corpus.docs, lo, hi). A text document is whole
# (0, 1); a record file keeps the records whose position hashes into [lo, hi) (see record_share).
Part = tuple[int, float, float]


@dataclass
class Corpus:
    name: str  # folder path (printable), or "builtin:pydoc"
    docs: list[Doc]  # sorted by name
    digest: str  # sha256 over every (name, text), first 16 hex digits
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    text_field: str = DEFAULT_TEXT_FIELD  # the field (column) of a record that holds its text

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
        at a line break when one is near (always the same cuts for the same text); a record file's
        records one after another (each cut on its own)."""
        for piece, _ in self.texts(doc, chunk):
            yield piece

    def documents(
        self, doc: Doc, chunk: int | None = None, lo: float = 0.0, hi: float = 1.0
    ) -> Iterator[Iterator[str]]:
        """The documents of the part [lo, hi) of `doc` (see Part), each as its pieces of about
        `chunk` bytes: a text file is one document (streamed from the file); in a record file each
        record whose record_share is in [lo, hi) is one. Take each document's pieces before the next."""
        chunk = chunk or CHUNK_BYTES
        if doc.kind == "text":
            yield self._file_pieces(doc, chunk)
            return
        salt = record_salt(doc.name)
        whole = lo <= 0.0 and hi >= 1.0
        for j, text in enumerate(read_records(doc.path, doc.kind, self.text_field)):  # type: ignore[arg-type]
            if whole or lo <= record_share(salt, j) < hi:
                yield _cut(iter([text]), chunk)  # a record is one line or one row: already in memory

    def texts(self, doc: Doc, chunk: int | None = None, lo: float = 0.0, hi: float = 1.0) -> Iterator[tuple[str, bool]]:
        """(piece, ends a document) for each piece of `documents`."""
        for pieces in self.documents(doc, chunk, lo, hi):
            piece = next(pieces, None)
            while piece is not None:
                following = next(pieces, None)
                yield piece, following is None
                piece = following

    def _file_pieces(self, doc: Doc, chunk: int) -> Iterator[str]:
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


def record_salt(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


def record_share(salt: bytes, position: int) -> float:
    """Where record `position` of a file falls in [0, 1): a hash, so validation records are spread
    through the file (datasets are often sorted) and the split never depends on reading order."""
    h = hashlib.blake2b(position.to_bytes(8, "little"), key=salt, digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def record_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return None


class _FileSkipped(Exception):
    """A whole record file is unusable (the reason is the message)."""


def _record_text(value, text_field: str) -> tuple[str | None, str | None]:
    """(the text, None) for a usable field value, else (None, the reason to skip the record)."""
    if value is None:
        return None, f"records without '{text_field}'"
    if not isinstance(value, str):
        return None, f"records whose '{text_field}' is not a string"
    if not value.strip():
        return None, "empty records"
    return value, None


def _jsonl_records(path: Path, text_field: str) -> Iterator[tuple[str | None, str | None]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield None, "lines not JSON"
                continue
            if not isinstance(record, dict):
                yield None, "lines not JSON objects"
                continue
            yield _record_text(record.get(text_field), text_field)


def _parquet_records(path: Path, text_field: str) -> Iterator[tuple[str | None, str | None]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: {PYARROW_HINT}") from None
    with pq.ParquetFile(path) as pf:
        if text_field not in pf.schema_arrow.names:
            columns = ", ".join(pf.schema_arrow.names[:8])
            raise _FileSkipped(f"Parquet files without a '{text_field}' column (this one has: {columns})")
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
            for value in batch.column(0).to_pylist():
                yield _record_text(value, text_field)


def _all_records(path: Path, kind: str, text_field: str) -> Iterator[tuple[str | None, str | None]]:
    return _jsonl_records(path, text_field) if kind == "jsonl" else _parquet_records(path, text_field)


def read_records(path: Path, kind: str, text_field: str) -> Iterator[str]:
    """The texts of a record file's usable records, in file order."""
    for text, _ in _all_records(path, kind, text_field):
        if text is not None:
            yield text


# a damaged gzip or Parquet file: skipped as unreadable when scanned
_UNREADABLE = (OSError, EOFError, ValueError, zlib.error)


def _scan_records(path: Path, kind: str, text_field: str, h_doc: hashlib._Hash, skip) -> tuple[int, int] | str:
    """Feed the usable records' texts into h_doc (the field name first, so another field is another
    corpus); (records, bytes of text), or the reason to skip the whole file. Skipped records are
    counted through skip(reason)."""
    h_doc.update(f"records of {kind}, field {text_field}\0".encode())
    records = size = 0
    try:
        for text, reason in _all_records(path, kind, text_field):
            if text is None:
                skip(reason)
                continue
            raw = text.encode()
            h_doc.update(len(raw).to_bytes(8, "little") + raw)
            records += 1
            size += len(raw)
    except _FileSkipped as e:
        return str(e)
    except _UNREADABLE:
        return "unreadable"
    return (records, size) if records else "files with no usable records"


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
    "unreadable": "check their permissions (and that compressed files are complete)",
    "symlinked folder": "links to folders are not followed; give the linked folder as --data or copy it in",
    "JSON/CSV files": "give their text as JSON Lines (.jsonl, one object per line with a 'text' field)",
}


def _hint(reason: str) -> str:
    if reason.startswith(("records without", "Parquet files without")):
        return ": --text-field NAME reads another field"
    return f": {HINTS[reason]}" if reason in HINTS else ""


def load_folder(path: str | Path, text_field: str = DEFAULT_TEXT_FIELD) -> Corpus:
    """The documents of a folder (recursive), or of one file."""
    root = Path(path)
    name = printable(root)
    if not root.exists():
        raise DataError(f"{name}: data folder does not exist")
    files = [root] if root.is_file() else sorted(root.rglob("*"))
    base = root.parent if root.is_file() else root
    docs: list[Doc] = []
    skipped: dict[str, int] = {}
    digest = hashlib.sha256()

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for p in files:
        rel = p.relative_to(base)
        if any(part.startswith(".") for part in rel.parts):
            if p.is_file():
                skip("hidden")
            continue
        if p.is_symlink() and p.is_dir():
            skip("symlinked folder")
            continue
        if not p.is_file():
            continue
        kind = record_kind(p)
        if kind is None and p.suffix.lower() in NOT_TEXT_SUFFIXES:
            skip("JSON/CSV files")
            continue
        trial = digest.copy()  # the corpus digest goes on from here only if the file is kept
        trial.update(os.fsencode(rel) + b"\0")
        if kind is None:
            reason = _scan(p, trial)
            size, records = (0, 0) if reason else (p.stat().st_size, 0)
        else:
            scanned = _scan_records(p, kind, text_field, trial, skip)
            reason, (records, size) = (scanned, (0, 0)) if isinstance(scanned, str) else (None, scanned)
        if reason:
            skip(reason)
            continue
        trial.update(b"\0")
        digest = trial
        docs.append(Doc(printable(rel), size, path=p, kind=kind or "text", records=records))
    if not docs:
        why = "; ".join(f"{n} {r}{_hint(r)}" for r, n in sorted(skipped.items()))
        raise DataError(
            f"{name}: no usable text files" + (f" (skipped {why})" if skipped else " (the folder is empty)")
        )
    return Corpus(name, docs, digest.hexdigest()[:16], skipped, text_field)


def load_corpus(path: str | Path | None, text_field: str = DEFAULT_TEXT_FIELD) -> Corpus:
    return builtin_corpus() if path is None else load_folder(path, text_field)
