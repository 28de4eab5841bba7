"""One truth under every common launcher, with no code change (otel_reliability/launchers.py).

Each launcher serves the prefork test app as a user would type it, under opentelemetry-instrument, with two
workers where it has workers: every answer counts every worker's requests and says how many workers it speaks
for, :9464 (the master's) sums them, a breaker open in the workers that called it shows in every answer,
service.name is the app's module, no worker logs a traceback, an address-in-use line or a restart; then the
launcher's own restart (SIGHUP, or a file change under a reloader) replaces every worker and nothing counted
before is lost. One app start per launcher.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support import AppProcess, python_stacks, scrape, wait_until
from tests.test_prefork import APP_DIR, SETTLE, StartApp, answers, call, fire, scraped_failures

# launcher, workers, how the launcher replaces its workers (None: a single process, nothing to replace)
CASES = [
    ("uvicorn", 2, "SIGHUP"),
    ("gunicorn", 2, "SIGHUP"),
    ("gunicorn-preload", 2, "SIGHUP"),
    ("fastapi-run", 2, "SIGHUP"),
    ("fastapi-run", 1, None),  # `fastapi run` without --workers serves in one process
    ("fastapi-dev", 1, "touch"),  # a reloader and one worker; `fastapi dev` has no --workers
    ("hypercorn", 2, "SIGHUP"),
    ("granian", 2, "SIGHUP"),
]
FAILURES = 20
CALLS = 8


def live_instances(app: AppProcess) -> set[str]:
    """The service.instance.id of every live worker, from :9464 (a gauge per live worker)."""
    series = scrape(app.metrics_port).get("process_memory_usage_bytes", [])
    return {labels.get("service_instance_id", "") for labels, _ in series}


def breakers_answer(app: AppProcess) -> list[dict[str, object]]:
    return [body["breakers"]["payments"] for body in answers(app, "/api/health/circuit-breakers")]


def replace_workers(app: AppProcess, how: str) -> None:
    if how == "SIGHUP":
        os.kill(app.proc.pid, signal.SIGHUP)
    else:  # the reloader watches the app's directory
        path = APP_DIR / "app.py"
        os.utime(path, (time.time(), time.time()))


@pytest.mark.parametrize(("server", "workers", "restart"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_launcher_answers_for_the_whole_host(
    server: str, workers: int, restart: str | None, app_factory: StartApp
) -> None:
    app = app_factory("app:app", app_dir=APP_DIR, server=server, workers=workers, timeout=60)
    wait_until(lambda: call(app.url + "/api/health/live")[1]["workers"] == workers, timeout=40, what="all workers")

    pids = fire(app, "/fail", FAILURES)
    dependency_pids = fire(app, "/dependency", CALLS, threads=CALLS)
    time.sleep(SETTLE)
    bodies = answers(app, "/api/health/error-rate")
    assert [b["error_count"] for b in bodies] == [FAILURES + CALLS] * len(bodies), f"served by {Counter(pids)}"
    assert {b["workers"] for b in bodies} == {workers}
    assert {b["service"]["name"] for b in bodies} == {"app"}, "service.name is the app's module"
    assert (scraped_failures(app, "500"), scraped_failures(app, "502")) == (FAILURES, CALLS)
    by_state = Counter({"open": len(set(dependency_pids)), "closed": workers - len(set(dependency_pids))})
    for payments in breakers_answer(app):
        assert payments["state"] == "open", payments
        assert payments["workers_by_state"] == {k: v for k, v in by_state.items() if v}, payments
    before = live_instances(app)
    assert len(before) == workers, before

    if restart is not None:
        replace_workers(app, restart)
        seen: list[set[str]] = []

        def replaced() -> bool:
            seen.append(live_instances(app))
            return len(seen[-1]) == workers and not seen[-1] & before

        try:
            wait_until(replaced, timeout=90, interval=0.5, what=f"{server}'s new workers")
        except AssertionError as exc:
            stacks = python_stacks(app.proc.pid)  # a worker that does not exit, or a master stuck joining it
            raise AssertionError(f"{exc}: before {before}, then {seen[-3:]}\n{app.log()[-3000:]}\n{stacks}") from None
        # A new worker is live (its process gauges published) before it has imported the app and made its breaker:
        # under load that takes seconds. Once each has, every answer agrees.
        wait_until(
            lambda: all(p["workers_by_state"] == {"closed": workers} for p in breakers_answer(app)),
            timeout=60,
            what="every new worker's breaker",
        )
        time.sleep(SETTLE)
        assert [b["error_count"] for b in answers(app, "/api/health/error-rate")] == [FAILURES + CALLS] * 12
        assert (scraped_failures(app, "500"), scraped_failures(app, "502")) == (FAILURES, CALLS)
        for payments in breakers_answer(app):
            assert payments["workers_by_state"] == {"closed": workers}, payments  # the new workers' breakers
            assert payments["calls"]["failure"] + payments["calls"]["rejected"] == CALLS  # the old ones' calls

    app.stop()
    log = app.log()
    for line in ("Traceback", "address already in use", "died", "not started"):
        assert line.lower() not in log.lower(), log[-3000:]


def test_a_worker_of_a_server_we_do_not_know_says_so_and_answers_for_itself(app_factory: StartApp) -> None:
    """A script that spawns its own uvicorn workers (tests/apps/prefork/own_server.py): each worker answers for
    itself and says so in one line; nothing fails."""
    app = app_factory("own_server.py", app_dir=APP_DIR, server="script", timeout=60)
    wait_until(lambda: "does not know" in app.log(), timeout=20, what="the workers' line")
    assert {call(app.url + "/api/health/live")[1]["workers"] for _ in range(6)} == {1}
    app.stop()
    log = app.log()
    assert "Traceback" not in log
    assert log.count("does not know as a prefork server") == 2, log


def test_service_name_is_the_apps_module_under_every_command_line(tmp_path: Path) -> None:
    from otel_reliability.launchers import guess_service_name

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "main.py").write_text("")
    lines = [
        ["uvicorn", "app.main:app", "--workers", "2"],
        ["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-b", "localhost:8000", "app.main:app"],
        ["hypercorn", "-w", "2", "app.main:app"],
        ["granian", "--interface", "asgi", "--workers", "2", "app.main:app"],
        ["fastapi", "run", "--workers", "4", "app/main.py"],
        ["fastapi", "run", "--host", "0.0.0.0", "--port", "80"],  # found as fastapi-cli finds it
        ["fastapi", "dev", "app/main.py"],
    ]
    assert {guess_service_name(argv, tmp_path) for argv in lines} == {"app.main"}
    assert guess_service_name(["python", "-c", "print(1)"], tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "shop"\n')
    assert guess_service_name(["python", "-c", "print(1)"], tmp_path) == "shop"
    assert guess_service_name(["worker.py"], tmp_path) == "worker"
    (tmp_path / "pyproject.toml").write_text('[tool.fastapi]\nentrypoint = "shop.api:app"\n')
    assert guess_service_name(["fastapi", "run"], tmp_path) == "shop.api"
