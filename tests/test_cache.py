"""The cache folder's measured-once values (FMA peak, OpenCL autotune use it)."""

import orjson

from loop_tui import cache


def test_measured_once_then_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOP_CACHE_DIR", str(tmp_path))
    calls = []
    measure = lambda: calls.append(1) or {"v": len(calls)}
    assert cache.measured("m.json", "cpu|avx512|2", measure) == {"v": 1}
    assert cache.measured("m.json", "cpu|avx512|2", measure) == {"v": 1}
    assert cache.measured("m.json", "cpu|avx2|2", measure) == {"v": 2}  # another key is measured anew
    assert len(calls) == 2
    assert set(orjson.loads((tmp_path / "m.json").read_bytes())) == {"cpu|avx512|2", "cpu|avx2|2"}
    assert not list(tmp_path.glob("*.tmp*"))


def test_unreadable_file_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOP_CACHE_DIR", str(tmp_path))
    (tmp_path / "m.json").write_bytes(b"{not json")
    assert cache.measured("m.json", "k", lambda: 3.5) == 3.5
    assert orjson.loads((tmp_path / "m.json").read_bytes()) == {"k": 3.5}


def test_folder_follows_xdg_cache_home_and_loop_cache_dir_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "loop_tui"
    monkeypatch.setenv("LOOP_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine" and (tmp_path / "mine").is_dir()
