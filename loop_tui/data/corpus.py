"""Read a folder of text files into documents, skipping what is not usable text.

Hidden, empty, binary (NUL bytes) and non-UTF-8 files are skipped and counted; only an empty
result is an error. With no folder, the corpus is Python's own documentation
(pydoc_data.topics), which every Python ships, so a demo needs no download."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """Unusable data; str() is the one-line message for the user."""


@dataclass
class Corpus:
    name: str  # folder path, or "builtin:pydoc"
    docs: list[tuple[str, str]]  # (relative name, text), sorted by name
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for name, text in self.docs:
            h.update(name.encode())
            h.update(b"\0")
            h.update(text.encode())
            h.update(b"\0")
        return h.hexdigest()[:16]

    @property
    def chars(self) -> int:
        return sum(len(t) for _, t in self.docs)

    def summary(self) -> str:
        s = f"{self.name}: {len(self.docs)} documents, {self.chars / 1e6:.2f} M characters"
        if self.skipped:
            s += "; skipped " + ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return s


def builtin_corpus() -> Corpus:
    from pydoc_data.topics import topics

    return Corpus("builtin:pydoc (Python's documentation topics)", sorted(topics.items()))


def load_folder(path: str | Path) -> Corpus:
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: is not a folder (give a folder of text files)")
    docs, skipped = [], {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            if p.is_file():
                skip("hidden")
            continue
        if not p.is_file():
            continue
        try:
            raw = p.read_bytes()
        except OSError:
            skip("unreadable")
            continue
        if not raw.strip():
            skip("empty")
            continue
        if b"\0" in raw[:8192]:
            skip("binary")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            skip("not UTF-8")
            continue
        docs.append((str(rel), text))
    if not docs:
        detail = f" (skipped {sum(skipped.values())} files)" if skipped else ""
        raise DataError(f"{root}: no usable text files{detail}")
    return Corpus(str(root), docs, skipped)


def load_corpus(path: str | Path | None) -> Corpus:
    return builtin_corpus() if path is None else load_folder(path)
