"""The package's import graph, every import statement read (lazy ones inside functions too): no
cycles between modules, no module importing a layer above its own, the backends reached only
through loop_tui.backend; and what that layering buys: the backend interface, the OpenCL backend
and the trainer on OpenCL load and run without the C extension; the UI never imports the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "loop_tui"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, top_level_only: bool = False) -> set[str]:
    """loop_tui modules this file imports: at module level (what runs at import time), or also
    inside functions (lazy imports, e.g. make_backend loading a backend on demand)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("loop_tui")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("loop_tui"):
                continue
            for alias in node.names:  # `from . import kernels` names a module, not an attribute
                sub = f"{target}.{alias.name}"
                found.add(
                    sub
                    if (PKG.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                    or (PKG.parent / sub.replace(".", "/")).is_dir()
                    else target
                )
    return {m for m in found if m != name}


def graph(top_level_only: bool = False) -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {d for d in imports_of(p, top_level_only) if d in mods} for m, p in mods.items()}


# The layers, lowest first: a module imports only modules of its own layer or below. The backends
# sit on the leaves; everything above them reaches kernels only through loop_tui.backend (the
# interface and the factory), so a stale C build or a missing pyopencl stops only the backend used.
LAYERS = (
    (
        "loop_tui.errors",
        "loop_tui.config",
        "loop_tui.machine",
        "loop_tui.cache",
        "loop_tui.ops_table",
        "loop_tui.backend_common",
        "loop_tui.data",
    ),
    ("loop_tui.kernels", "loop_tui.opencl"),
    ("loop_tui.backend",),
    ("loop_tui.model",),
    (
        "loop_tui.train",
        "loop_tui.evaluate",
        "loop_tui.hf",
        "loop_tui.gguf_export",
        "loop_tui.plan",
        "loop_tui.sources",
        "loop_tui.analyze",
    ),
    ("loop_tui.ui",),
    ("loop_tui.cli", "loop_tui.__main__"),
)


def layer(module: str) -> int:
    if module == "loop_tui":
        return 0  # the package's __init__: its docstring and version
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_imports.py: add it")


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """A cycle between modules, ignoring a package's own __init__ importing its submodules."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if d.startswith(m + ".") or m.startswith(d + ".") and d == m.rsplit(".", 1)[0]:
                continue  # parent package <-> its own submodule: Python's normal package loading
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle():
    """Lazy imports (inside functions) count: they only postpone a cycle to the first call."""
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    g = graph()
    g["loop_tui.machine"] = g["loop_tui.machine"] | {"loop_tui.kernels.runtime"}  # runtime imports machine
    assert find_cycle(g) is not None


def test_the_graph_reads_imports_inside_functions():
    assert "loop_tui.kernels.backend" in graph()["loop_tui.backend"]  # make_backend's lazy import
    assert "loop_tui.kernels.backend" not in graph(top_level_only=True)["loop_tui.backend"]


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{m} -> {d}" for m, deps in graph().items() for d in deps if layer(d) > layer(m)]
    assert not upward, "\n".join(upward)


def test_only_the_backend_interface_imports_a_backend():
    """Above kernels/ and opencl/, the Backend (its ops, statistics, capabilities and decoder) is
    the only door to them."""
    around = [
        f"{m} -> {d}"
        for m, deps in graph().items()
        if layer(m) > layer("loop_tui.backend")
        for d in deps
        if layer(d) == layer("loop_tui.kernels")
    ]
    assert not around, "\n".join(around)


def test_ui_does_not_import_cli():
    g = graph()
    assert not any(d == "loop_tui.cli" for m, deps in g.items() if m.startswith("loop_tui.ui") for d in deps)


BLOCK_C_EXTENSION = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name == 'loop_tui._kernels': raise ImportError('blocked for the test')\n"
    "sys.meta_path.insert(0, Block())\n"
)


def test_backend_interface_and_opencl_load_without_the_c_extension():
    """With the C extension made unimportable, the backend interface and the OpenCL backend
    module still import (editing C makes the .so stale; OpenCL must not care)."""
    code = BLOCK_C_EXTENSION + (
        "import loop_tui.backend, loop_tui.opencl.backend\nassert 'loop_tui._kernels' not in sys.modules\nprint('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_the_trainer_trains_on_opencl_without_the_c_extension(tmp_path):
    """A stale or missing C build stops only the C backend: the trainer imports, and trains two
    steps on --backend opencl, with the C extension made unimportable."""
    pytest.importorskip("pyopencl")
    from loop_tui.opencl.device import all_devices

    if not all_devices():
        pytest.skip("no OpenCL platform (pip install 'pyopencl[pocl]')")
    code = BLOCK_C_EXTENSION + (
        "from loop_tui.config import load_config\n"
        "from loop_tui.train.trainer import Trainer\n"
        "cfg = load_config('smoke').replace(backend='opencl', eval_every=1000, sample_every=1000,\n"
        "                                   checkpoint_every=1000, log_every=1)\n"
        f"t = Trainer(cfg, {str(tmp_path / 'run')!r})\n"
        "t.setup()\n"
        "t.run(steps=2)\n"
        "t.close()\n"
        "assert t.step == 2, t.step\n"
        "assert 'loop_tui._kernels' not in sys.modules and 'loop_tui.kernels' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
