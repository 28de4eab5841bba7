"""SLOs: the generated multiwindow, multi-burn-rate rules are the committed ones, pass promtool, fire on series that
burn at each rate and resolve (collector-config/slo.test.yml); the checklist reports the budget left."""

from __future__ import annotations

import subprocess

import pytest

from otel_reliability import checklist, config, slo
from otel_reliability.cli import budget
from otel_reliability.cli.report import ACTION, OK, SKIPPED
from tests.support import BIN, ROOT, promtool_binary, require

CONFIG = ROOT / "collector-config"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = promtool_binary()
    require(path is not None, "build/promtool (make tools)")
    assert path is not None
    return subprocess.run([path, *args], cwd=CONFIG, capture_output=True, text=True, timeout=300)


def test_committed_slo_rules_are_the_generated_ones_for_the_defaults() -> None:
    assert (CONFIG / "slo.yml").read_text() == slo.rules(config.load({}))
    printed = subprocess.run([str(BIN / "otel-reliability"), "slo-rules"], capture_output=True, text=True, env={})
    assert printed.returncode == 0 and printed.stdout == (CONFIG / "slo.yml").read_text()


def test_slo_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", "slo.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "slo.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_prometheus_config_loads_the_slo_rules() -> None:
    for name in ("prometheus.yml", "prometheus-otlp.yml"):
        assert "  - slo.yml\n" in (CONFIG / name).read_text(), name


def test_rules_for_one_service_use_its_objectives_and_its_job_only(tmp_path) -> None:
    settings = config.load(
        {
            "OTEL_RELIABILITY_SLO_AVAILABILITY": "99.5",
            "OTEL_RELIABILITY_SLO_LATENCY_THRESHOLD": "1",
            "OTEL_RELIABILITY_SLO_LATENCY_TARGET": "95",
        }
    )
    text = slo.rules(settings, job="checkout")
    assert "> 0.072 and" in text  # 14.4 x the 0.5 % budget
    assert 'le=~"1|1.0"' in text  # the bucket as each path writes its bound
    assert text.count('job="checkout"') > 20 and "rate(http_server_request_duration_seconds_count[" not in text
    (tmp_path / "checkout.yml").write_text(text)
    checked = promtool("check", "rules", str(tmp_path / "checkout.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_objectives_out_of_range_stop_at_start_up() -> None:
    with pytest.raises(config.ConfigError, match="OTEL_RELIABILITY_SLO_AVAILABILITY"):
        config.load({"OTEL_RELIABILITY_SLO_AVAILABILITY": "100"})


def _rows(*rows: tuple[str, str, float]) -> list[tuple[dict[str, str], float]]:
    return [({"job": job, "slo": name}, value) for job, name, value in rows]


def test_fleet_budget_item_reports_what_is_left_and_asks_for_action_when_spent_or_burning() -> None:
    def query(answers: dict[str, list[tuple[dict[str, str], float]]]):
        return lambda expr: next((v for k, v in answers.items() if expr.startswith(k)), [])

    def sel(metric: str, extra: str) -> str:
        return f"{metric}{{{extra}}}"

    assert budget.fleet_item(query({}), sel).status == SKIPPED
    healthy = query({slo.BUDGET_REMAINING: _rows(("shop", "availability", 0.62), ("shop", "latency", 0.98))})
    item = budget.fleet_item(healthy, sel)
    assert item.status == OK and "shop availability 62% left" in item.summary
    spent = query({slo.BUDGET_REMAINING: _rows(("shop", "availability", -0.1))})
    assert budget.fleet_item(spent, sel).status == ACTION
    burning = query(
        {
            slo.BUDGET_REMAINING: _rows(("shop", "availability", 0.9)),
            "ALERTS": [({"job": "shop", "slo": "availability", "alertname": "SLOErrorBudgetBurnFast"}, 1.0)],
        }
    )
    item = budget.fleet_item(burning, sel)
    assert item.status == ACTION and "burning fast" in item.summary and item.action


def test_app_budget_item_gives_the_burn_rate_over_the_window() -> None:
    settings = config.load({})
    calm = {"total_requests": 1000, "error_count": 1, "window_seconds": 300, "min_requests": 20}
    item = checklist.error_budget(calm, "/api/health/error-rate", settings)
    assert item.status == OK and "1.0x" in item.summary  # 0.1 % failing: exactly the budget's pace
    on_fire = {**calm, "error_count": 50}
    item = checklist.error_budget(on_fire, "/api/health/error-rate", settings)
    assert item.status == ACTION and "50.0x" in item.summary and "lasts 14.4 h" in (item.action or "")
