"""The segment dashboard: generated from scripts/gen_dashboards.py, and every query it sends runs
against the detector's real tables (chdb, migrated as the detector migrates them) with Grafana's
ClickHouse macros and the dashboard's variables filled in."""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

import msgspec
import numpy as np
import pytest

from adwatch.storage import make_clickhouse
from adwatch_detector.backtest import run_backtest
from adwatch_detector.migrations import Tables, migrate
from adwatch_detector.rules import load_rules
from adwatch_detector.sinks import window_row
from adwatch_dev.simulate import sample_counts, to_windows

from . import chart

START = 1_767_225_600_000  # 2026-01-01 00:00 UTC
SPEC = importlib.util.spec_from_file_location("gen_dashboards", chart.REPO / "scripts" / "gen_dashboards.py")
assert SPEC and SPEC.loader
gen = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gen)


def test_the_checked_in_dashboard_is_what_the_generator_writes() -> None:
    assert gen.OUT.read_text(encoding="utf-8") == gen.render(), "run `make dashboards` and commit the result"


def _queries(board: dict[str, Any]) -> dict[str, str]:
    out = {f"panel {p['id']}": t["rawSql"] for p in board["panels"] for t in p["targets"]}
    out |= {f"annotation {a['name']}": a["target"]["rawSql"] for a in board["annotations"]["list"]}
    out |= {f"variable {v['name']}": v["query"] for v in board["templating"]["list"] if v["type"] == "query"}
    return out


def _fill(sql: str, variables: dict[str, str], from_s: int, to_s: int) -> str:
    """Grafana's side: the plugin's macros and the dashboard variables."""
    sql = re.sub(
        r"\$__timeFilter\(([^()]*(?:\([^()]*\)[^()]*)*)\)",
        rf"(\1 >= toDateTime({from_s}) AND \1 <= toDateTime({to_s}))",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({from_s})").replace("$__toTime", f"toDateTime({to_s})")
    for name, value in variables.items():
        sql = sql.replace("${" + name + "}", value)
    assert "$" not in sql, f"a macro or variable left unfilled: {sql}"
    return sql


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Six hours of four segments; DE's CTR falls on both formats at 04:00 (alerts from the rules)."""
    rng = np.random.default_rng(9)
    n = 6 * 60
    windows = []
    for country in ("DE", "US"):
        for fmt in ("banner", "native"):
            im, cr, ec = np.full(n, 800.0), np.full(n, 0.03), np.full(n, 2.0)
            if country == "DE":
                cr[240:280] *= 0.3
            windows += to_windows(country, fmt, START, *sample_counts(rng, im, cr, ec))
    points: list[Any] = []  # the rules' bands of the (segment, alert type) pairs that alerted
    alerts = run_backtest([(w.segment_key, w) for w in windows], load_rules(None), points)
    ch = make_clickhouse(f"chdb://{tmp_path_factory.mktemp('ch')}")
    migrate(ch, Tables("ad_metrics", "ad_alerts"))
    ch.insert_json_rows("ad_metrics", [window_row(w.segment_key, w, written_at_ms=1) for w in windows])
    ch.insert_json_rows("ad_bands", [{**msgspec.structs.asdict(p), "written_at_ms": 1} for p in points])
    rows = [
        {**{f: getattr(a, f) for f in a.__struct_fields__}, "trace_id": "", "segment": f"{a.country}|{a.ad_format}"}
        for a in alerts
    ]
    ch.insert_json_rows("ad_alerts", rows)
    return ch


@pytest.mark.parametrize("metric", ["ctr", "ecpm", "impressions"])
def test_every_query_runs_on_the_detectors_tables_and_finds_the_incident(store: Any, metric: str) -> None:
    board = json.loads(gen.OUT.read_text(encoding="utf-8"))
    variables = {"country": "DE", "ad_format": "banner", "metric": metric}
    from_s, to_s = START // 1000 + 3 * 3600, START // 1000 + 5 * 3600  # 03:00-05:00, around the drop
    results = {name: store.query(_fill(sql, variables, from_s, to_s)) for name, sql in _queries(board).items()}
    assert all(results.values()), [name for name, rows in results.items() if not rows]
    series = results["panel 1"]
    assert len(series) == 2 * 60 + 1 and all(len(r) == 5 for r in series)
    if metric == "ctr":  # DE banner's CTR drop alerted: the rule's band is there for every window
        assert all(low is not None and low <= expected <= high for _, _, expected, low, high in series)
        assert all(isinstance(r[1], float) and 0 < r[1] < 10 for r in series)  # CTR in percent
    assert results["variable country"] == [("DE",), ("US",)]
    drill = {r[0]: r[1] for r in results["panel 3"]}
    assert drill == {"DE|native": "country", "US|banner": "ad_format"}
    if metric == "ctr":  # DE native fell as DE banner did; US banner did not
        change = {r[0]: r[4] for r in results["panel 3"]}
        assert change["DE|native"] < -20 < change["US|banner"]
        top = [r[0] for r in results["panel 4"]]
        assert set(top) <= {"DE|banner", "DE|native"} and "DE|banner" in top


def test_the_chart_ships_the_segment_dashboard_and_its_data_source() -> None:
    objs = chart.objects(chart.render_case("all-features"))  # dashboards on, ClickHouse in the release
    maps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    (board,) = [m for name, m in maps.items() if name.endswith("-dashboard-segment")]
    assert json.loads(board["data"]["adwatch-segment.json"]) == json.loads(gen.OUT.read_text(encoding="utf-8"))
    (source,) = [m for name, m in maps.items() if name.endswith("-grafana-clickhouse")]
    assert source["metadata"]["labels"]["grafana_datasource"] == "1"
    provisioned = source["data"]["adwatch-clickhouse.yaml"]
    assert "type: grafana-clickhouse-datasource" in provisioned and "uid: adwatch-clickhouse" in provisioned
    assert "password: $__env{ADWATCH_CLICKHOUSE_PASSWORD}" in provisioned  # never the password itself


def test_notifications_link_the_segment_dashboard_and_a_runbook_per_alert_type() -> None:
    """The chart's link templates (cloud values) open this dashboard at the alert's segment and time,
    with variables the dashboard has, and a runbook page that exists for every alert type."""
    from urllib.parse import parse_qs, urlsplit

    from adwatch.contracts import ALERT_TYPES

    objs = chart.objects(chart.render_case("cloud"))
    envs = [o["data"] for o in objs if o["kind"] == "ConfigMap" and "ADWATCH_NOTIFIER_CHANNEL" in o.get("data", {})]
    assert envs, "no notifier environment rendered"
    board = json.loads(gen.OUT.read_text(encoding="utf-8"))
    variables = {v["name"] for v in board["templating"]["list"]}
    for env in envs:
        link = urlsplit(env["ADWATCH_NOTIFIER_DASHBOARD_URL_TEMPLATE"])
        assert link.path.split("/")[2] == board["uid"]
        query = parse_qs(link.query)
        assert {k.removeprefix("var-") for k in query if k.startswith("var-")} <= variables
        assert (query["from"], query["to"]) == (["{from_ms}"], ["{to_ms}"])
        assert env["ADWATCH_NOTIFIER_RUNBOOK_URL_TEMPLATE"].endswith("/{alert_type}.md")
    runbooks = chart.REPO / "docs" / "runbooks"
    assert [t for t in ALERT_TYPES if not (runbooks / f"{t}.md").is_file()] == []
