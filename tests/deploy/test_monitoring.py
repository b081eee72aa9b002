"""The SLO rules and the dashboard: valid PromQL (promtool), the alerts fire when they should
(promtool unit test), and every metric they read is one the services really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from . import chart

DASHBOARD = chart.REPO / "dashboards" / "adwatch-slo.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (Debian: apt-get install prometheus)")


def rule_groups() -> list[dict[str, Any]]:
    objs = chart.objects(chart.render_case("all-features"))
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"].replace("$namespace", "adwatch") for p in panels for t in p["targets"]]


def exported_metrics() -> set[str]:
    """Series names the three services register (counters as *_total, histograms as *_bucket/_count/_sum)."""
    from adwatch_detector.metrics import DetectorMetrics
    from adwatch_generator.metrics import GeneratorMetrics
    from adwatch_notifier.metrics import NotifierMetrics

    registry = CollectorRegistry()
    DetectorMetrics(registry)
    GeneratorMetrics(registry)
    NotifierMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    return names


def read_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\badwatch_[a-z_]+\b", expr))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


@needs_promtool
def test_rules_pass_promtool(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups()}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool has no expression checker: wrap each panel query in a recording rule."""
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_delivery_burn_pages_and_healthy_channel_does_not(tmp_path: Path) -> None:
    """Slack dead-letters 10% of alerts (100x the 0.1% budget) -> page; PagerDuty delivers all -> silence."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    series = 'adwatch_notifier_notifications_total{{namespace="adwatch",channel="{ch}",outcome="{out}"}}'
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": series.format(ch="slack", out="delivered"), "values": "0+90x60"},
                    {"series": series.format(ch="slack", out="dead_lettered"), "values": "0+10x60"},
                    {"series": series.format(ch="pagerduty", out="delivered"), "values": "0+100x60"},
                    {"series": series.format(ch="pagerduty", out="dead_lettered"), "values": "0+0x60"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "20m",
                        "alertname": "AdwatchDeliveryBudgetBurn",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "namespace": "adwatch",
                                    "channel": "slack",
                                    "slo": "delivery-success",
                                    "severity": "page",
                                },
                                "exp_annotations": _annotations("delivery-success", "page"),
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(test))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def _annotations(slo: str, severity: str) -> dict[str, str]:
    alerts = [r for g in rule_groups() for r in g["rules"] if r.get("labels", {}).get("slo") == slo and "alert" in r]
    (rule,) = [r for r in alerts if r["labels"]["severity"] == severity]
    annotations: dict[str, str] = rule["annotations"]
    return annotations


def test_rules_and_dashboard_read_only_exported_metrics() -> None:
    exported = exported_metrics()
    exprs = [r["expr"] for g in rule_groups() for r in g["rules"]] + dashboard_exprs()
    unknown = set().union(*(read_metrics(e) for e in exprs)) - exported
    assert not unknown, f"not exported by any service: {sorted(unknown)}"


def test_every_slo_has_page_and_ticket_alerts() -> None:
    groups = {g["name"]: g["rules"] for g in rule_groups()}
    slos = {r["labels"]["slo"] for r in groups["adwatch-slo-recording"] if r["record"] == "adwatch:slo_objective"}
    assert slos == {"detection-latency", "end-to-end-latency", "delivery-success", "freshness"}
    for slo in slos:
        alerts = [r for r in groups["adwatch-slo-alerts"] if r["labels"]["slo"] == slo]
        severities = sorted(r["labels"]["severity"] for r in alerts)
        assert severities == ["page", "ticket"], slo
        page = next(r["expr"] for r in alerts if r["labels"]["severity"] == "page")
        assert all(w in page for w in ("ratio_rate1h", "ratio_rate5m", "ratio_rate6h", "ratio_rate30m", "14.4", "6 *"))


def test_dashboard_is_shipped_by_the_chart() -> None:
    objs = chart.objects(chart.render_case("cloud"))
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = cm["data"]["adwatch-slo.json"]
    assert "__" not in shipped.replace("__name__", ""), "a threshold placeholder was left in the dashboard"
    assert json.loads(shipped)["panels"][0]["targets"] == json.loads(DASHBOARD.read_text())["panels"][0]["targets"]


def test_dashboard_titles_state_the_thresholds_the_rules_use() -> None:
    """The dashboard said 20 s while the rule used 15 s: now both come from the values."""
    values = {"detectionLatencyThreshold": "12.5", "objectives": {"deliverySuccess": 0.995}}
    cloud = chart.load_values(chart.CASES["cloud"])
    objs = chart.objects(chart.render(chart._merge(cloud, {"monitoring": {"prometheusRule": values}})))
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    titles = [p["title"] for p in json.loads(cm["data"]["adwatch-slo.json"])["panels"]]
    assert "Detection latency (SLO: 99% < 12.5 s)" in titles
    assert "Delivery success by channel (SLO: 99.5%)" in titles
    assert "Segments tracked (cap 100000), evicted, alerts folded" in titles  # cloud's detector.segments.maxTracked
    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    exprs = [r.get("expr", "") for g in rule["spec"]["groups"] for r in g["rules"]]
    assert any('le="12.5"' in e for e in exprs)


NS = 'namespace="adwatch"'
PIPELINE_CASES = [
    # (alert, input series -> values, eval time, labels of each expected alert; [] = stays quiet)
    ("AdwatchDetectorAbsent", {f"adwatch_notifier_consumer_lag_records{{{NS}}}": "0x20"}, "10m", [{}]),
    ("AdwatchDetectorAbsent", {f"adwatch_detector_last_batch_timestamp_seconds{{{NS}}}": "1x20"}, "10m", []),
    (
        "AdwatchComponentDown",
        {f'up{{{NS},component="notifier-slack"}}': "0x20", f'up{{{NS},component="detector"}}': "1x20"},
        "10m",
        [{"component": "notifier-slack"}],
    ),
    ("AdwatchComponentDown", {f'up{{{NS},component="notifier-slack"}}': "1x20"}, "10m", []),
    (
        "AdwatchComponentAbsent",
        {f'up{{{NS},component="{c}"}}': "1x20" for c in ("notifier-console", "notifier-email", "notifier-pagerduty")}
        | {f'up{{{NS},component="notifier-webhook"}}': "1x20"},
        "10m",
        [{"component": "generator"}, {"component": "notifier-slack"}],
    ),
    (
        "AdwatchComponentAbsent",
        {f'up{{{NS},component="notifier-{c}"}}': "1x20" for c in ("console", "email", "pagerduty", "slack", "webhook")}
        | {f'up{{{NS},component="generator"}}': "1x20"},
        "10m",
        [],
    ),
    ("AdwatchWatchdog", {}, "1m", [{}]),
    (
        "AdwatchDeadLettersGrowing",
        {f'adwatch_detector_dead_letters_total{{{NS},reason="decode"}}': "0+20x30"},
        "20m",
        [{}],
    ),
    (
        "AdwatchDeadLettersGrowing",
        {f'adwatch_detector_dead_letters_total{{{NS},reason="decode"}}': "0+1x30"},
        "20m",
        [],
    ),
    (
        "AdwatchAlertsDeadLettered",
        {
            f'adwatch_notifier_dead_letters_total{{{NS},channel="slack",reason="permanent"}}': "0x10 1x20",
            f'adwatch_notifier_dead_letters_total{{{NS},channel="email",reason="permanent"}}': "0x30",
        },
        "15m",
        [{"channel": "slack"}],
    ),
    (
        "AdwatchLateEvents",
        {
            f"adwatch_detector_late_events_total{{{NS}}}": "0+50x60",
            f"adwatch_detector_events_total{{{NS}}}": "0+1000x60",
        },
        "45m",
        [{}],
    ),
    (
        "AdwatchLateEvents",
        {
            f"adwatch_detector_late_events_total{{{NS}}}": "0+1x60",
            f"adwatch_detector_events_total{{{NS}}}": "0+1000x60",
        },
        "45m",
        [],
    ),
    (  # one producer stamps 5 events a second a day late: a ticket naming the reason, after 10 minutes
        "AdwatchEventTimeRejected",
        {
            f'adwatch_detector_dead_letters_total{{{NS},reason="stale_event_time"}}': "0+300x40",
            f'adwatch_detector_dead_letters_total{{{NS},reason="malformed_json"}}': "0+300x40",
        },
        "30m",
        [{"reason": "stale_event_time"}],
    ),
    (  # a stray misdated event now and then is no ticket
        "AdwatchEventTimeRejected",
        {f'adwatch_detector_dead_letters_total{{{NS},reason="future_event_time"}}': "0+1x40"},
        "30m",
        [],
    ),
    (  # a burst shorter than the 10 minutes is no ticket either
        "AdwatchEventTimeRejected",
        {f'adwatch_detector_dead_letters_total{{{NS},reason="future_event_time"}}': "0x20 600x20"},
        "35m",
        [],
    ),
    (  # the input stopped for 10 minutes and more: a ticket (the detector's no_data paged already)
        "AdwatchInputSilent",
        {f"adwatch_detector_input_idle_seconds{{{NS}}}": "0+60x30"},
        "20m",
        [{}],
    ),
    ("AdwatchInputSilent", {f"adwatch_detector_input_idle_seconds{{{NS}}}": "2x30"}, "20m", []),
    (  # partition 3 runs 10 minutes behind, partition 0 keeps up: a ticket naming partition 3
        "AdwatchPartitionLagging",
        {
            f'adwatch_detector_partition_lag_seconds{{{NS},partition="3"}}': "600x30",
            f'adwatch_detector_partition_lag_seconds{{{NS},partition="0"}}': "0x30",
        },
        "20m",
        [{"partition": "3"}],
    ),
    (  # behind for 5 minutes only: not yet a ticket
        "AdwatchPartitionLagging",
        {f'adwatch_detector_partition_lag_seconds{{{NS},partition="3"}}': "0x15 600x5 0x10"},
        "20m",
        [],
    ),
    # all-features: maxTracked 250000, threshold 0.9 -> 225000 for 30 minutes
    ("AdwatchSegmentsNearCap", {f"adwatch_detector_segments_tracked{{{NS}}}": "230000x60"}, "45m", [{}]),
    ("AdwatchSegmentsNearCap", {f"adwatch_detector_segments_tracked{{{NS}}}": "200000x60"}, "45m", []),
    (  # above the line for 20 minutes only: not yet a ticket
        "AdwatchSegmentsNearCap",
        {f"adwatch_detector_segments_tracked{{{NS}}}": "200000x25 230000x35"},
        "45m",
        [],
    ),
]


def _expected_alert(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    """The alert as promtool reports it: the rule's labels, the series' labels, expanded annotations."""
    rules = [r for g in rule_groups() for r in g["rules"] if r.get("alert") == alert]
    rule = next(
        r for r in rules if r.get("labels", {}).get("component", labels.get("component")) == labels.get("component")
    )
    all_labels = {"namespace": "adwatch", **labels, **rule.get("labels", {})}
    if alert == "AdwatchWatchdog":
        all_labels.pop("namespace")
    annotations = {
        k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: all_labels[m.group(1)], v)
        for k, v in rule["annotations"].items()
    }
    return {"exp_labels": all_labels, "exp_annotations": annotations}


@needs_promtool
@pytest.mark.parametrize(("alert", "series", "at", "expected"), PIPELINE_CASES)
def test_pipeline_alerts_fire_when_they_should_and_stay_quiet_otherwise(
    tmp_path: Path, alert: str, series: dict[str, str], at: str, expected: list[dict[str, str]]
) -> None:
    """Each alert on the pipeline itself (absent, down, dead man's switch, dead letters, late
    events, segments near the tracking cap), once firing and once quiet, in promtool's unit tests."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    {"eval_time": at, "alertname": alert, "exp_alerts": [_expected_alert(alert, e) for e in expected]}
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    result = promtool("test", "rules", str(tmp_path / "test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
