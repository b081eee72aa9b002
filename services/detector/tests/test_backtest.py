"""Backtest on small JSONL files (windows and raw events)."""

from __future__ import annotations

import io
from pathlib import Path

import msgspec
import pytest

from adwatch.contracts import AdEvent, Alert, SegmentWindow, encode
from adwatch_detector.backtest import aggregate_events, clickhouse_windows, main, parse_jsonl
from adwatch_detector.hierarchy import Hierarchy

MIN = 60_000


def tutorial_windows() -> list[SegmentWindow]:
    return [
        SegmentWindow(
            window_start_ms=i * MIN,
            window_end_ms=(i + 1) * MIN,
            country="US",
            ad_format="banner",
            impressions=1000,
            clicks=50 if i < 6 else 20,
            revenue_usd=1.0,
        )
        for i in range(7)
    ]


def write_jsonl(path: Path, records: list[msgspec.Struct]) -> str:
    path.write_bytes(b"\n".join(encode(r) for r in records) + b"\n")
    return str(path)


def test_backtest_classic_on_windows_prints_the_alert(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "w.jsonl", list(tutorial_windows()))
    rules = tmp_path / "rules.yaml"
    rules.write_text("rule_set: classic\n")
    out = io.StringIO()
    assert main(["--input", source, "--rules", str(rules)], out) == 0
    text = out.getvalue()
    assert "🚨 CTR drop! US banner: 5.00% -> 2.00% (-60.0%)" in text
    assert "1 firing, 0 resolved" in text


def test_backtest_json_output_decodes_as_alerts(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "w.jsonl", list(tutorial_windows()))
    out = io.StringIO()
    assert main(["--input", source, "--rule-set", "classic", "--json"], out) == 0
    alerts = [msgspec.json.decode(line, type=Alert) for line in out.getvalue().splitlines()]
    assert [(a.alert_type, a.status) for a in alerts] == [("ctr_drop", "firing")]


def test_events_are_aggregated_to_windows(tmp_path: Path) -> None:
    def event(i: int, kind: str, t: int, imp: str | None = None) -> AdEvent:
        return AdEvent(
            event_id=f"e{i}",
            event_time_ms=t,
            event_type=kind,
            country="US",
            ad_format="banner",  # type: ignore[arg-type]
            app_id="a",
            placement_id="p",
            campaign_id="c",
            user_hash="u",
            revenue_usd=0.002 if kind == "impression" else 0.0,
            impression_id=imp,
        )

    events = [
        event(0, "impression", 1000),
        event(1, "impression", 2000),
        event(2, "click", 3000, "e0"),
        event(3, "click", 61_000),
        event(4, "impression", 62_000),
    ]
    windows = aggregate_events(events, MIN)
    assert [(w.window_start_ms, w.impressions, w.clicks, w.orphan_clicks) for w in windows] == [
        (0, 2, 1, 0),
        (MIN, 1, 1, 1),
    ]
    assert windows[0].revenue_usd == pytest.approx(0.004)
    floods = [event(100 + i, "click", 5 * MIN + i) for i in range(12)] + [event(99, "impression", 5 * MIN)]
    source = write_jsonl(tmp_path / "e.jsonl", [*events, *floods])
    out = io.StringIO()
    assert main(["--input", source], out) == 0
    assert "click_without_impression" in out.getvalue()


@pytest.mark.parametrize(
    ("args", "content"),
    [
        pytest.param(["--input", "{dir}/missing.jsonl"], None, id="missing-file"),
        pytest.param(["--input", "{dir}/bad.jsonl"], '{"window_start_ms": "x"}\n', id="bad-record"),
    ],
)
def test_backtest_reports_bad_input_with_exit_code_2(tmp_path: Path, args: list[str], content: str | None) -> None:
    if content is not None:
        (tmp_path / "bad.jsonl").write_text(content)
    assert main([a.format(dir=tmp_path) for a in args], io.StringIO()) == 2


def test_backtest_reads_the_detectors_clickhouse_table(tmp_path: Path) -> None:
    """Windows written by the job's sink (twice, as a replay would) backtest like the JSONL ones."""
    from adwatch.storage import make_clickhouse
    from adwatch_detector.migrations import metrics_ddl
    from adwatch_detector.sinks import window_row

    url = f"chdb://{tmp_path / 'ch'}"
    store = make_clickhouse(url)
    store.command(metrics_ddl("ad_metrics"))
    rows = [window_row(w.segment_key, w, written_at_ms=1) for w in tutorial_windows()]
    store.insert_json_rows("ad_metrics", rows + rows)
    out = io.StringIO()
    assert main(["--clickhouse", url, "--rule-set", "classic", "--json"], out) == 0
    alerts = [msgspec.json.decode(line, type=Alert) for line in out.getvalue().splitlines()]
    assert [(a.alert_type, a.status, a.current) for a in alerts] == [("ctr_drop", "firing", 0.02)]


# --- segment sets: roll-up of windows, events into every set, drill-down folding -------------

FORMATS = ("banner", "interstitial", "rewarded_video", "native")


def v1_line(start: int, ad_format: str, clicks: int, orphans: int = 0) -> str:
    """A version-1 SegmentWindow record as the previous detector wrote it: no dimensions, no segment id."""
    return (
        f'{{"country": "DE", "ad_format": "{ad_format}", "window_start_ms": {start}, '
        f'"window_end_ms": {start + MIN}, "impressions": 2000, "clicks": {clicks}, "revenue_usd": 4.0, '
        f'"orphan_clicks": {orphans}, "event_counts": {{"impression": 2000, "click": {clicks}}}, "schema_version": 1}}'
    )


def test_a_version_1_window_record_is_read_as_its_country_ad_format_segment() -> None:
    windows = parse_jsonl([v1_line(0, "banner", 40)], MIN)
    assert [(seg, w.dimensions, w.clicks) for seg, w in windows] == [
        ("ad_format=banner,country=DE", {"country": "DE", "ad_format": "banner"}, 40)
    ]


def test_version_1_windows_roll_up_to_the_configured_parents() -> None:
    lines = [v1_line(t * MIN, f, 40 + i, orphans=1) for t in range(2) for i, f in enumerate(FORMATS)]
    notes: list[str] = []
    windows = parse_jsonl(lines, MIN, Hierarchy.parse("*;country;country,ad_format;app_id"), notes)
    by_segment: dict[str, list[SegmentWindow]] = {}
    for seg, w in windows:
        by_segment.setdefault(seg, []).append(w)
    assert sorted(by_segment) == [
        "*",
        "ad_format=banner,country=DE",
        "ad_format=interstitial,country=DE",
        "ad_format=native,country=DE",
        "ad_format=rewarded_video,country=DE",
        "country=DE",
    ]
    country = by_segment["country=DE"]
    assert [(w.window_start_ms, w.impressions, w.clicks, w.orphan_clicks) for w in country] == [
        (0, 8000, 166, 4),
        (MIN, 8000, 166, 4),
    ]
    assert country[0].revenue_usd == pytest.approx(16.0)
    assert country[0].event_counts == {"impression": 8000, "click": 166}
    assert by_segment["*"][0].dimensions == {} and by_segment["*"][0].clicks == 166
    assert notes and "app_id" in notes[0]  # a set the input cannot give is named, not invented


def test_a_country_wide_drop_over_four_formats_is_one_alert_with_the_formats_as_contributors(tmp_path: Path) -> None:
    lines = [v1_line(t * MIN, f, 40 if t < 80 else 10) for t in range(90) for f in FORMATS]
    source = tmp_path / "v1.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    assert main(["--input", str(source), "--segment-sets", "country;country,ad_format", "--json"], out) == 0
    alerts = [msgspec.json.decode(line, type=Alert) for line in out.getvalue().splitlines()]
    published = [a for a in alerts if not a.parent_segment_id]
    folded = [a for a in alerts if a.parent_segment_id]
    assert [(a.segment_id, a.alert_type, a.status) for a in published] == [("country=DE", "ctr_drop", "firing")]
    parent = published[0]
    assert sorted(c.dimensions["ad_format"] for c in parent.contributors) == sorted(FORMATS)
    assert all(c.alerting for c in parent.contributors) and parent.folded == 4
    assert sum(c.share for c in parent.contributors) == pytest.approx(1.0)
    assert {a.parent_segment_id for a in folded} == {"country=DE"} and len(folded) == 4
    table = io.StringIO()
    assert main(["--input", str(source), "--segment-sets", "country;country,ad_format"], table) == 0
    text = table.getvalue()
    assert "DE banner" in text and "folded into country=DE" in text
    assert "1 firing, 0 resolved published; 4 firing folded" in text


def test_one_format_breaking_alone_alerts_alone(tmp_path: Path) -> None:
    lines = [v1_line(t * MIN, f, 10 if (t >= 80 and f == "native") else 40) for t in range(90) for f in FORMATS]
    source = tmp_path / "v1.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = io.StringIO()
    assert main(["--input", str(source), "--segment-sets", "country;country,ad_format", "--json"], out) == 0
    firing = [msgspec.json.decode(line, type=Alert) for line in out.getvalue().splitlines()]
    firing = [a for a in firing if a.status == "firing" and a.alert_type == "ctr_drop"]
    assert [(a.segment_id, a.parent_segment_id) for a in firing][:1] == [("ad_format=native,country=DE", "")]


def test_each_event_feeds_every_configured_set() -> None:
    def event(i: int, app: str, fmt: str) -> AdEvent:
        return AdEvent(
            event_id=f"e{i}",
            event_time_ms=1000 + i,
            event_type="impression",
            country="US",
            ad_format=fmt,
            app_id=app,
            placement_id="p",
            campaign_id="c",
            user_hash="u",
            revenue_usd=0.001,
        )

    events = [event(0, "a1", "banner"), event(1, "a2", "banner"), event(2, "a1", "native")]
    windows = aggregate_events(events, MIN, Hierarchy.parse("*;country;country,ad_format;app_id"))
    got = {w.segment_id: w.impressions for w in windows}
    assert got == {
        "*": 3,
        "country=US": 3,
        "ad_format=banner,country=US": 2,
        "ad_format=native,country=US": 1,
        "app_id=a1": 2,
        "app_id=a2": 1,
    }


def test_backtest_reads_dimension_maps_from_the_migrated_clickhouse_table(tmp_path: Path) -> None:
    from adwatch.storage import make_clickhouse
    from adwatch_detector.migrations import Tables, migrate
    from adwatch_detector.sinks import window_row

    url = f"chdb://{tmp_path / 'ch'}"
    store = make_clickhouse(url)
    migrate(store, Tables("ad_metrics", "ad_alerts"))
    app = [
        SegmentWindow(
            window_start_ms=t * MIN,
            window_end_ms=(t + 1) * MIN,
            dimensions={"country": "US", "app_id": "com.example.game"},
            impressions=1000,
            clicks=50,
            revenue_usd=1.0,
        )
        for t in range(3)
    ]
    store.insert_json_rows("ad_metrics", [window_row(w.segment_id, w, 1) for w in app])
    windows = clickhouse_windows(url, "ad_metrics", None, Hierarchy.parse("country;app_id,country"))
    assert sorted({seg for seg, _ in windows}) == ["app_id=com.example.game,country=US", "country=US"]
    assert all(w.impressions == 1000 for _, w in windows)


def test_the_backtest_shows_an_outage_and_a_lasting_shift_with_their_lifecycle_states(tmp_path: Path) -> None:
    """Two segments over six hours: DE goes dark for 20 minutes and comes back (a traffic drop that
    recovers), FR settles at 40% of its traffic (a drop accepted as the new normal after 4 h)."""
    import numpy as np

    rng = np.random.default_rng(5)
    windows = []
    for i in range(360):
        for country, imps in (("DE", 800.0), ("FR", 600.0)):
            if country == "DE" and 120 <= i < 140:
                lam = imps * 0.02
            elif country == "FR" and i >= 60:
                lam = imps * 0.4
            else:
                lam = imps
            n = int(rng.poisson(lam))
            windows.append(
                SegmentWindow(
                    window_start_ms=i * MIN,
                    window_end_ms=(i + 1) * MIN,
                    country=country,
                    ad_format="banner",
                    impressions=n,
                    clicks=int(rng.binomial(n, 0.02)),
                    revenue_usd=n * 0.002,
                )
            )
    out = io.StringIO()
    assert main(["--input", write_jsonl(tmp_path / "w.jsonl", windows)], out) == 0
    text = out.getvalue()
    de = [line for line in text.splitlines() if "traffic_drop" in line and "DE banner" in line]
    fr = [line for line in text.splitlines() if "traffic_drop" in line and "FR banner" in line]
    assert any(" fired " in line for line in de) and any("recovered after 2" in line for line in de), de
    assert any("new normal after 4 h" in line and "🔁 New normal accepted" in line for line in fr), fr
    assert "published by alert type and lifecycle:" in text
    assert "  traffic_drop: 2 fired, 1 recovered, 1 new normal" in text
