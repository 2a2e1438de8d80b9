"""docs/architecture.md's layer table against the imports that exist in slm_deploy (read with ast).

Every import counts, at module level, inside a function or under TYPE_CHECKING: a late import
changes when a module loads, not what depends on what.
"""

from __future__ import annotations

import ast
import itertools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "slm_deploy"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 500


@dataclass(frozen=True)
class Layer:
    rank: int
    name: str
    modules: tuple[str, ...]


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows of the first Markdown table after `heading`, cells stripped of backticks."""
    section = text.split(f"## {heading}\n", 1)[1]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if set("".join(cells)) <= {"-", " "}:
            continue
        rows.append(cells)
    return rows[1:]  # without the header


def _names(cell: str) -> tuple[str, ...]:
    return tuple(re.findall(r"`([\w.]+)`", cell))


def _full(name: str) -> str:
    return "slm_deploy" if name == "slm_deploy" else f"slm_deploy.{name}"


def load_layers(text: str) -> list[Layer]:
    return [Layer(int(r[0]), r[1], tuple(_full(n) for n in _names(r[2]))) for r in _table(text, "Layers")]


def load_forbidden(text: str) -> list[tuple[str, str]]:
    return [(_full(_names(r[0])[0]), _full(_names(r[1])[0])) for r in _table(text, "Imports no layer rule catches")]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The slm_deploy modules `name` imports; `from pkg import sub` names the submodule, not pkg."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target not in known and "." in target:
            target = target.rpartition(".")[0]
        if target in known and target != name:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "slm_deploy":
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] != "slm_deploy":
                continue
            for alias in node.names:
                add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
    return found


def layer_of(module: str, layers: list[Layer]) -> Layer | None:
    best: tuple[int, Layer] | None = None
    for layer in layers:
        for prefix in layer.modules:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), layer)
    return best[1] if best else None


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def violations(edges: dict[str, set[str]], layers: list[Layer], forbidden: list[tuple[str, str]]) -> list[str]:
    out = []
    for source, targets in sorted(edges.items()):
        here = layer_of(source, layers)
        if here is None:
            out.append(f"{source}: in no layer of docs/architecture.md")
            continue
        for target in sorted(targets):
            there = layer_of(target, layers)
            if there is None:
                continue  # reported as its own row
            if there.rank > here.rank:
                out.append(f"{source} ({here.name}) imports {target} ({there.name}): upward")
            for a, b in forbidden:
                if within(source, a) and within(target, b):
                    out.append(f"{source} imports {target}: {a} may not import {b}")
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def render_diagram(layers: list[Layer]) -> str:
    lines = ["```mermaid", "flowchart BT"]
    for layer in layers:
        names = ", ".join(m.removeprefix("slm_deploy.") for m in layer.modules)
        lines.append(f'  L{layer.rank}["{layer.rank} {layer.name}: {names}"]')
    lines += [f"  L{upper.rank} --> L{lower.rank}" for lower, upper in itertools.pairwise(layers)]
    lines.append("```")
    return "\n".join(lines)


TEXT = DOC.read_text(encoding="utf-8")


def test_every_import_points_down_or_sideways_and_none_is_forbidden() -> None:
    assert violations(graph(), load_layers(TEXT), load_forbidden(TEXT)) == []


def test_no_circle_among_the_modules() -> None:
    assert cycles(graph()) == []


def test_no_module_over_500_lines() -> None:
    over = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert {name: n for name, n in over.items() if n > MAX_LINES} == {}


def test_the_picture_is_the_layer_table() -> None:
    block = TEXT.split("<!-- diagram:start -->\n", 1)[1].split("\n<!-- diagram:end -->", 1)[0]
    assert block == render_diagram(load_layers(TEXT))


def test_layers_are_numbered_in_order() -> None:
    assert [layer.rank for layer in load_layers(TEXT)] == list(range(len(load_layers(TEXT))))


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ],
)
def test_the_circle_finder_finds_circles(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(edges) == expected


def test_an_upward_or_forbidden_import_is_reported() -> None:
    layers = [Layer(0, "low", ("slm_deploy.errors",)), Layer(1, "high", ("slm_deploy.bundle", "slm_deploy.stacks"))]
    edges = {"slm_deploy.errors": {"slm_deploy.bundle"}, "slm_deploy.bundle.compose": {"slm_deploy.stacks.program"}}
    found = violations(edges, layers, [("slm_deploy.bundle", "slm_deploy.stacks")])
    assert found == [
        "slm_deploy.bundle.compose imports slm_deploy.stacks.program: slm_deploy.bundle may not import slm_deploy.stacks",
        "slm_deploy.errors (low) imports slm_deploy.bundle (high): upward",
    ]


if __name__ == "__main__":
    print(render_diagram(load_layers(TEXT)))
