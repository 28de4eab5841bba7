"""The package's import graph flows one way (shared/DESIGN.md, "Layout"), and the names in PromQL are semconv's.

The graph is read with ``ast`` from the source, not from ``sys.modules``: every ``import`` counts, at module
level, inside a function (a lazy import is still a dependency a reader must follow) and under
``TYPE_CHECKING``. ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of
``pkg``. Strings handed to ``importlib`` (the view list in health/builtin.py, the root package's lazy public
names) are not imports and are not counted: those are the top floor choosing what to load.

The floors, top-down: the root package (the public facade), distro/configurator, cli, health and host, request_errors,
readings, instrumentation and db, and at the bottom changes, collection, semconv, config, version, crash_safe and
threads.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from otel_reliability import semconv

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "otel_reliability"
BOTTOM = {"changes", "collection", "semconv", "config", "version", "crash_safe", "threads"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _from(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` names, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))
    return node.module or ""


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    target = _from(module, path, node)
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


def _room(module: str) -> str:
    """The top-level package or module a module belongs to (``instrumentation``, ``readings``, ``config``, ...;
    the root package is a room of its own)."""
    return _short(module).split(".")[0]


def _private(parts: list[str]) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in parts)


def _private_reaches() -> list[str]:
    """Every place where a module uses another room's private module or name: ``from otel_reliability.X._y import
    ...``, ``from otel_reliability.X import _y`` (a module or any other name), ``import otel_reliability.X._y``,
    and ``alias._y`` on a module of another room bound by an import. Inside its own room a module may use
    anything; across rooms only what the other room names publicly."""
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in MODULES:
                        if _room(alias.name) != _room(module) and _private(alias.name.split(".")[1:]):
                            found.append(f"{_short(module)}:{node.lineno}: import {alias.name}")
                        if alias.asname:
                            aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                target = _from(module, path, node)
                for name in node.names:
                    full = f"{target}.{name.name}"
                    if not full.startswith("otel_reliability."):
                        continue
                    if full in MODULES:
                        aliases[name.asname or name.name] = full
                    if _room(full) != _room(module) and _private(full.split(".")[1:]):
                        found.append(f"{_short(module)}:{node.lineno}: from {target} import {name.name}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _room(aliases[node.value.id]) != _room(module)
                and _private([node.attr])
            ):
                found.append(f"{_short(module)}:{node.lineno}: {node.value.id}.{node.attr}")
    return sorted(found)


def _room_graph() -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, deps in GRAPH.items():
        rooms.setdefault(_room(module), set()).update(_room(d) for d in deps if _room(d) != _room(module))
    return rooms


def test_no_arrow_runs_back_up_between_rooms():
    """Rooms (top-level packages and modules) form floors: if A imports from B, nothing in B imports from A, at
    any distance. A module-level check alone lets instrumentation/tempfiles.py import tempfiles.py while
    tempfiles.py imports instrumentation/_instrumented.py: no module cycle, but two rooms each above the other."""
    rooms = _room_graph()
    back = []
    for room in sorted(rooms):
        seen: set[str] = set()
        todo = sorted(rooms[room])
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo.extend(rooms.get(current, ()))
        if room in seen:
            back.append(room)
    assert back == []


def test_no_module_uses_another_rooms_private_names():
    """A name starting with ``_`` is its room's to change; one used from another room is a public name in
    disguise, and renaming it breaks a module its author never looked at."""
    assert _private_reaches() == []


def test_the_private_name_check_sees_each_kind_of_reach(monkeypatch):
    """Guards the check itself: each form of reaching in must be found."""
    source = (
        "from otel_reliability.instrumentation._published import install_quiet_views\n"
        "from otel_reliability.readings import _retention\n"
        "import otel_reliability.instrumentation._instrumented\n"
        "from otel_reliability import readings\n"
        "readings._readings\n"
    )
    fake = PACKAGE / "cli" / "__init__.py"
    original = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source if self == fake else original(self, *a, **k))
    found = [line for line in _private_reaches() if line.startswith("cli:")]
    assert [line.split(": ", 1)[1] for line in found] == [
        "from otel_reliability.instrumentation._published import install_quiet_views",
        "from otel_reliability.readings import _retention",
        "import otel_reliability.instrumentation._instrumented",
        "readings._readings",
    ]


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
