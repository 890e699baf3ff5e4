"""Cache detection from sysfs fixture trees (complete, partial, missing) and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop_tui import machine


def make_tree(root: Path, cpus: int, levels: list[tuple], shared: dict | None = None) -> Path:
    """levels: (index, level, type, size); shared: level -> function(cpu) -> shared_cpu_list"""
    shared = shared or {}
    for cpu in range(cpus):
        for idx, level, ctype, size in levels:
            d = root / f"cpu{cpu}" / "cache" / f"index{idx}"
            d.mkdir(parents=True)
            (d / "level").write_text(f"{level}\n")
            (d / "type").write_text(f"{ctype}\n")
            (d / "size").write_text(f"{size}\n")
            (d / "coherency_line_size").write_text("64\n")
            (d / "shared_cpu_list").write_text(shared.get(level, lambda c: str(c))(cpu) + "\n")
    return root


INTEL = [(0, 1, "Data", "48K"), (1, 1, "Instruction", "32K"), (2, 2, "Unified", "2048K"), (3, 3, "Unified", "32768K")]


def test_full_tree(tmp_path):
    root = make_tree(tmp_path, 4, INTEL, {3: lambda c: "0-3"})
    c = machine.detect_caches(root=root)
    assert c.source == "sysfs"
    assert [(lv.name, lv.size, lv.instances) for lv in c.levels] == [
        ("L1d", 48 * 1024, 4),
        ("L2", 2 * 1024**2, 4),
        ("L3", 32 * 1024**2, 1),
    ]
    assert c.get("L3").shared_cpu_list == "0-3"


def test_missing_tree_falls_back_and_says_so(tmp_path):
    c = machine.detect_caches(root=tmp_path / "nothing")
    assert c.source == "fallback"
    assert c.size("L1d") == machine.FALLBACK["L1d"]
    assert any("not in sysfs" in n for n in c.notes)


def test_partial_tree(tmp_path):
    root = make_tree(tmp_path, 2, [(0, 1, "Data", "32K"), (2, 2, "Unified", "1024K")])
    # a broken entry: no size file
    bad = root / "cpu0" / "cache" / "index9"
    bad.mkdir()
    (bad / "level").write_text("3\n")
    (bad / "type").write_text("Unified\n")
    c = machine.detect_caches(root=root)
    assert c.source == "sysfs+fallback"
    assert c.size("L2") == 1024 * 1024 and c.size("L3") == machine.FALLBACK["L3"]


def test_override_reproduces_the_notes_laptop(tmp_path):
    root = make_tree(tmp_path, 2, INTEL)
    c = machine.detect_caches("L1=48K,L2=512K,L3=8M", root=root)
    assert (c.size("L1d"), c.size("L2"), c.size("L3")) == (48 * 1024, 512 * 1024, 8 * 1024**2)
    assert "override" in c.source


@pytest.mark.parametrize("bad", ["L4=1M", "L1", "L2=lots", "L1=-3K"])
def test_bad_override(bad):
    with pytest.raises(ValueError):
        machine.parse_override(bad)


def test_parse_size():
    assert machine.parse_size("48K") == 49152
    assert machine.parse_size("2M") == 2 * 1024**2
    assert machine.parse_size("512") == 512


def test_this_machine_uses_sysfs_not_sysconf():
    index3 = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    if not index3.exists():
        pytest.skip("this machine's sysfs has no cache tree (the fixture-tree tests above cover detection)")
    c = machine.detect_caches()
    assert c.source.startswith("sysfs")
    assert c.size("L3") == machine.parse_size(index3.read_text().strip())
