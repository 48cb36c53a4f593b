"""Every import between the project's modules, and the package graph they make.

Reads each module's syntax tree (nothing is imported): module-level and function-level ``import`` statements,
imports under ``if TYPE_CHECKING:`` (an annotation is a dependency too), and imports made through strings: a
string literal that names a project module (``importlib.import_module`` tables such as
``{"mel": "dataloader.mel"}``) counts as an import of it.

    python tools/import_graph.py          # JSON: arrows per package pair, back arrows, module cycles, sizes
"""
from __future__ import annotations

import ast
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
# The declared order, lowest first: a package imports only itself and the packages before it.
LAYERS: tuple[str, ...] = ("utils", "dataloader", "factory", "inference", "training", "archive", "entry")
# Top-level scripts and the folders of programs that sit above every package.
ENTRY_SCRIPTS = ("train_classifier.py", "predict.py", "detect.py")
ENTRY_FOLDERS = ("benchmarks", "tools")
# Entry scripts that run a trained model: they use inference (and what it stands on), never training.
INFERENCE_ENTRIES = ("predict", "detect")


class Import(NamedTuple):
    """One import of a project module by another: ``how`` is ``import``, ``type_checking`` or ``string``."""

    source: str
    target: str
    name: str
    how: str
    line: int


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every project module (packages, entry folders and scripts)."""
    files = [p for folder in (*LAYERS, *ENTRY_FOLDERS) if (root / folder).is_dir()
             for p in (root / folder).rglob("*.py")]
    files += [root / s for s in ENTRY_SCRIPTS if (root / s).exists()]
    return {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p for p in sorted(files)}


def package_of(module: str) -> str:
    """The layer a module belongs to: its top folder, or ``entry`` for scripts and entry folders."""
    top = module.split(".")[0]
    return top if top in LAYERS[:-1] else "entry"


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers of the statements under ``if TYPE_CHECKING:`` blocks."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (getattr(node.test, "id", None) == "TYPE_CHECKING"
                                         or getattr(node.test, "attr", None) == "TYPE_CHECKING"):
            for stmt in node.body:
                lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved against ``module``)."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def module_imports(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    """Every import of a project module made by ``module`` (at any depth, typed-only and string ones included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typed = _type_checking_lines(tree)
    is_package = path.name == "__init__.py"

    def known(target: str) -> str | None:  # the longest project module that ``target`` is or lies in
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(tree):
        how = "type_checking" if getattr(node, "lineno", 0) in typed else "import"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (target := known(alias.name)) is not None:
                    yield Import(module, target, "", how, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:
                    yield Import(module, full, "", how, node.lineno)
                elif (target := known(base)) is not None:
                    yield Import(module, target, alias.name, how, node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.split(":")[0]  # "package.module" or "package.module:attribute"
            if text in modules and "." in text and text != module:
                yield Import(module, text, "", "string", node.lineno)


def all_imports(root: Path = ROOT) -> list[Import]:
    """Every import between project modules, a module's imports of itself left out."""
    modules = module_files(root)
    return [imp for name, path in modules.items() for imp in module_imports(name, path, modules)
            if imp.target != imp.source]


def package_arrows(imports: list[Import]) -> Counter:
    """(importing package, imported package) -> how many distinct (module, imported module) pairs make that
    arrow, imports within a package left out."""
    pairs = {(i.source, i.target) for i in imports if package_of(i.source) != package_of(i.target)}
    return Counter((package_of(a), package_of(b)) for a, b in pairs)


def closure(start: str, imports: list[Import]) -> set[str]:
    """Every project module ``start`` imports, directly or through others (``start`` included)."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        graph.setdefault(i.source, set()).add(i.target)
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def back_arrows(imports: list[Import]) -> list[Import]:
    """Imports that run against the declared order (a lower layer importing a higher one), and inference entry
    scripts importing training."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = {i for i in imports if rank[package_of(i.target)] > rank[package_of(i.source)]}
    bad |= {i for i in imports if i.source in INFERENCE_ENTRIES and package_of(i.target) not in LAYERS[:4]}
    return sorted(bad)


def module_cycles(imports: list[Import]) -> list[list[str]]:
    """The import cycles between modules (strongly connected components of more than one module, Tarjan's
    algorithm); a package's ``__init__`` importing its own modules is not counted against them."""
    graph: dict[str, set[str]] = {}
    for i in imports:
        if not i.target.startswith(i.source + "."):
            graph.setdefault(i.source, set()).add(i.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def report(root: Path = ROOT) -> dict:
    """The graph's figures: arrows per package pair, back arrows, module cycles, lines per package."""
    imports = all_imports(root)
    arrows = package_arrows(imports)
    lines = Counter()
    for name, path in module_files(root).items():
        lines[package_of(name) if package_of(name) != "entry" else name.split(".")[0]] += len(
            path.read_text().splitlines())
    return {"arrows": {f"{a} -> {b}": n for (a, b), n in sorted(arrows.items())},
            "back_arrows": [f"{i.source} -> {i.target} ({i.how}, line {i.line})" for i in back_arrows(imports)],
            "package_cycles": sorted({" <-> ".join(sorted((a, b))) for (a, b) in arrows if (b, a) in arrows}),
            "module_cycles": module_cycles(imports), "lines": dict(sorted(lines.items()))}


if __name__ == "__main__":
    print(json.dumps(report(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT), indent=1))
