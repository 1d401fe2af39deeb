"""Importing the package: no side effects, no dependency on the runner, an import graph without cycles, and the
layering: stages depend on the core only (never on each other), and what monitoring, explore and the runner read
(checkpoints, the DuckDB views of the lake) comes from the core, not from a stage's orchestration.

The static checks read every module under condvest/ and runner/ with ast; nothing of either is imported for them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.paths import ROOT

PACKAGE = "condvest"
RUNNER = "runner"
#: condvest's stage packages, one per notebook (the offline market stands apart, as a stage would)
STAGES = ("fetch", "resample", "migrate", "retention", "monitoring", "explore", "offline")
#: imports of one stage by another that are known and allowed, as (importing module, imported stage package)
KNOWN_STAGE_IMPORTS = {
    # 05_monitoring shows the retention views and figures of 04_retention (Postgres), not yet moved to the core
    ("condvest.monitoring.snapshot", "condvest.retention"),
}


@dataclass(frozen=True)
class Import:
    """One import statement: where it is, what it names (resolved to modules), and whether a function runs it."""

    module: str  # the importing module, e.g. condvest.fetch.run
    path: Path
    line: int
    source: str  # the statement as written
    targets: tuple[str, ...]  # absolute names it imports, e.g. ("condvest.calendar",) or ("pandas",)
    in_function: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: every module of condvest and of the runner
MODULES = {_module_name(p): p for top in (PACKAGE, RUNNER) for p in sorted((ROOT / top).rglob("*.py"))}
CONDVEST_MODULES = {m: p for m, p in MODULES.items() if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> tuple[str, ...]:
    """``import a.b`` names a.b; ``from a.b import c`` names a.b.c when that is a module of the package, else a.b.
    Relative imports are resolved against the importing module's package."""
    if isinstance(node, ast.Import):
        return tuple(alias.name for alias in node.names)
    base = node.module or ""
    if node.level:
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    return tuple(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)


def _imports(module: str, path: Path, type_checking: bool = False) -> list[Import]:
    """Every import statement of a module, at module level and inside functions; those under
    ``if TYPE_CHECKING:`` (which never run) only with ``type_checking``."""
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(Import(module, path, node.lineno, ast.unparse(node), _targets(module, node), in_function))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
            children: list[ast.AST] = list(node.orelse)
        else:
            children = list(ast.iter_child_nodes(node))
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in children:
            visit(child, inside)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def all_imports() -> list[Import]:
    return [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def _first_party(name: str, top: str) -> bool:
    return name == top or name.startswith(top + ".")


def import_graph(imports: list[Import]) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (a package's __init__ importing its submodules counts)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in imports:
        graph[imp.module].update(t for t in imp.targets if t in MODULES and t != imp.module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for group in groups:
        start = min(group)
        paths = {start: [start]}  # breadth first inside the group: a shortest way back to start
        queue = [start]
        while queue:
            v = queue.pop(0)
            if start in graph[v]:
                cycles.append([*paths[v], start])
                break
            for w in sorted(graph[v] & group):
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    queue.append(w)
    return cycles


def _dynamic_imports(path: Path) -> list[tuple[int, str]]:
    """``importlib.import_module("x")`` and ``__import__("x")`` with a literal name: (line, name)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _where(imp: Import) -> str:
    return f"{imp.path.relative_to(ROOT)}:{imp.line}: {imp.source}"


# --------------------------------------------------------------------------------------------------------------


def test_importing_the_package_does_nothing_and_the_public_api_resolves():
    code = (
        "import sys, os, logging; before = set(os.environ.items());"
        "import condvest;"
        "assert 'pandas' not in sys.modules and 'duckdb' not in sys.modules and 'psycopg' not in sys.modules;"
        "assert set(os.environ.items()) == before and not logging.getLogger().handlers;"
        "[getattr(condvest, n) for n in condvest.__all__]; print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr


def test_importing_condvest_loads_no_runner_module():
    """The runner depends on condvest, never the other way: neither ``import condvest`` nor resolving its lazy
    public API (which imports every stage) brings in a module of runner/, even when runner/ is importable."""
    code = (
        "import sys;"
        "runner = lambda: sorted(m for m in sys.modules if m == 'runner' or m.startswith('runner.'));"
        "import condvest; print(runner());"
        "[getattr(condvest, n) for n in condvest.__all__]; print(runner())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    after_import, after_api = r.stdout.splitlines()
    assert after_import == "[]", f"import condvest loaded {after_import}"
    assert after_api == "[]", f"condvest's public API loaded {after_api}"


def test_no_module_of_condvest_imports_the_runner():
    """Anywhere: module level, inside functions, under TYPE_CHECKING, or by name through importlib."""
    offenders = [
        _where(imp)
        for module, path in CONDVEST_MODULES.items()
        for imp in _imports(module, path, type_checking=True)
        if any(_first_party(t, RUNNER) for t in imp.targets)
    ]
    offenders += [
        f"{path.relative_to(ROOT)}:{line}: import of {name!r} by name"
        for path in CONDVEST_MODULES.values()
        for line, name in _dynamic_imports(path)
        if _first_party(name, RUNNER)
    ]
    assert not offenders, "condvest must not import runner:\n" + "\n".join(offenders)


def test_the_import_graph_of_condvest_and_the_runner_has_no_cycle():
    """Every import statement counts, module level and inside functions (only ``if TYPE_CHECKING:`` is left
    out): a cycle that an import inside a function hides still makes the modules depend on each other.
    Imports by a computed name (the lazy ``__getattr__`` of condvest and condvest.offline) are not statements
    and are not counted."""
    graph = import_graph(all_imports())
    assert sum(map(len, graph.values())) > len(MODULES), "the graph is implausibly thin: is the parser broken?"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in condvest or runner:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_finder_names_the_modules_of_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_function_imports_a_module_of_the_project():
    """Imports inside functions were how cycles were dodged; modules of condvest (and runner) are imported at
    module level. Third-party and standard-library imports inside functions stay allowed: they keep
    ``import condvest`` cheap (pandas, psycopg, boto3, plotly, IPython load on first use)."""
    offenders = [
        _where(imp)
        for imp in all_imports()
        if imp.in_function and any(_first_party(t, PACKAGE) or _first_party(t, RUNNER) for t in imp.targets)
    ]
    assert not offenders, "imports inside functions:\n" + "\n".join(offenders)


def _stage(module: str) -> str | None:
    """The stage package a module belongs to (``condvest.resample`` for condvest.resample.run), or None (the core,
    condvest's own __init__, the runner)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[0] == PACKAGE and parts[1] in STAGES:
        return f"{PACKAGE}.{parts[1]}"
    return None


def _every_import(modules: dict[str, Path]) -> list[tuple[str, str, str]]:
    """(importing module, imported name, where) for every import of ``modules``: statements at module level,
    inside functions and under ``if TYPE_CHECKING:``, and imports by a literal name through importlib."""
    found = [
        (imp.module, t, _where(imp))
        for module, path in modules.items()
        for imp in _imports(module, path, type_checking=True)
        for t in imp.targets
    ]
    found += [
        (module, name, f"{path.relative_to(ROOT)}:{line}: import of {name!r} by name")
        for module, path in modules.items()
        for line, name in _dynamic_imports(path)
    ]
    return found


def test_monitoring_explore_and_the_runner_read_the_lake_through_the_core():
    """Checkpoints (``condvest.checkpoints``) and the DuckDB reading of bronze (``condvest.lake_read``) are shared
    readers: 05_monitoring, 06_explore and the runner (``--shards auto``) take them from the core, never from
    02_resample's orchestration (its package, ``run`` or ``engine``)."""
    readers = {m: p for m, p in MODULES.items() if _stage(m) in ("condvest.monitoring", "condvest.explore")}
    readers.update({m: p for m, p in MODULES.items() if _first_party(m, RUNNER)})
    assert {"runner.cloud.submit", "condvest.monitoring.snapshot", "condvest.explore.lake"} <= set(readers)
    forbidden = ("condvest.resample", "condvest.resample.run", "condvest.resample.engine")
    offenders = sorted({where for _, name, where in _every_import(readers) if name in forbidden})
    assert not offenders, "read checkpoints and the lake through the core:\n" + "\n".join(offenders)


def test_resample_never_asks_the_migration():
    """Which export files are readable is a lake fact (``condvest.dms.readable_export``), not the migration's."""
    resample = {m: p for m, p in MODULES.items() if _stage(m) == "condvest.resample"}
    assert "condvest.resample.state" in resample
    offenders = sorted({where for _, name, where in _every_import(resample) if _first_party(name, "condvest.migrate")})
    assert not offenders, "condvest.resample imports condvest.migrate:\n" + "\n".join(offenders)


def test_stage_packages_import_the_core_only_not_each_other():
    """A stage package (one per notebook) depends on the core; a reader two stages share lives in the core. The
    known exceptions are listed in ``KNOWN_STAGE_IMPORTS``, and an entry that no longer holds must go."""
    seen = set()
    offenders = set()
    for module, name, where in _every_import(CONDVEST_MODULES):
        mine, theirs = _stage(module), _stage(name)
        if mine is None or theirs is None or mine == theirs:
            continue
        if (module, theirs) in KNOWN_STAGE_IMPORTS:
            seen.add((module, theirs))
        else:
            offenders.add(where)
    assert not offenders, "a stage imports another stage:\n" + "\n".join(sorted(offenders))
    assert seen == KNOWN_STAGE_IMPORTS, (
        f"not imported any more, drop from KNOWN_STAGE_IMPORTS: {KNOWN_STAGE_IMPORTS - seen}"
    )
