"""JSONL and Parquet input: each record's text field is one document, read in bounded memory."""

from __future__ import annotations

import gzip
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import orjson
import pytest

from loop_tui import cli
from loop_tui.data import tokens as tokens_mod
from loop_tui.data.corpus import DataError, load_corpus, record_salt, record_share

WORDS = "the a of river stone light wind small ship north morning quiet field house open read".split()


def sentence(rng: np.random.Generator, words: int = 30) -> str:
    return " ".join(rng.choice(WORDS, size=words)) + ".\n"


def write_jsonl(path: Path, records: list, gz: bool = False) -> Path:
    raw = b"".join(orjson.dumps(r) + b"\n" for r in records)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def texts_of(corpus, doc) -> list[str]:
    """The documents of `doc` as whole texts (pieces joined up to each end)."""
    out, cur = [], []
    for piece, end in corpus.texts(doc, 64):
        cur.append(piece)
        if end:
            out.append("".join(cur))
            cur = []
    return out


def test_jsonl_records_are_documents_and_unusable_lines_are_counted(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    good = ["first record text\nwith two lines", "second {braces} stay text", "third"]
    records = [
        {"text": good[0], "id": 1},
        {"id": 2},  # no text: skipped
        {"text": good[1]},
        {"text": 5},  # not a string
        {"text": None},
        {"text": "   "},  # empty
        {"text": good[2]},
    ]
    raw = b"".join(orjson.dumps(r) + b"\n" for r in records) + b"not json\n[1, 2]\n\n"
    (d / "a.jsonl").write_bytes(raw)
    write_jsonl(d / "b.jsonl.gz", [{"text": "zipped one"}, {"text": "zipped two"}], gz=True)
    (d / "c.json").write_text('{"text": "not read"}')
    (d / "d.csv").write_text("text\nnot read\n")
    (d / "e.txt").write_text("a plain text file\n")

    c = load_corpus(d)
    assert [(doc.name, doc.kind, doc.records) for doc in c.docs] == [
        ("a.jsonl", "jsonl", 3),
        ("b.jsonl.gz", "jsonl", 2),
        ("e.txt", "text", 0),
    ]
    assert texts_of(c, c.docs[0]) == good
    assert texts_of(c, c.docs[1]) == ["zipped one", "zipped two"]
    assert texts_of(c, c.docs[2]) == ["a plain text file\n"]
    assert c.docs[0].size == sum(len(t.encode()) for t in good)
    assert c.skipped == {
        "JSON/CSV files": 2,
        "records without 'text'": 2,
        "records whose 'text' is not a string": 1,
        "empty records": 1,
        "lines not JSON": 1,
        "lines not JSON objects": 1,
    }
    assert "skipped 2 JSON/CSV files" in c.summary()


def test_text_field_selects_another_field_and_changes_the_digest(tmp_path):
    f = write_jsonl(tmp_path / "x.jsonl", [{"text": "short", "content": "the long body one"}, {"content": "body two"}])
    by_text, by_content = load_corpus(f), load_corpus(f, "content")
    assert texts_of(by_text, by_text.docs[0]) == ["short"]
    assert by_text.skipped == {"records without 'text'": 1}
    assert texts_of(by_content, by_content.docs[0]) == ["the long body one", "body two"]
    assert by_text.digest != by_content.digest
    # the digest follows the text: same text, same digest; other text, another digest
    assert load_corpus(f, "content").digest == by_content.digest
    write_jsonl(f, [{"text": "short", "content": "the long body one"}, {"content": "body 2"}])
    assert load_corpus(f, "content").digest != by_content.digest


def test_a_file_without_the_field_says_how_to_read_it(tmp_path):
    f = write_jsonl(tmp_path / "x.jsonl", [{"body": "some text"}] * 3)
    with pytest.raises(DataError, match=r"1 files with no usable records; 3 records without 'text': --text-field NAME"):
        load_corpus(f)


def test_records_split_by_record_and_encode_each_followed_by_eot(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOP_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    texts = [f"record {i}: " + sentence(rng) for i in range(300)]
    f = write_jsonl(tmp_path / "one.jsonl", [{"text": t} for t in texts])
    c = load_corpus(f)
    train_parts, val_parts = tokens_mod.split_docs(c, 0.1)
    assert train_parts == [(0, 0.1, 1.0)] and val_parts == [(0, 0.0, 0.1)]
    salt = record_salt(c.docs[0].name)
    held = [i for i in range(len(texts)) if record_share(salt, i) < 0.1]
    assert 10 <= len(held) <= 50  # about a tenth, spread by a hash

    data = tokens_mod.prepare(c, 400, 0.1, 33)
    tok, eot = data.tokenizer, data.tokenizer.token_to_id(tokens_mod.EOT)

    def ids(which):
        return np.concatenate([np.r_[tok.encode(texts[i]).ids, eot] for i in which])

    assert np.array_equal(data.val, ids(held))
    assert np.array_equal(data.train, ids(i for i in range(len(texts)) if i not in held))
    assert "records" in data.note
    assert b"{" not in tok.decode(list(map(int, data.train[:200]))).encode()  # keys and braces are never trained on


def test_jsonl_is_read_in_bounded_memory(tmp_path):
    rng = np.random.default_rng(1)
    line = sentence(rng, 150)  # ~1 KB of text per record
    f = write_jsonl(tmp_path / "big.jsonl.gz", [{"text": f"{i} {line}", "meta": "x"} for i in range(8000)], gz=True)
    text_bytes = 8000 * len(line)
    tracemalloc.start()
    try:
        c = load_corpus(f)
        pieces = sum(1 for _ in c.texts(c.docs[0], 4096))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert c.docs[0].records == 8000 and pieces == 8000
    assert peak < text_bytes / 8, f"peak {peak} bytes for {text_bytes} bytes of text"


def parquet_file(path: Path, columns: dict, row_group_size: int = 4) -> Path:
    """Skips the test without pyarrow."""
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pyarrow.table(columns), path, row_group_size=row_group_size)
    return path


def test_parquet_text_column_read_in_row_groups(tmp_path):
    texts = [f"row {i} of the table" for i in range(10)]
    f = parquet_file(tmp_path / "t.parquet", {"text": texts[:3] + [None] + texts[3:], "body": ["b"] * 11})
    c = load_corpus(tmp_path)
    assert (c.docs[0].kind, c.docs[0].records) == ("parquet", 10)
    assert texts_of(c, c.docs[0]) == texts
    assert c.skipped == {"records without 'text'": 1}
    by_body = load_corpus(f, "body")
    assert texts_of(by_body, by_body.docs[0]) == ["b"] * 11 and by_body.digest != c.digest
    # a file without the column is skipped whole, saying which columns it has
    parquet_file(tmp_path / "u.parquet", {"other": ["x"]})
    c2 = load_corpus(tmp_path)
    assert [d.name for d in c2.docs] == ["t.parquet"]
    assert c2.skipped["Parquet files without a 'text' column (this one has: other)"] == 1


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "t.parquet").write_bytes(b"PAR1 not really")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    run = tmp_path / "run"
    code = cli.main(["train", "smoke", "--no-tui", "--steps", "1", "--out", str(run), "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0
    lines = [x for x in err.splitlines() if x.startswith("loop: error:")]
    assert len(lines) == 1 and "pip install" in lines[0] and "pyarrow" in lines[0], err


def test_resume_without_data_reads_the_runs_field_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOOP_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(2)
    f = write_jsonl(tmp_path / "d.jsonl", [{"body": sentence(rng, 60)} for _ in range(60)])
    run = tmp_path / "run"
    first = ["train", "smoke", "--no-tui", "--steps", "2", "--out", str(run), "--data", str(f), "--text-field", "body"]
    assert cli.main(first) == 0
    assert orjson.loads((run / "config.json").read_bytes())["text_field"] == "body"
    capsys.readouterr()
    # no --data, no --text-field: the run's own data, read by its own field (not 'text', which it lacks)
    assert cli.main(["train", "smoke", "--no-tui", "--steps", "1", "--out", str(run), "--resume"]) == 0
    assert "done: step 3" in capsys.readouterr().out
