"""The layers of DESIGN.md, checked on the source: each package imports only the layers below it,
and the pure core (cluster, plan, carp) touches no socket, no clock and no event loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "iprotate"

MAY_IMPORT = {
    "cluster": set(),
    "plan": {"cluster"},
    "carp": {"cluster", "plan"},
    "bgp": {"cluster", "plan"},
    "engine": {"cluster", "plan", "carp", "bgp"},
    "export": {"cluster", "plan"},
    "lab": {"cluster", "plan", "carp", "bgp", "engine", "export"},
    "cli": {"cluster", "plan", "carp", "bgp", "engine", "export", "lab", "cli"},
}
# The pure core: driven with `now`, it never reads a clock or opens a socket.
IMPURE = {"socket", "time", "asyncio", "select", "subprocess", "pyroute2", "threading"}
PURE = {"cluster", "plan", "carp", "bgp"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _modules() -> list[tuple[str, Path]]:
    return [(p.parent.name, p) for p in sorted(PACKAGE.glob("*/*.py"))]


def test_every_module_lives_in_a_layer() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py"]
    assert {layer for layer, _ in _modules()} == set(MAY_IMPORT)


@pytest.mark.parametrize(("layer", "path"), _modules(), ids=lambda v: getattr(v, "name", v))
def test_imports_follow_the_layers(layer: str, path: Path) -> None:
    ours = {n.split(".")[1] for n in _imports(path) if n.startswith("iprotate.")}
    ours -= {"__version__"}
    assert ours <= MAY_IMPORT[layer] | {layer}, f"{path.name} reaches {ours - MAY_IMPORT[layer]}"
    if layer in PURE:
        outside = {n.split(".")[0] for n in _imports(path)} & IMPURE
        assert not outside, f"{path.name} is pure but imports {outside}"
