"""The layering of docs/architecture.md, checked on the source: no import cycle between files,
no import that points up the layers, no cnnzoo import hidden inside a function.

The imports are read with `ast` (nothing is imported). Imports under `if TYPE_CHECKING:` are
left out: they never run. Function-local imports count, since they run as soon as the function
does.
"""

from __future__ import annotations

import ast
from pathlib import Path

from reference import REPO

SRC = REPO / "src" / "cnnzoo"

# The layers, bottom first. A file may import its own part and the parts of lower rank; parts
# of one rank never import each other (train and infer share only what checkpoint holds).
# "base" is the package's leaf utilities; "cnnzoo" is the top-level __init__ (the facade that
# re-exports create_model, profile, train): nothing below the CLI may import it.
LAYERS: list[set[str]] = [
    {"base"},
    {"layers"},
    {"models"},
    {"profile", "data"},
    {"checkpoint"},
    {"train", "infer"},
    {"experiments"},
    {"cnnzoo"},
    {"cli"},
]
BASE_FILES = {"fileio", "_version", "_callable", "cpuinfo"}
CLI_FILES = {"__main__"}
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def part_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "cnnzoo"
    if parts[1] in BASE_FILES:
        return "base"
    return "cli" if parts[1] in CLI_FILES else parts[1]


def _type_checking_blocks(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return ids


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + is_package]
            stem = ".".join(base + ([node.module] if node.module else []))
        else:
            stem = node.module or ""
        names = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
    found = []
    for name in names:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name.split(".")[0] == root_name(known):
            found.append(name)
    return found


def root_name(known: set[str]) -> str:
    return min(known, key=len)


def import_graph(root: Path) -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """Edges module -> imported modules, and the function-local ones as (module, line, target)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    known = set(files)
    edges: dict[str, set[str]] = {}
    local = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _type_checking_blocks(tree)
        in_function = {id(n) for f in ast.walk(tree)
                       if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                       for n in ast.walk(f)}
        edges[module] = set()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in skip:
                continue
            targets = _targets(node, module, path.name == "__init__.py", known)
            edges[module].update(t for t in targets if t != module)
            if id(node) in in_function:
                local += [(module, node.lineno, t) for t in targets]
    return edges, local


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def upward(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for a, targets in sorted(edges.items()):
        for b in sorted(targets):
            pa, pb = part_of(a), part_of(b)
            if pa != pb and (pa not in RANK or pb not in RANK or RANK[pb] >= RANK[pa]):
                bad.append(f"{a} ({pa}) imports {b} ({pb})")
    return bad


def test_no_import_cycle_between_files():
    edges, _ = import_graph(SRC)
    assert cycles(edges) == []


def test_every_import_points_down_the_layers():
    edges, _ = import_graph(SRC)
    assert upward(edges) == []


def test_no_cnnzoo_import_is_hidden_inside_a_function():
    _, local = import_graph(SRC)
    assert [f"{m}:{line} imports {t}" for m, line, t in local] == []


def test_every_part_is_in_the_layering():
    edges, _ = import_graph(SRC)
    assert {part_of(m) for m in edges} <= set(RANK)


def test_the_checks_catch_a_cycle_an_upward_import_and_a_local_import(tmp_path):
    pkg = tmp_path / "cnnzoo"
    for rel, text in {
        "__init__.py": "",
        "models/__init__.py": "",
        "models/a.py": "from cnnzoo.models import b\n",
        "models/b.py": "from cnnzoo.models.a import x\n",
        "models/c.py": "def f():\n    from cnnzoo.train import loop\n",
        "train/__init__.py": "",
        "train/loop.py": "from cnnzoo.models import a\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    edges, local = import_graph(pkg)
    assert cycles(edges) == [["cnnzoo.models.a", "cnnzoo.models.b"]]
    assert upward(edges) == ["cnnzoo.models.c (models) imports cnnzoo.train.loop (train)"]
    assert local == [("cnnzoo.models.c", 2, "cnnzoo.train.loop")]
