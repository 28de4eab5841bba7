"""The package's import graph flows one way (shared/DESIGN.md, "Layout"), and the names in PromQL are semconv's.

The graph is read with ``ast`` from the source, not from ``sys.modules``: every ``import`` counts, at module
level, inside a function (a lazy import is still a dependency a reader must follow) and under
``TYPE_CHECKING``. ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of
``pkg``. Strings handed to ``importlib`` (the view list in health/builtin.py, the root package's lazy public
names) are not imports and are not counted: those are the top floor choosing what to load.

The floors, top-down: the root package (the public facade), distro/configurator, cli, health and host, request_errors,
readings, instrumentation and db, and at the bottom changes, semconv, config, version and tally.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from otel_reliability import semconv

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "otel_reliability"
BOTTOM = {"changes", "semconv", "config", "version", "tally"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(module, path, node):
                while target and target not in MODULES:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != module:
                    deps.add(target)
        graph[module] = deps
    return graph


GRAPH = _graph()


def _short(module: str) -> str:
    return module.removeprefix("otel_reliability.") if module != "otel_reliability" else "otel_reliability"


def _under(module: str, *floors: str) -> bool:
    short = _short(module)
    return any(short == floor or short.startswith(f"{floor}.") for floor in floors)


def _edges(source_floors: tuple[str, ...], target_floors: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{_short(src)} -> {_short(dst)}"
        for src, deps in GRAPH.items()
        if _under(src, *source_floors)
        for dst in deps
        if _under(dst, *target_floors)
    )


def test_the_graph_covers_every_module_and_sees_lazy_imports():
    """Guards the test itself: a parser that missed function-level imports would pass on a cyclic package."""
    assert len(GRAPH) == len(MODULES) > 40
    # configurator imports the health routes inside a function: that edge must be seen.
    assert "otel_reliability.health.fastapi" in GRAPH["otel_reliability.configurator"]


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative enough for this size)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(GRAPH[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(_short(member))
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle():
    assert _cycles() == []


def test_nothing_inside_the_package_imports_the_package_root():
    """The root is the public facade and resolves names from the configurator and the instrumentors; a module
    below that imports it (for ``__version__``, say) closes a cycle through the whole package."""
    assert sorted(_short(m) for m, deps in GRAPH.items() if "otel_reliability" in deps) == []


@pytest.mark.parametrize("module", sorted(BOTTOM))
def test_the_bottom_floor_imports_nothing_of_the_package(module):
    """A bottom-floor room may be a package (config/: the model, the declarations, the loader); its modules
    import one another and nothing else of the package."""
    members = [m for m in GRAPH if _under(m, module)]
    assert members
    assert sorted(f"{_short(m)} -> {_short(d)}" for m in members for d in GRAPH[m] if not _under(d, module)) == []


MAX_LINES = 400


def test_no_module_is_longer_than_a_reader_reads_at_once():
    """shared/DESIGN.md: each concept in a module short enough to read at once (~400 lines at most)."""
    long = sorted(
        f"{path.relative_to(ROOT)}: {lines}"
        for path in MODULES.values()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    )
    assert long == []


def test_instrumentors_never_import_a_floor_above_them():
    """Instrumentors create instruments; views, the CLI, the host merge and the Readings read them."""
    above = ("health", "cli", "host", "readings", "request_errors", "configurator", "distro", "shutdown", "export_logs")
    assert _edges(("instrumentation",), above) == []


def test_readings_import_no_instrumentor():
    assert _edges(("readings",), ("instrumentation", "db", "health", "cli", "host")) == []


def test_health_never_imports_an_instrumentors_private_module():
    """Names come from semconv; a view that needs an instrumentor's helper uses its public module."""
    private = sorted(
        f"{_short(src)} -> {_short(dst)}"
        for src, deps in GRAPH.items()
        if _under(src, "health")
        for dst in deps
        if _under(dst, "instrumentation") and any(part.startswith("_") for part in dst.split("."))
    )
    assert private == []


def test_the_database_helpers_import_no_instrumentor():
    """``run_in_transaction`` works without the pool instrumentor; what both need lives in db/ or semconv."""
    assert _edges(("db",), ("instrumentation", "health", "cli", "host", "readings")) == []


# --- the names in PromQL --------------------------------------------------------------------------------------

_PREFIXES = ("circuit_breaker", "db_client", "process", "operation", "http_server")
_IDENT = re.compile(r"\b(?:" + "|".join(_PREFIXES) + r")_[a-z_]+\b")
_SUFFIXES = ("", "_seconds", "_bytes", "_total", "_seconds_bucket", "_seconds_count", "_seconds_sum")


def _known_prometheus_names() -> set[str]:
    names = set()
    for constant, value in vars(semconv).items():
        if not isinstance(value, str) or not constant.startswith(("METRIC_", "ATTR_")):
            continue
        base = value.replace(".", "_")
        names.update(f"{base}{suffix}" for suffix in (_SUFFIXES if constant.startswith("METRIC_") else ("",)))
    return names


@pytest.mark.parametrize(
    "source",
    [
        "collector-config/grafana/generate.py",
        "collector-config/alerts.yml",
        "otel_reliability/cli/fleet.py",
        "otel_reliability/cli/fleet_scope.py",
        "otel_reliability/checklist/advice.py",
    ],
)
def test_promql_names_are_semconv_names(source):
    """A metric or label in a dashboard, alert or fleet query that semconv does not define is a typo or a
    rename that left it behind: the panel or alert would silently match nothing."""
    used = set(_IDENT.findall((ROOT / source).read_text()))
    assert used, f"{source}: no metric names found; the pattern no longer matches how it writes PromQL"
    assert sorted(used - _known_prometheus_names()) == []
