"""The observability files cannot drift from the code: every metric a Grafana panel or an
alert rule queries is one the code exports, and the rules pass promtool's own checks and
unit tests (the Debian ``prometheus`` package's promtool)."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from flts.api.metrics import ApiMetrics
from flts.services.metrics import WorkerMetrics
from servers.prometheus import binary

from .conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
#: Series from kube-state-metrics that the HPA alert and panel read (not FLTS's to export).
KUBE_STATE_METRICS = {
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
}
_METRIC = re.compile(r"\b((?:flts|kube)_[a-z0-9_]+)\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}


def exported() -> set[str]:
    """Every sample name the API and the workers can expose (labelled families included)."""
    names: set[str] = set()
    worker = WorkerMetrics()
    families = [*ApiMetrics().registry.collect(), *worker.registry.collect()]
    for family in families:
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    names.add("flts_consumer_pending_messages")  # collected at scrape time from the bus
    return names


def rule_queries() -> list[str]:
    document = yaml.safe_load((PROMETHEUS / "rules" / "flts-alerts.yml").read_text())
    return [str(r["expr"]) for g in document["groups"] for r in g["rules"]]


def panel_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        dashboard: dict[str, Any] = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            assert panel.get("targets"), f"{path.name}: panel {panel['title']!r} has no query"
            out += [(panel["title"], t["expr"]) for t in panel["targets"]]
    return out


def test_every_dashboard_query_uses_exported_metrics() -> None:
    known = exported() | KUBE_STATE_METRICS
    queries = panel_queries()
    assert len(queries) >= 10
    used = set()
    for title, expr in queries:
        metrics = set(_METRIC.findall(expr))
        assert metrics, f"panel {title!r} queries no FLTS metric: {expr}"
        assert metrics <= known, f"panel {title!r} uses unknown {sorted(metrics - known)}"
        used |= metrics
    # The dashboard covers what the issue asks for.
    for needed in (
        "flts_http_request_duration_seconds_bucket",
        "flts_serving_model_info",
        "flts_promotions_total",
        "flts_training_duration_seconds_bucket",
        "flts_events_dead_lettered_total",
    ):
        assert needed in used, needed


def test_every_alert_rule_uses_exported_metrics() -> None:
    known = exported() | KUBE_STATE_METRICS
    for expr in rule_queries():
        unknown = set(_METRIC.findall(expr)) - known
        assert not unknown, f"{expr}: unknown {sorted(unknown)}"


def test_the_checker_notices_a_metric_the_code_does_not_export() -> None:
    assert "flts_http_requests_total" in exported()
    assert "flts_http_requests_count" not in exported()


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "rules", str(PROMETHEUS / "rules" / "flts-alerts.yml")],
        ["test", "rules", *sorted(str(p) for p in (PROMETHEUS / "tests").glob("*.yml"))],
        ["check", "config", str(PROMETHEUS / "compose.yml")],
    ],
    ids=["check-rules", "test-rules", "check-compose-config"],
)
def test_promtool(argv: list[str]) -> None:
    result = subprocess.run(
        [binary("promtool"), *argv], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_scrape_config_keeps_annotated_flts_pods() -> None:
    """Debian's promtool lacks kubernetes_sd, so the structure is checked here instead."""
    config = yaml.safe_load((PROMETHEUS / "kubernetes.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    keeps = {r["source_labels"][0] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert keeps == {
        "__meta_kubernetes_pod_label_app_kubernetes_io_part_of",
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
    }
    assert config["rule_files"] == ["rules/flts-alerts.yml"]


def test_every_alert_has_a_runbook_section() -> None:
    document = yaml.safe_load((PROMETHEUS / "rules" / "flts-alerts.yml").read_text())
    operations = (ROOT / "docs" / "operations.md").read_text()
    alerts = [r for g in document["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 7
    for rule in alerts:
        assert rule["annotations"]["runbook_url"].startswith("docs/operations.md#")
        assert f"### {rule['alert']}" in operations, rule["alert"]
