"""The package as a user gets it: `python -m build` makes the sdist and, from it, the wheel; each is
installed into a fresh venv outside the source tree and `loop` trains and generates from a temporary
folder. Installing the sdist compiles the C kernels on this machine, as it would on the user's.

The fresh venvs take their dependencies (numpy, textual, ...) from this interpreter's site-packages
through a .pth file, so nothing is downloaded; loop_tui itself comes only from the venv's own install
(the test checks where it was imported from, and that no PYTHONPATH leads back to the source tree)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("build", reason="the `build` package (dev extras) makes the sdist and wheel")


def run(cmd: list, cwd: Path, env: dict | None = None) -> str:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    what = " ".join(str(c) for c in cmd)
    assert r.returncode == 0, f"{what} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    """(sdist, wheel). No build isolation: the build requirements come from this environment."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT], cwd=out)
    (sdist,) = out.glob("loop_tui-*.tar.gz")
    (wheel,) = out.glob("loop_tui-*.whl")
    return sdist, wheel


def fresh_venv(folder: Path) -> Path:
    """A venv without pip whose dependencies resolve to this interpreter's site-packages; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=folder).strip()
    # a plain path entry: the .pth files inside it (this checkout's editable install) are not run
    (Path(site) / "loop_tui_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def check_installed(python: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LOOP_CONFIG_DIR")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    work = tmp_path / "work"
    work.mkdir()
    venv = python.parent.parent
    where = run([python, "-c", "import loop_tui; print(loop_tui.__file__)"], cwd=work, env=env)
    assert Path(where.strip()).is_relative_to(venv), where
    loop = venv / "bin" / "loop"
    info = run([loop, "info"], cwd=work, env=env)
    assert f"shipped in {venv}" in info and f"saved ones in {tmp_path / 'xdg-config' / 'loop_tui' / 'configs'}" in info
    assert f"runs: {work / 'runs'}" in info
    run([loop, "train", "smoke", "--no-tui", "--steps", "3", "--out", "first"], cwd=work, env=env)
    assert (work / "first" / "checkpoints").is_dir() and (work / "first" / "config.json").is_file()
    text = run([loop, "generate", "first", "--prompt", "The", "--tokens", "5", "--seed", "1"], cwd=work, env=env)
    assert text.startswith("The") and len(text.strip()) > len("The")


def test_sdist_carries_the_c_sources_and_the_wheel_the_configs_and_kernels(dists):
    sdist, wheel = dists
    names = tarfile.open(sdist).getnames()
    top = names[0].split("/")[0]
    c_files = sorted(p.name for p in (ROOT / "c").iterdir() if p.suffix in (".c", ".h", ".def"))
    assert f"{top}/build_kernels.py" in names and f"{top}/setup.py" in names
    assert (
        sorted(n.split("/")[-1] for n in names if n.startswith(f"{top}/c/") and n.endswith((".c", ".h", ".def")))
        == c_files
    )
    assert not any(n.endswith(".so") for n in names)
    inside = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (ROOT / "loop_tui" / "configs").glob("*.json"))
    assert sorted(n.split("/")[-1] for n in inside if n.startswith("loop_tui/configs/")) == shipped
    assert any(n.startswith("loop_tui/_kernels") and n.endswith(".so") for n in inside)
    assert "loop_tui/ui/loop.tcss" in inside and "loop_tui/opencl/kernels.cl" in inside


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installed_package_trains_and_generates_outside_the_source_tree(dists, kind, tmp_path):
    sdist, wheel = dists
    python = fresh_venv(tmp_path / "venv")
    # --force-reinstall: this environment's own loop_tui (visible through the .pth) is never touched,
    # as pip uninstalls nothing outside the venv it installs into
    run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--force-reinstall"]
        + [wheel if kind == "wheel" else sdist],
        cwd=tmp_path,
    )
    check_installed(python, tmp_path)
