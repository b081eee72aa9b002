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

from adwatch.contracts import SegmentWindow
from adwatch.storage import make_clickhouse
from adwatch_detector.backtest import run_backtest
from adwatch_detector.drilldown import Folder
from adwatch_detector.hierarchy import Hierarchy
from adwatch_detector.migrations import Tables, migrate
from adwatch_detector.rules import load_rules
from adwatch_detector.sinks import alert_row, window_row
from adwatch_dev.simulate import sample_counts

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
    """Grafana's side: the plugin's macros and the dashboard variables (``${name:sqlstring}``: the
    value quoted, its quotes doubled, as Grafana formats it)."""
    sql = re.sub(
        r"\$__timeFilter\(([^()]*(?:\([^()]*\)[^()]*)*)\)",
        rf"(\1 >= toDateTime({from_s}) AND \1 <= toDateTime({to_s}))",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({from_s})").replace("$__toTime", f"toDateTime({to_s})")
    for name, value in variables.items():
        sql = sql.replace("${" + name + ":sqlstring}", "'" + value.replace("'", "''") + "'")
        sql = sql.replace("${" + name + "}", value)
    assert "$" not in sql, f"a macro or variable left unfilled: {sql}"
    return sql


HIERARCHY = "*;country;country,ad_format"
DE, DE_BANNER, DE_NATIVE = "country=DE", "ad_format=banner,country=DE", "ad_format=native,country=DE"
US, US_BANNER, US_NATIVE = "country=US", "ad_format=banner,country=US", "ad_format=native,country=US"


def _windows(dimensions: dict[str, str], parts: list[tuple[Any, ...]]) -> list[SegmentWindow]:
    """One segment's windows: the sum of its leaves' counts (each event feeds every ancestor)."""
    imps, clicks, revenue = (sum(p[i] for p in parts) for i in range(3))
    return [
        SegmentWindow(
            dimensions=dimensions,
            window_start_ms=START + i * MINUTE,
            window_end_ms=START + (i + 1) * MINUTE,
            impressions=int(imps[i]),
            clicks=int(clicks[i]),
            revenue_usd=float(revenue[i]),
            event_counts={"impression": int(imps[i]), "click": int(clicks[i])},
        )
        for i in range(len(imps))
    ]


MINUTE = 60_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Six hours of the segments of sets ``*;country;country,ad_format`` over two countries and two
    formats; DE's CTR falls on both formats at 04:00. Alerts from the rules, folded and drilled down
    as the detector does (DE's alert names its formats; theirs are folded into it), written with the
    sinks' own row builders."""
    rng = np.random.default_rng(9)
    n = 6 * 60
    leaves: dict[tuple[str, str], tuple[Any, ...]] = {}
    for country in ("DE", "US"):
        for fmt in ("banner", "native"):
            im, cr, ec = np.full(n, 800.0), np.full(n, 0.03), np.full(n, 2.0)
            if country == "DE":
                cr[240:280] *= 0.3
            leaves[(country, fmt)] = sample_counts(rng, im, cr, ec)
    windows = [w for (c, f), p in leaves.items() for w in _windows({"country": c, "ad_format": f}, [p])]
    for country in ("DE", "US"):
        windows += _windows({"country": country}, [p for (c, _), p in leaves.items() if c == country])
    windows += _windows({}, list(leaves.values()))
    points: list[Any] = []  # the rules' bands of the (segment, alert type) pairs that alerted
    alerts = run_backtest([(w.segment_id, w) for w in windows], load_rules(None), points)
    published, folded = Folder(Hierarchy.parse(HIERARCHY)).fold(
        alerts, points, {w.segment_id: w.dimensions for w in windows}
    )
    ch = make_clickhouse(f"chdb://{tmp_path_factory.mktemp('ch')}")
    migrate(ch, Tables("ad_metrics", "ad_alerts"))
    ch.insert_json_rows("ad_metrics", [window_row(w.segment_id, w, written_at_ms=1) for w in windows])
    ch.insert_json_rows("ad_bands", [{**msgspec.structs.asdict(p), "written_at_ms": 1} for p in points])
    ch.insert_json_rows("ad_alerts", [alert_row(a, a.segment_id, trace_id="") for a in published + folded])
    return ch


FROM_S, TO_S = START // 1000 + 3 * 3600, START // 1000 + 5 * 3600  # 03:00-05:00, around the drop


def _run(store: Any, **variables: str) -> dict[str, list[tuple[Any, ...]]]:
    board = json.loads(gen.OUT.read_text(encoding="utf-8"))
    variables = {"segment_set": "(all sets)", "filter": "", "metric": "ctr", **variables}
    return {name: store.query(_fill(sql, variables, FROM_S, TO_S)) for name, sql in _queries(board).items()}


@pytest.mark.parametrize("metric", ["ctr", "ecpm", "impressions"])
def test_every_query_runs_on_the_detectors_tables_and_finds_the_incident(store: Any, metric: str) -> None:
    """DE, the segment paged: its series and band, its alert (its formats folded into it), the
    drill-down to its formats, the contributors the detector named, the top segments."""
    results = _run(store, segment=DE, metric=metric)
    assert all(results.values()), [name for name, rows in results.items() if not rows]
    series = results["panel 1"]
    assert len(series) == 2 * 60 + 1 and all(len(r) == 5 for r in series)
    if metric == "ctr":  # DE's CTR drop alerted: the rule's band is there for every window
        assert all(low is not None and low <= expected <= high for _, _, expected, low, high in series)
        assert all(isinstance(r[1], float) and 0 < r[1] < 10 for r in series)  # CTR in percent
    assert results["variable segment_set"] == [("(all sets)",), ("*",), ("ad_format,country",), ("country",)]
    assert {r[0] for r in results["variable segment"]} == {"*", DE, US, DE_BANNER, DE_NATIVE, US_BANNER, US_NATIVE}
    drill = {r[0]: r[1] for r in results["panel 3"]}
    assert drill == {DE_BANNER: 1, DE_NATIVE: 1}  # DE's children, by their dimensions; never US's
    firings = [r for r in results["panel 2"] if r[1] == "firing"]  # the page and its escalation (high)
    firing = min(firings, key=lambda r: r[0])
    assert firing[3] == "ctr_drop" and firing[10] >= 1 and firing[11] == ""  # paged, with children folded in
    assert all(r[11] == "" for r in firings) and len(firings) <= 2
    contributors = {r[2]: r for r in results["panel 5"]}
    assert set(contributors) == {DE_BANNER, DE_NATIVE}
    assert contributors[DE_BANNER][7] is True  # DE banner breached too: its alert is folded into DE's
    first = min(r[0] for r in results["panel 5"])  # each firing (the page, its escalation) names them
    assert sum(r[3] for r in results["panel 5"] if r[0] == first) == pytest.approx(100, abs=0.2)
    if metric == "ctr":  # both formats fell, and between them they are the whole of DE's change
        change = {r[0]: r[4] for r in results["panel 3"]}
        assert change[DE_BANNER] < -20 and change[DE_NATIVE] < -20
        assert sum(r[7] for r in results["panel 3"]) == pytest.approx(100, abs=0.2)
        top = {r[0]: r for r in results["panel 4"]}
        assert DE in top and set(top) <= {DE, "*"}  # the formats' alerts were folded, not paged
        assert top[DE][1] == "country" and top[DE][4] >= 1


def test_the_drilldown_of_all_traffic_is_every_segment_nearest_first(store: Any) -> None:
    """From ``*``: the countries (depth 1, DE the whole of the drop), then their formats (depth 2)."""
    results = _run(store, segment="*")
    rows = results["panel 3"]
    assert [(r[0], r[1]) for r in rows[:2]] == [(DE, 1), (US, 1)]  # DE's change is the larger
    assert {r[0] for r in rows if r[1] == 2} == {DE_BANNER, DE_NATIVE, US_BANNER, US_NATIVE}
    share = {r[0]: r[7] for r in rows}
    assert share[DE] > 90
    assert [r[2] for r in results["panel 5"]] == [DE]  # the detector named DE for all traffic


def test_a_folded_child_names_its_parent_and_the_picker_narrows_by_set_and_text(store: Any) -> None:
    results = _run(store, segment=DE_BANNER, segment_set="ad_format,country", filter="DE")
    alerts = results["panel 2"]
    # folded into DE's alert, not paged alone while DE's page fires; DE recovers two windows before
    # its formats (each pools less evidence), so the Folder releases their still-firing alerts then
    assert alerts and DE in {r[11] for r in alerts}
    released = [r for r in alerts if r[11] == ""]
    assert all(r[0] >= min(a[0] for a in alerts if a[11] == DE) for r in released)
    assert results["panel 3"] == []  # a leaf: nothing below it
    assert [r[0] for r in results["variable segment"]] == [DE_BANNER, DE_NATIVE]
    quoted = _run(store, segment="x' OR '1'='1", segment_set="it's")  # a quote in a value stays a value
    assert quoted["panel 1"] == [] and quoted["variable segment"] == []


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
    """The chart's link templates (cloud values) open this dashboard at the alert's segment (its id)
    and time, with variables the dashboard has, and a runbook page that exists for every alert type."""
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
        assert query["var-segment"] == ["{segment_id}"]  # any segment, by its id (docs/segments.md)
        assert (query["from"], query["to"]) == (["{from_ms}"], ["{to_ms}"])
        assert env["ADWATCH_NOTIFIER_RUNBOOK_URL_TEMPLATE"].endswith("/{alert_type}.md")
    runbooks = chart.REPO / "docs" / "runbooks"
    assert [t for t in ALERT_TYPES if not (runbooks / f"{t}.md").is_file()] == []
