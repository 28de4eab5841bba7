"""The servers a service is launched with: which process is a prefork master, and what the app is called.

Every common launcher of an ASGI app starts its workers one of two ways, and each needs the host's master
(otel_reliability/host/) set up before its first worker starts:

- **forking masters** (``gunicorn``; ``granian``, which forks its Python workers on Python < 3.14 and spawns
  them on 3.14): a forked worker inherits the master's SDK, resource and dead threads, so the master must set
  up no SDK at all and each worker sets up its own right after the fork. They are known from the command line
  only (``sys.argv[0]`` or ``python -m NAME``), before the SDK exists; every run of their CLI has workers.
- **spawning supervisors** (uvicorn's ``Multiprocess`` and reloaders: ``uvicorn --workers N`` / ``--reload``,
  ``fastapi run --workers N``, ``fastapi dev``, ``uvicorn.run(..., workers=N)`` from a script; hypercorn's
  ``run``, which spawns ``-w`` workers, 1 by default): each worker is a new interpreter that sets itself up
  under ``opentelemetry-instrument``. The master is recognised when the supervisor starts (a post-import hook
  wraps the supervisor's ``run``), which is the only moment that knows, whatever the command line, the
  configuration file or ``WEB_CONCURRENCY`` said.

A worker recognises itself in otel_reliability.host.start_worker: the master's directory is in its
environment and the master is its parent.

Every name of another package read here is listed in ``SUPERVISORS``; when a release moves one, the hook
finds nothing to wrap, says so in one WARNING line, and each worker answers for itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_logger = logging.getLogger("otel_reliability")

FORKING_MASTERS = ("gunicorn", "granian")
# module -> (class or function name, method name or "", the launcher's name in messages)
SUPERVISORS: dict[str, tuple[str, str, str]] = {
    "uvicorn.supervisors.multiprocess": ("Multiprocess", "run", "uvicorn --workers"),
    "uvicorn.supervisors.basereload": ("BaseReload", "run", "uvicorn --reload"),
    "hypercorn.run": ("run", "", "hypercorn"),
}


def program(argv: Sequence[str] | None = None, orig_argv: Sequence[str] | None = None) -> str:
    """The launcher's name: ``gunicorn`` for ``.../bin/gunicorn`` and for ``python -m gunicorn``."""
    argv = sys.argv if argv is None else argv
    orig = list(getattr(sys, "orig_argv", ()) if orig_argv is None else orig_argv)
    if "-m" in orig[:-1]:
        return orig[orig.index("-m") + 1].split(".")[0]
    return os.path.basename(argv[0]) if argv else ""


def forking_master() -> str | None:
    """The forking launcher this process is the master of (``gunicorn``, ``granian``), else None."""
    name = program()
    return name if name in FORKING_MASTERS and multiprocessing.parent_process() is None else None


def is_spawned() -> bool:
    """Started by multiprocessing's spawn method (a worker of uvicorn, hypercorn, ...). Known from the command
    line: ``multiprocessing.parent_process()`` is set only later, once the child has unpickled its target."""
    return "--multiprocessing-fork" in getattr(sys, "orig_argv", sys.argv)


def is_multiprocessing_helper() -> bool:
    """multiprocessing's resource tracker or forkserver: started by ``python -c`` with our sitecustomize on
    PYTHONPATH (e.g. by ``uvicorn --workers``), serving no requests; it must not take the metrics port."""
    command = " ".join(getattr(sys, "orig_argv", sys.argv))
    return "multiprocessing.resource_tracker" in command or "multiprocessing.forkserver" in command


def watch_supervisors(on_supervisor: Callable[[str], None]) -> None:
    """Call ``on_supervisor(launcher)`` in this process when a spawning supervisor starts, before its first
    worker (hypercorn with ``-w 0`` serves in this process: not a supervisor)."""
    import wrapt

    for module, (owner, method, launcher) in SUPERVISORS.items():
        wrapt.register_post_import_hook(_wrapper(owner, method, launcher, on_supervisor), module)
    wrapt.register_post_import_hook(_patient_with_starting_workers, "uvicorn.supervisors.multiprocess")


# uvicorn's supervisor pings each worker every 0.5 s and kills one that does not answer within
# --timeout-worker-healthcheck (5 s), and a restart (SIGHUP) gives a new worker the same 5 s to be ready. A worker
# answers from a thread it starts only once its interpreter, opentelemetry-instrument's set-up and the unpickling of
# its target are done: ~1 s on an idle machine, and beyond 5 s on a busy one, where the supervisor then kills every
# new worker before it could answer, again and again ("Child process [N] died"; plain uvicorn starts in ~0.3 s).
# Until a worker has answered once, it gets STARTUP_GRACE instead; after that, the user's own timeout, so a hung
# worker is still found as fast.
STARTUP_GRACE = 30.0
_answered: Any = None  # weakref.WeakSet of the uvicorn Process objects whose worker has answered a ping


def _patient_with_starting_workers(module: Any) -> None:
    import weakref

    import wrapt

    global _answered
    process = getattr(module, "Process", None)
    if not callable(getattr(process, "ping", None)) or not callable(getattr(process, "wait_until_ready", None)):
        return  # an older uvicorn (no ping timeout) or a new one: its own timeouts apply
    _answered = weakref.WeakSet()

    def ping(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        timeout = kwargs.pop("timeout", args[0] if args else 5)
        if instance not in _answered:
            timeout = max(float(timeout), STARTUP_GRACE)
        answered = wrapped(timeout=timeout)
        if answered:
            _answered.add(instance)
        return answered

    def wait_until_ready(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        timeout = kwargs.pop("timeout", args[0] if args else 5)
        rest = args[1:] if args else ()
        return wrapped(max(float(timeout), STARTUP_GRACE), *rest, **kwargs)

    wrapt.wrap_function_wrapper(module, "Process.ping", ping)
    wrapt.wrap_function_wrapper(module, "Process.wait_until_ready", wait_until_ready)


def _wrapper(owner: str, method: str, launcher: str, on_supervisor: Callable[[str], None]) -> Callable[[Any], None]:
    import wrapt

    def starting(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        config = getattr(instance, "config", None) if method else (args[0] if args else kwargs.get("config"))
        if getattr(config, "workers", 1) != 0:  # hypercorn -w 0 serves in this process
            try:
                on_supervisor(launcher)
            except Exception:  # the server must start whatever happens here
                _logger.exception("otel-reliability: setting up the prefork master for %s failed", launcher)
        return wrapped(*args, **kwargs)

    def hook(module: Any) -> None:
        target = getattr(module, owner, None)
        if target is None or (method and not callable(getattr(target, method, None))):
            _logger.warning(
                "otel-reliability: %s.%s%s not found (a new release?); under %s each worker answers health "
                "and metrics for itself",
                module.__name__,
                owner,
                f".{method}" if method else "",
                launcher,
            )
            return
        wrapt.wrap_function_wrapper(module, f"{owner}.{method}" if method else owner, starting)

    return hook


# --- service.name ---------------------------------------------------------------------------------------------
_APP_TARGET = re.compile(r"^([A-Za-z_][\w.]*):[A-Za-z_][\w.]*(\(.*\))?$")
# fastapi-cli's order when no path is given (fastapi_cli.discover.get_default_path)
FASTAPI_DEFAULT_PATHS = ("main.py", "app.py", "api.py", "app/main.py", "app/app.py", "app/api.py")


def guess_service_name(argv: Sequence[str], cwd: Path | None = None) -> str | None:
    """The app's module, the same under every launcher: ``app.main`` for ``uvicorn app.main:app``, ``gunicorn
    app.main:app``, ``hypercorn``/``granian`` likewise, ``fastapi run app/main.py`` and a bare ``fastapi run``
    that finds app/main.py. Else the script run (``python main.py``: ``main``), else the project's name in
    ./pyproject.toml. None when nothing names the app."""
    cwd = Path.cwd() if cwd is None else cwd
    args = list(argv[1:])
    for arg in args:
        match = _APP_TARGET.match(arg)
        if match:
            return match.group(1)
    name = program(argv, ())
    if name == "fastapi" and args[:1] and args[0] in ("run", "dev"):
        return _fastapi_module(args[1:], cwd)
    script = argv[0] if argv else ""
    if script.endswith(".py") and Path(script).name != "__main__.py":
        return _module_of(cwd / script)
    return _pyproject(cwd).get("project", {}).get("name") or None


def _fastapi_module(args: list[str], cwd: Path) -> str | None:
    """What ``fastapi run``/``dev`` runs: the path given, else ``[tool.fastapi] entrypoint``, else the first of
    fastapi-cli's default files that exists."""
    for arg in args:
        if not arg.startswith("-") and (arg.endswith(".py") or (cwd / arg / "__init__.py").is_file()):
            return _module_of(cwd / arg)
    entrypoint = _pyproject(cwd).get("tool", {}).get("fastapi", {}).get("entrypoint")
    if isinstance(entrypoint, str) and (match := _APP_TARGET.match(entrypoint)):
        return match.group(1)
    for candidate in FASTAPI_DEFAULT_PATHS:
        if (cwd / candidate).is_file():
            return _module_of(cwd / candidate)
    return None


def _module_of(path: Path) -> str:
    """``app/main.py`` -> ``app.main`` when app/ is a package (fastapi-cli's rule: every parent directory
    with an ``__init__.py`` is part of the name)."""
    path = path.resolve()
    parts = [] if path.stem == "__init__" else [path.stem]
    parent = path.parent
    while (parent / "__init__.py").is_file():
        parts.insert(0, parent.name)
        parent = parent.parent
    return ".".join(parts)


def _pyproject(cwd: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: no parser in the standard library; the other clues still apply
        return {}
    try:
        with open(cwd / "pyproject.toml", "rb") as file:
            return tomllib.load(file)
    except (OSError, ValueError):
        return {}
