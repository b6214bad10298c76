"""The package's shape: no import circle between kerasemote's modules, no oversized module.

What counts as an edge from module A to module B (read from the source with ``ast``, nothing is imported):

- every ``import`` / ``from ... import`` statement anywhere in A: at module level, inside functions and
  classes, under ``if TYPE_CHECKING:``, in ``try`` blocks. A function-level import is still a dependency.
- ``importlib.import_module("literal")`` with a literal name.
- ``import kerasemote.x.y`` and ``from kerasemote.x.y import name``: an edge to ``kerasemote.x.y``, and
  to each package above it (``kerasemote.x``), whose ``__init__`` runs first, except the packages that
  contain A itself (Python has already started them before A runs; counting them would make every
  ``__init__`` that imports its own submodules a circle).
- ``from kerasemote.x import y`` where ``y`` is a submodule: an edge to ``kerasemote.x.y`` (plus the
  package edges above). Where ``y`` is a name: an edge to ``kerasemote.x`` itself, unless the package
  lists ``y`` in its lazy table ``_LAZY = {"name": "module", ...}`` (read by its ``__getattr__``):
  then the edge goes to that module, the one that really provides the name on first use.
- relative imports are resolved against A's package first.

The lazy ``__getattr__`` itself imports through ``importlib.import_module(_LAZY[name])``; that computed
name is not an edge, the ``_LAZY`` rule above stands in for it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "kerasemote"
MAX_LINES = 450


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package_dir`` (packages as ``__init__``)."""
    root = package_dir.name
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [root, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def lazy_tables(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Package -> its ``_LAZY`` table (lazily provided name -> module), where it has one."""
    tables = {}
    for name, path in modules.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets):
                tables[name] = ast.literal_eval(node.value)
    return tables


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _with_parents(importer: str, target: str, modules: dict[str, Path]) -> set[str]:
    """``target`` and the packages above it that ``importer`` is not inside of."""
    found = set()
    parts = target.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in modules:
            continue
        if name != target and (importer == name or importer.startswith(name + ".")):
            continue
        found.add(name)
    found.discard(importer)
    return found


def imports_of(module: str, modules: dict[str, Path], lazy: dict[str, dict[str, str]]) -> set[str]:
    """The modules of the package that ``module`` imports, by the rules in this file's docstring."""
    path = modules[module]
    edges: set[str] = set()

    def add(target: str) -> None:
        edges.update(_with_parents(module, target, modules))

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(module, path.name == "__init__.py", node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    add(sub)
                elif alias.name in lazy.get(base, {}):
                    add(lazy[base][alias.name])
                else:
                    add(base)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value)
    return {e for e in edges if e in modules and e != module}


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    modules = module_files(package_dir)
    lazy = lazy_tables(modules)
    return {name: imports_of(name, modules, lazy) for name in modules}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest circle through each group of modules that import each other."""
    return [_shortest_cycle(graph, group) for group in knots(graph)]


def knots(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules each reachable from every other (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        # Iterative Tarjan: the package's import chains are deeper than is comfortable for recursion.
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def _shortest_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    members = set(group)
    best: list[str] = []
    for start in group:
        paths = {start: [start]}
        frontier = [start]
        while frontier:
            nxt = []
            for node in frontier:
                for child in sorted(graph[node] & members):
                    if child == start:
                        cycle = paths[node] + [start]
                        if not best or len(cycle) < len(best):
                            best = cycle
                    elif child not in paths:
                        paths[child] = paths[node] + [child]
                        nxt.append(child)
            frontier = nxt
    return best


def format_cycles(graph: dict[str, set[str]]) -> str:
    """Each knot as one of its shortest circles, then every module caught in it."""
    return "\n".join(
        f"{' -> '.join(_shortest_cycle(graph, group))}  (modules in this knot: {', '.join(group)})"
        for group in knots(graph)
    )


def test_no_module_of_the_package_imports_itself_back_through_a_circle():
    graph = import_graph()
    assert not knots(graph), "import circles (module -> module it imports):\n" + format_cycles(graph)


def test_no_module_is_longer_than_the_limit():
    long = {
        str(path.relative_to(PACKAGE_DIR.parent)): n
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


# The walk itself, on small packages written for the purpose: each check fails if a rule is missing.


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_function_level_import_closes_a_circle(tmp_path):
    root = _package(tmp_path, {"a.py": "from pkg import b\n", "b.py": "def f():\n    from pkg.a import x\n"})
    assert find_cycles(import_graph(root)) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_relative_and_submodule_imports_are_edges(tmp_path):
    root = _package(tmp_path, {
        "sub/__init__.py": "",
        "sub/c.py": "from ..a import x\n",
        "a.py": "from pkg.sub import c\n",
    })
    graph = import_graph(root)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.a"}
    assert ["pkg.a", "pkg.sub.c", "pkg.a"] in find_cycles(graph)


def test_a_lazy_name_of_a_package_is_an_edge_to_the_module_that_provides_it(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "_LAZY = {'Thing': 'pkg.heavy'}\n",
        "heavy.py": "from pkg import light\n",
        "light.py": "def f():\n    from pkg import Thing\n",
        "other.py": "from pkg import version\n",
    })
    graph = import_graph(root)
    assert graph["pkg.light"] == {"pkg.heavy"} and graph["pkg.other"] == {"pkg"}
    assert find_cycles(graph) == [["pkg.heavy", "pkg.light", "pkg.heavy"]]


def test_a_package_init_that_imports_its_own_submodules_is_no_circle(tmp_path):
    root = _package(tmp_path, {
        "sub/__init__.py": "from pkg.sub.c import x\n",
        "sub/c.py": "from pkg.sub.d import y\n",
        "sub/d.py": "import os\n",
    })
    assert find_cycles(import_graph(root)) == []
    # ...but a module that imports a submodule runs the package's __init__ first, and that can close one.
    (root / "e.py").write_text("from pkg.sub.c import x\n")
    (root / "sub" / "c.py").write_text("x = 1\n")
    (root / "sub" / "d.py").write_text("def f():\n    import pkg.e\n")
    (root / "sub" / "__init__.py").write_text("from pkg.sub.d import y\n")
    assert find_cycles(import_graph(root)) == [["pkg.e", "pkg.sub", "pkg.sub.d", "pkg.e"]]
