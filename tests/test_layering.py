"""Dependencies point one way: rtl <- gen <- verif <- fpga <- sw <- bench.

Every ``import`` in every project module (top-level or inside a function) is parsed with ``ast``;
an import of a higher layer, or a cycle between modules, fails. The one place that names modules
of every layer is the CLI's command table (``nms.sw.cli.COMMANDS``), which holds module *names*
and imports only the chosen one: it is the composition root, and it is checked separately below
so that it cannot hide a real import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: folder -> (import name, layer rank); lower ranks never import higher ones
LAYERS = {
    "rtl": ("nms.rtl", 0),
    "gen": ("nms.gen", 1),
    "verif": ("nms.verif", 2),
    "fpga": ("nms.fpga", 3),
    "sw": ("nms.sw", 4),
    "bench": ("nms.bench", 5),
}
#: inside nms.verif the golden models sit below the cocotb infrastructure and the testbenches
VERIF_SUBLAYERS = {"nms.verif.models": 0, "nms.verif.sim": 1, "nms.verif.tb": 2}


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, (pkg, _) in LAYERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Project modules imported by ``name`` (resolved to the longest known module name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            if not t.startswith("nms."):
                continue
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _rank(mod: str) -> tuple[int, int]:
    for pkg, rank in LAYERS.values():
        if mod == pkg or mod.startswith(pkg + "."):
            sub = next((r for p, r in VERIF_SUBLAYERS.items()
                        if mod == p or mod.startswith(p + ".")), 0)
            return rank, sub
    raise AssertionError(f"{mod} is in no layer")


def test_every_layer_has_modules():
    for pkg, _ in LAYERS.values():
        assert any(m == pkg or m.startswith(pkg + ".") for m in MODULES), pkg


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_upward_import(mod):
    upward = sorted(dep for dep in GRAPH[mod] if _rank(dep) > _rank(mod))
    assert not upward, f"{mod} imports a higher layer: {upward}"


def test_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for dep in sorted(GRAPH[m]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_layering_check_catches_an_upward_import(tmp_path):
    """The parser sees lazy imports inside functions (the kind that hid the old cycles)."""
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from nms.sw.datasets import load_digits\n")
    assert "nms.sw.datasets" in _imports("nms.rtl.x", src)


def test_cli_command_table_names_real_modules():
    from nms.sw.cli import COMMANDS

    for command, (modname, _) in COMMANDS.items():
        assert modname in MODULES, f"nms {command}: {modname} is not a project module"
