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


def test_a_refused_measurement_is_returned_but_measured_again_next_time(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOP_CACHE_DIR", str(tmp_path))
    values = iter([1.0, 5.0])
    keep = lambda v: v > 2
    assert cache.measured("m.json", "k", lambda: next(values), keep) == 1.0
    assert not (tmp_path / "m.json").exists()
    assert cache.measured("m.json", "k", lambda: next(values), keep) == 5.0
    assert cache.measured("m.json", "k", lambda: 9.0, keep) == 5.0


def test_a_peak_measured_beside_other_work_is_not_kept(tmp_path, monkeypatch):
    """Two threads that multiply slower than one were sharing the cores (a cached 2-thread fp32 peak
    of 50 GFLOP/s beside a 1-thread one of 106 once showed MFU of 260%)."""
    from loop_tui.kernels import peak, runtime

    monkeypatch.setenv("LOOP_CACHE_DIR", str(tmp_path))
    busy = {1: 106.0, 2: 50.0}
    monkeypatch.setattr(runtime, "measure_peak_gflops", lambda s, p: busy[runtime.get_num_threads()])
    threads = runtime.get_num_threads()
    runtime.set_num_threads(2)
    try:
        assert peak.peak_gflops("fp32") == 212.0  # two threads' worth of the one-thread peak, not 50
        assert runtime.get_num_threads() == 2
        busy[2] = 190.0  # idle now: measured again, and kept
        assert peak.peak_gflops("fp32") == 190.0
        busy[2] = 10.0
        assert peak.peak_gflops("fp32") == 190.0
    finally:
        runtime.set_num_threads(threads)
    keys = orjson.loads((tmp_path / "peak.json").read_bytes())
    assert sorted(k.rsplit("|", 1)[1] for k in keys) == ["1", "2"]
