"""``otel-reliability check``: the morning checklist, for one app or for a fleet, with what to do about it.

    otel-reliability check [--url URL] [--token T] [--admin-token T] [--json] [--timeout S] [--html FILE]
    otel-reliability check --prometheus URL [--job NAME] [--json] [--timeout S] [--stale-after S]
    otel-reliability export-config DIR [--force]
    otel-reliability slo-rules [--job NAME]

One module per source of readings: ``app.py`` asks one app's health endpoints, ``fleet.py`` asks a
Prometheus-compatible query API (``promapi.py``) about every service and instance; ``report.py`` holds what
they share (items, exit codes, rendering, and the advice for each finding, so both give the same words for the
same problem).
Exit codes: 0 nothing needs action, 1 something does, 2 the source cannot be reached (or is not ours).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from otel_reliability import config

if TYPE_CHECKING:
    from otel_reliability.cli.fleet import Thresholds
    from otel_reliability.cli.report import Item, Report, render

__all__ = ["EXIT_ACTION", "EXIT_OK", "EXIT_UNREACHABLE", "Item", "Report", "build_parser", "main", "render"]
DEFAULT_URL = "http://127.0.0.1:8000"
# The exit codes (as in otel_reliability.cli.report): export-config runs on the standard library alone, so this
# module imports the checks (and with them the OpenTelemetry packages) only when a check runs.
EXIT_OK, EXIT_ACTION, EXIT_UNREACHABLE = 0, 1, 2


def __getattr__(name: str) -> Any:
    if name in ("Item", "Report", "render"):
        from otel_reliability.cli import report

        return getattr(report, name)
    raise AttributeError(name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-reliability", description="Tools for apps run with otel-reliability.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="run the morning checklist against a running app, or a whole fleet through Prometheus",
        description=(
            "The morning checklist: breakers, error rate, pool, stuck operations, resources, statement timeout "
            "(and, for a fleet, instances that stopped reporting). Exit 0 nothing to do, 1 action needed, "
            "2 unreachable or not an otel-reliability source."
        ),
    )
    source = check.add_mutually_exclusive_group()
    source.add_argument("--url", default=None, help=f"base URL of one app (default {DEFAULT_URL})")
    fleet_help = "base URL of a Prometheus-compatible query API: check every service and instance in it"
    source.add_argument("--prometheus", metavar="URL", default=None, help=fleet_help)
    check.add_argument("--job", default=None, help="with --prometheus: only this service (the job label)")
    stale_help = (
        "with --prometheus: seconds without a sample after which an instance counts as no longer reporting "
        "(default %(default)s; keep it above the apps' export interval)"
    )
    check.add_argument("--stale-after", type=float, default=180.0, help=stale_help)
    check.add_argument(
        "--token", default=None, help=f"health token for the pool details (or {config.HEALTH_TOKEN.name})"
    )
    check.add_argument(
        "--admin-token", default=None, help=f"admin token for stuck operations (or {config.ADMIN_TOKEN.name})"
    )
    check.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    html_help = "also write the app's status page to FILE as a static snapshot (needs the health token)"
    check.add_argument("--html", metavar="FILE", default=None, help=html_help)
    check.add_argument("--timeout", type=float, default=5.0, help="seconds per HTTP call (default %(default)s)")
    check.add_argument("--health-path", default=os.environ.get(config.HEALTH_PATH.name) or config.HEALTH_PATH.default)
    check.add_argument("--admin-path", default=os.environ.get(config.ADMIN_PATH.name) or config.ADMIN_PATH.default)
    export = commands.add_parser(
        "export-config",
        help="write the shipped collector configs, Prometheus configs and rules, promtool tests and dashboards",
        description="Write the monitoring files shipped in the package (identical to the repository's "
        "collector-config/) into DIR.",
    )
    export.add_argument("dir", metavar="DIR", help="directory to write into (created if missing)")
    export.add_argument("--force", action="store_true", help="replace existing files that differ")
    rules = commands.add_parser(
        "slo-rules",
        help="print the SLO recording and alert rules for the objectives in the environment",
        description="Print Prometheus rules (multiwindow, multi-burn-rate) for OTEL_RELIABILITY_SLO_* as set in the "
        "environment; collector-config/slo.yml is the output for the defaults.",
    )
    rules.add_argument("--job", default=None, help="only for this service (the job label); default: every job")
    return parser


def _export(directory: str, force: bool) -> int:
    from pathlib import Path

    from otel_reliability.cli import export

    try:
        written = export.export(Path(directory), force=force)
    except (OSError, FileExistsError) as exc:
        sys.stderr.write(f"otel-reliability: {exc}\n")
        return EXIT_UNREACHABLE
    sys.stdout.write(f"wrote {len(written)} files to {directory}\n")
    return EXIT_OK


def _slo_rules(job: str | None) -> int:
    from otel_reliability import slo
    from otel_reliability.config import ConfigError

    try:
        settings = config.load()
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_UNREACHABLE
    sys.stdout.write(slo.rules(settings, job))
    return EXIT_OK


def _fleet_thresholds(stale_after: float) -> Thresholds:
    """The apps' own thresholds, from the same variables (validated by otel_reliability.config)."""
    from otel_reliability.cli.fleet import Thresholds

    settings = config.load()
    return Thresholds(
        error_rate_percent=settings.error_rate_threshold,
        min_requests=settings.error_min_requests,
        pool_warn_percent=settings.pool_warn_utilization,
        memory_warn_percent=settings.memory_warn_percent,
        cpu_warn_percent=settings.cpu_warn_percent,
        expected_statement_timeout=settings.expected_statement_timeout,
        stale_after=stale_after,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export-config":
        return _export(args.dir, args.force)
    if args.command == "slo-rules":
        return _slo_rules(args.job)
    from otel_reliability.cli.app import Paths, Tokens, run_check, write_snapshot
    from otel_reliability.cli.fleet import run_fleet_check
    from otel_reliability.cli.report import ADMIN_TOKEN_ENV, ERROR, HEALTH_TOKEN_ENV, Item, render

    if args.timeout <= 0:
        sys.stderr.write("otel-reliability: --timeout must be a positive number of seconds\n")
        return EXIT_UNREACHABLE
    report: Report
    if args.prometheus is not None:
        if args.stale_after <= 0:
            sys.stderr.write("otel-reliability: --stale-after must be a positive number of seconds\n")
            return EXIT_UNREACHABLE
        from otel_reliability.config import ConfigError

        try:
            thresholds = _fleet_thresholds(args.stale_after)
        except ConfigError as exc:
            sys.stderr.write(f"{exc}\n")
            return EXIT_UNREACHABLE
        if args.html is not None:
            sys.stderr.write("otel-reliability: --html writes one app's status page: use it with --url\n")
            return EXIT_UNREACHABLE
        report = run_fleet_check(
            args.prometheus, job=args.job, thresholds=thresholds, timeout=args.timeout, admin_path=args.admin_path
        )
    else:
        if args.job is not None:
            sys.stderr.write("otel-reliability: --job needs --prometheus (one app has one service)\n")
            return EXIT_UNREACHABLE
        tokens = Tokens(
            health=args.token or os.environ.get(HEALTH_TOKEN_ENV) or None,
            admin=args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None,
        )
        paths = Paths(health=args.health_path.rstrip("/"), admin=args.admin_path.rstrip("/"))
        report = run_check(args.url or DEFAULT_URL, paths=paths, tokens=tokens, timeout=args.timeout)
        if args.html is not None and report.reachable:
            problem = write_snapshot(report.url, args.html, paths=paths, tokens=tokens, timeout=args.timeout)
            if problem is not None:
                sys.stderr.write(f"otel-reliability: {problem}\n")
                report.items.append(Item("status page", ERROR, problem, None, f"{paths.health}/ui"))
    if args.json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
    else:
        (sys.stdout if report.reachable else sys.stderr).write(render(report))
    return report.exit_code
