"""The package's import graph: no cycles between modules, and the layering the code relies on
(the OpenCL backend and the backend interface load without the C extension; the UI never
imports the CLI)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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
    cycle = find_cycle(graph(top_level_only=True))
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    g = graph(top_level_only=True)
    g["loop_tui.config"] = g["loop_tui.config"] | {"loop_tui.kernels"}  # kernels imports backend, backend config
    assert find_cycle(g) is not None


def test_ui_does_not_import_cli():
    g = graph()
    assert not any(d == "loop_tui.cli" for m, deps in g.items() if m.startswith("loop_tui.ui") for d in deps)


def test_backend_interface_and_opencl_load_without_the_c_extension():
    """With the C extension made unimportable, the backend interface and the OpenCL backend
    module still import (editing C makes the .so stale; OpenCL must not care)."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'loop_tui._kernels': raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import loop_tui.backend, loop_tui.opencl.backend\n"
        "assert 'loop_tui._kernels' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
