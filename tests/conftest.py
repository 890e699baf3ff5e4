import os
from pathlib import Path

import pytest

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("LOOP_DATA_THREADS", "1")  # the data-preparation worker's tokenizer threads

WIKI = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "wiki"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tokenizer and peak caches go to one temporary folder per test session; saved configs to
    another (a test never reads or writes the user's own)."""
    if "LOOP_CACHE_DIR" not in os.environ or os.environ.get("LOOP_TEST_SHARED_CACHE") != "1":
        monkeypatch.setenv("LOOP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "loop-cache"))
    monkeypatch.setenv("LOOP_CONFIG_DIR", str(tmp_path_factory.getbasetemp() / "loop-configs"))


@pytest.fixture(autouse=True)
def _restore_process_state():
    """cli.main sets signal handlers and the kernels' thread count; later tests need them as they were."""
    import signal

    from loop_tui import kernels

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    threads = kernels.get_num_threads()
    yield
    for s, h in before.items():
        signal.signal(s, h)
    kernels.set_num_threads(threads)


@pytest.fixture(params=["generic", "avx2", "avx512", "neon"])
def isa(request):
    """Runs a test once per instruction set this CPU has (the others are skipped)."""
    from loop_tui import kernels as K

    if request.param not in K.available_isas():
        pytest.skip(f"this CPU cannot run {request.param}")
    before = K.isa()
    K.set_isa(request.param)
    yield request.param
    K.set_isa(before)


@pytest.fixture
def wiki_dir():
    if not WIKI.is_dir():
        pytest.skip("../shared/data/wiki is not present (fresh clone)")
    return WIKI
