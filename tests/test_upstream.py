"""Private attributes of other packages: each is named in ``otel_reliability.upstream``, and a rename in the
installed package is noticed (one WARNING) and answered with the public path, with the same data.

A rename is faked for real: the installed package is copied, the attribute renamed in every one of its files (so
the package itself still works, as a new release would), and the copy put first on the path of a subprocess that
runs tests/apps/upstream_renamed.py; its output is compared with the same scenario on the untouched packages.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from otel_reliability import upstream
from tests.support import BIN, ROOT, free_port

SCRIPT = ROOT / "tests" / "apps" / "upstream_renamed.py"
SITE = Path(pytest.__file__).resolve().parents[1]  # this venv's site-packages


def _run(scenario: str, path: Path | None = None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*([str(path)] if path else []), str(ROOT)])}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), scenario], capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT)
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


@cache
def _baseline(scenario: str) -> dict[str, Any]:
    found = _run(scenario)
    assert found["warnings"] == [] and all(found["usable"].values()), found
    return found


def _renamed_copy(tmp: Path, top: str, pattern: str) -> Path:
    """``top`` (a package directory or module file in site-packages) copied under ``tmp`` with every match of
    ``pattern`` renamed (``<name>_renamed``) in each of its files."""
    source = SITE / top
    target = tmp / top
    if source.is_dir():
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        files = list(target.rglob("*.py"))
    else:
        shutil.copy(source, target)
        files = [target]
    renamed = 0
    for file in files:
        text, n = re.subn(pattern, lambda m: f"{m.group(0)}_renamed", file.read_text())
        if n:
            file.write_text(text)
            renamed += n
    assert renamed, f"{pattern} is not in {top}: the fake rename would prove nothing"
    return tmp


CASES = [
    *[("opentelemetry", rf"\b{a}\b", "histogram", ["sdk.histogram_fold"]) for a in ("_value", "_sum", "_min", "_max")],
    *[
        ("opentelemetry", rf"\b{a}\b", "histogram", ["sdk.histogram_fold", "sdk.drop_series"])
        for a in ("_measurement_consumer", "_reader_storages")
    ],
    ("opentelemetry", r"\b_sdk_config\b", "sdk_config", ["sdk.config_views", "sdk.config_resource"]),
    ("opentelemetry", r"\b_SUPPRESS_INSTRUMENTATION_KEY(_PLAIN)?\b", "suppress", ["instrumentation.suppress_keys"]),
    ("pybreaker", r"\b_state\b", "pybreaker", ["pybreaker.state"]),
    ("pybreaker", r"\b_state_storage\b", "pybreaker", ["pybreaker.state"]),
    ("pybreaker", r"\b_breaker\b", "pybreaker", ["pybreaker.state"]),
    *[
        ("pybreaker", rf"\b{a}\b", "pybreaker", ["pybreaker.notify"])
        for a in ("_inc_counter", "_create_new_state", "_handle_success")
    ],
    ("opentelemetry", r"\b_CustomCollector\b", "prometheus", ["prometheus.collector"]),
    ("opentelemetry", r"\b_callback\b", "prometheus", ["prometheus.collector"]),
    ("opentelemetry", r"\b_StabilityMode\b", "server_span", ["contrib.http_semconv"]),
    ("opentelemetry", r"\b_is_instrumented_by_opentelemetry\b", "system_metrics", ["contrib.instrumented"]),
    ("opentelemetry", r"\b_instance\b", "system_metrics", ["contrib.instrumented"]),
    ("sqlalchemy", r"\b_max_overflow\b", "pools", ["sqlalchemy.max_overflow"]),
    ("sqlalchemy", r"\b_all_conns\b", "pools", ["sqlalchemy.singleton_conns"]),
    ("sqlalchemy", r"\b_orig_logging_name\b", "pools", ["sqlalchemy.logging_name"]),
    ("sqlalchemy", r"\b_clear\b", "cleared", ["sqlalchemy.dispatch_clear"]),
    ("sqlalchemy", r"\b_connection_record\b", "pools", ["sqlalchemy.connection_record"]),
    ("sqlalchemy", r"\b__pool\b", "pools", ["sqlalchemy.connection_record"]),  # self.__pool: _ConnectionRecord__pool
    *[
        ("opentelemetry", rf"\b{a}\b", "server_span", ["sdk.lean_span"])
        for a in ("_is_enabled", "_span_limits", "_on_ending", "_immutable", "_instrumentation_scope")
    ],
    ("uvicorn", r"\b_captured_signals\b", "uvicorn", ["uvicorn.captured_signals"]),
    ("circuitbreaker.py", r"\b_opened\b", "circuitbreaker", ["circuitbreaker.settings"]),
    ("circuitbreaker.py", r"\b_failure_threshold\b", "circuitbreaker", ["circuitbreaker.settings"]),
    ("circuitbreaker.py", r"\b_recovery_timeout\b", "circuitbreaker", ["circuitbreaker.settings"]),
    ("circuitbreaker.py", r"\b_last_failure\b", "circuitbreaker", []),  # read through the public last_failure
    ("circuitbreaker.py", r"\b_fallback_function\b", "circuitbreaker_fallback", ["circuitbreaker.fallback"]),
]


def _same(result: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal, except ``retry_after``: a second apart at most (circuitbreaker's public ``open_remaining`` gives
    whole seconds, rounded up)."""
    got, want = dict(result), dict(expected)
    if "retry_after" in want:
        assert abs(got.pop("retry_after") - want.pop("retry_after")) <= 1.0
    assert got == want


@pytest.mark.parametrize(("top", "pattern", "scenario", "keys"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_a_renamed_private_attribute_warns_once_and_the_public_path_gives_the_same_data(
    tmp_path: Path, top: str, pattern: str, scenario: str, keys: list[str]
) -> None:
    expected = _baseline(scenario)
    found = _run(scenario, _renamed_copy(tmp_path, top, pattern))
    if "sdk.drop_series" in keys:  # the SDK cannot end a series any more: the ended one stays, at 0
        gone = [[{"breaker": "gone"}, 0.0], *expected["result"]["forgotten"]]
        expected = {"result": {**expected["result"], "forgotten": sorted(gone, key=str)}}
    if scenario == "sdk_config":  # without _sdk_config our views cannot be added: exemplars cost, same data
        assert (found["result"].pop("views"), expected["result"]["views"]) == (False, True)
        expected = {"result": {k: v for k, v in expected["result"].items() if k != "views"}}
    if pattern == r"\b_max_overflow\b":  # no other source of a QueuePool's maximum: it is not published
        expected = {"result": {k: v for k, v in expected["result"].items() if k != "db.client.connection.max"}}
    if keys == ["contrib.http_semconv"]:  # contrib's own layer makes the same span
        expected = {"result": dict(expected["result"])}
        assert (found["result"].pop("layer"), expected["result"].pop("layer")) == ("contrib", "lean")
    _same(found["result"], expected["result"])
    assert sorted(k for k, ok in found["usable"].items() if not ok) == sorted(keys)
    assert len(found["warnings"]) == len(keys), found["warnings"]  # one per changed access, not one per use
    name = pattern.split("\\b")[1].split("(")[0]
    assert all(name in w and "instead" in w for w in found["warnings"]), found["warnings"]


def test_itertools_count_with_another_repr_falls_back_to_locked_counters() -> None:
    found = _run("count")
    _same(
        {k: v for k, v in found["result"].items() if k in _baseline("pybreaker")["result"]},
        _baseline("pybreaker")["result"],
    )
    assert found["result"]["pool_counter"] == 7 and found["result"]["type"] == "LockedCount"
    assert [k for k, ok in found["usable"].items() if not ok] == ["cpython.count_repr"]
    assert len(found["warnings"]) == 1 and "repr(itertools.count)" in found["warnings"][0]


def test_every_check_passes_on_the_installed_versions() -> None:
    import importlib

    for private in upstream.GUARDED.values():
        importlib.import_module(private.module)  # check_all() checks the modules already imported
    assert upstream.check_all() == dict.fromkeys(upstream.GUARDED, True)


def test_a_real_start_up_finds_every_shape_as_expected() -> None:
    """Under opentelemetry-instrument with the distro's defaults (spans not recorded: OTEL_TRACES_SAMPLER=always_off,
    Prometheus on :9464) and the libraries imported, every check passes: no WARNING at a stock start-up. (A check
    that read the environment as the user's providers do once failed here and in no unit test.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port())})
    program = (
        "import sqlalchemy, pybreaker, circuitbreaker, uvicorn, fastapi; "
        "sqlalchemy.create_engine('sqlite://').connect().close(); "
        "from otel_reliability import upstream; import importlib; "
        "[importlib.import_module(p.module) for p in upstream.GUARDED.values()]; "
        "print(sorted(k for k, ok in upstream.check_all().items() if not ok))"
    )
    run = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, "-c", program],
        capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout + run.stderr
    assert "changed (" not in run.stderr, run.stderr


# --- every foreign private name in the package's source is named in otel_reliability.upstream ---------------------
PACKAGE = ROOT / "otel_reliability"


def _own_private_names(trees: list[ast.AST]) -> set[str]:
    """Private names the package defines itself: its functions, classes, module globals, attributes it assigns
    and ``__slots__``."""
    own: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    own.add(node.attr)
            elif isinstance(node, ast.alias) and node.asname:
                own.add(node.asname)
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__slots__" for t in node.targets):
                own.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
    return {name for name in own if isinstance(name, str)}


def _used_private_names(tree: ast.AST) -> set[str]:
    used: set[str] = set()
    private = re.compile(r"^_[A-Za-z][A-Za-z0-9_]*$")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private.match(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                used.add(node.attr)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr", "setattr"):
            used.update(a.value for a in node.args[1:2] if isinstance(a, ast.Constant) and isinstance(a.value, str))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.module.startswith("otel_reliability"):
            used.update(part for part in node.module.split(".") if private.match(part))
            used.update(a.name for a in node.names if private.match(a.name))
    return {n for n in used if private.match(n) and not n.startswith(("__", "_otel_reliability"))}  # ours: the prefix


def test_every_foreign_private_name_is_named_in_the_upstream_module() -> None:
    files = {path: ast.parse(path.read_text(), str(path)) for path in PACKAGE.rglob("*.py")}
    own = _own_private_names(list(files.values()))
    named = {part for p in upstream.GUARDED.values() for a in p.attributes for part in re.split(r"[.()]", a)}
    named |= {name for names, _ in upstream.NOTED.values() for name in names}
    missing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path, tree in files.items()
        if path.parent.name != "upstream"
        for name in _used_private_names(tree) - own - named
    }
    assert sorted(missing) == []


def test_the_upstream_module_imports_nothing_else_of_the_package() -> None:
    for path in (PACKAGE / "upstream").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("otel_reliability"):
                assert (node.module or "").startswith("otel_reliability.upstream"), f"{path.name}: {node.module}"
