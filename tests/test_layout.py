"""The package's shape: imports run one way, the engines sit below the trainer, files stay small.

Read from the source text (no module is imported): each module's imports of
other microgpt modules, top-level or not, as the edges of a graph.
"""
import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "microgpt"
ENGINES = ("engine", "_pure", "_engine", "replay", "torch_engine")  # engine.py and what it picks among
ABOVE_ENGINES = ("train", "run", "cli")


def module_name(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def cython_imports(text, package):
    """`from .x import` / `from . import x` lines of a .pyx or its .pxi parts."""
    found = set()
    for dots, mod, names in re.findall(r"^\s*from\s+(\.+)(\w*(?:\.\w+)*)\s+c?import\s+(.+)$", text, re.M):
        base = package
        if mod:
            found.add(f"{base}.{mod}")
        else:
            found.update(f"{base}.{n.strip()}" for n in names.split(",") if n.strip().isidentifier())
    return found


def python_imports(tree, name, is_package):
    found = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if node.module:  # (from . import x: x, never the package itself)
                found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def import_graph():
    """{module: set of microgpt modules it imports}."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        modules[module_name(path)] = ("py", path)
    for path in PACKAGE.rglob("*.pyx"):
        modules[module_name(path)] = ("pyx", path)
    graph = {}
    for name, (kind, path) in modules.items():
        if kind == "py":
            raw = python_imports(ast.parse(path.read_text()), name, path.name == "__init__.py")
        else:
            text = path.read_text() + "".join(p.read_text() for p in path.parent.glob("_*.pxi"))
            raw = cython_imports(text, name.rpartition(".")[0])
        graph[name] = {m for m in raw if m in modules and m != name}
    return graph


def reached(graph, start):
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_engines_never_reach_the_trainer():
    graph = import_graph()
    for engine in ENGINES:
        name = f"microgpt.{engine}"
        assert name in graph
        above = sorted(m for m in reached(graph, name) if m.rpartition(".")[2] in ABOVE_ENGINES)
        assert not above, f"{name} reaches {above}"


def test_no_import_circle():
    graph = import_graph()
    # (the package's __init__ re-exports names of its modules, some of which read
    # __version__ from it: edges into the package itself are not followed)
    below = {name: targets - {"microgpt"} for name, targets in graph.items()}
    for name in below:
        assert name not in reached(below, name), f"{name} imports itself back"


# ---------------------------------------------------------------- files stay small

MAX_LINES = 300
SOURCES = sorted(p for pattern in ("*.py", "*.pyx", "*.pxi", "*.pxd") for p in PACKAGE.rglob(pattern))
SOURCES += sorted(p for pattern in ("*.c", "*.h") for p in (PACKAGE.parent / "src").rglob(pattern))


def relative(path):
    return str(path.relative_to(PACKAGE.parent))


@pytest.mark.parametrize("path", SOURCES, ids=relative)
def test_a_long_file_says_why_in_its_first_lines(path):
    """One job a file: a file over MAX_LINES lines says in its first lines how long it is and why."""
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_LINES or re.search(r"\d+ lines", "\n".join(lines[:12])), \
        f"{len(lines)} lines and no word on why in the first lines"
