"""The HTML report of what fired: pairing, summary, anchors, and the page in headless Chromium."""

from __future__ import annotations

import io
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from adwatch.contracts import Alert, SegmentWindow, encode, segment_key
from adwatch_detector.backtest import main, run_backtest
from adwatch_detector.evidence import BandPoint
from adwatch_detector.report import (
    ReportError,
    drill_summary,
    drilldown,
    incidents,
    render_report,
    summary,
    windows_by_start,
    write_report,
)
from adwatch_detector.rules import load_rules
from adwatch_dev.browser import Chromium, chromium_binary
from adwatch_dev.simulate import sample_counts, to_windows
from adwatch_dev.testing import missing_tool

START = 1_767_225_600_000  # 2026-01-01 00:00 UTC
T = 30 * 60  # 30 hours of 1-minute windows: two UTC days


@cache
def history() -> tuple[SegmentWindow, ...]:
    """Three segments with one incident each: a traffic flood, a CTR drop, an eCPM drop."""
    rng = np.random.default_rng(7)
    out: list[SegmentWindow] = []
    for country, fmt, imps, ctr, ecpm, flood, ctr_cut, ecpm_cut in (
        ("US", "banner", 900, 0.02, 1.5, (600, 640), None, None),
        ("DE", "interstitial", 400, 0.05, 6.0, None, (1500, 1540), None),
        ("BR", "rewarded_video", 300, 0.01, 8.0, None, None, (1700, 1750)),
    ):
        im, cr, ec = np.full(T, float(imps)), np.full(T, ctr), np.full(T, ecpm)
        if flood:
            im[slice(*flood)] *= 3
        if ctr_cut:
            cr[slice(*ctr_cut)] *= 0.4
        if ecpm_cut:
            ec[slice(*ecpm_cut)] *= 0.45
        out += to_windows(country, fmt, START, *sample_counts(rng, im, cr, ec))
    return tuple(out)


@cache
def replay() -> tuple[list[Alert], list[BandPoint]]:
    points: list[BandPoint] = []
    alerts = run_backtest([(w.segment_key, w) for w in history()], load_rules(None), points)
    return alerts, points


def test_the_replay_records_each_alerting_segments_band_and_nothing_else() -> None:
    alerts, points = replay()
    assert {(a.alert_type, a.status) for a in alerts} >= {
        ("traffic_spike", "firing"),
        ("ctr_drop", "firing"),
        ("ecpm_drop", "firing"),
    }
    alerted = {(a.segment_id, a.alert_type) for a in alerts}
    assert {(p.segment, p.alert_type) for p in points} == alerted
    flood = [p for p in points if p.alert_type == "traffic_spike"]
    assert len(flood) == len({p.window_start_ms for p in flood}) > 1000  # one point per window
    assert all(p.band_low <= p.expected <= p.band_high for p in flood)


def test_a_firing_alert_is_paired_with_the_resolution_that_follows() -> None:
    alerts, _ = replay()
    found = incidents(alerts)
    assert len(found) == sum(a.status == "firing" for a in alerts)
    for inc in found:
        assert inc.firing is not None
        if inc.resolved is not None:
            assert inc.resolved.fingerprint == inc.firing.fingerprint
            assert inc.resolved.window_start_ms > inc.firing.window_start_ms


def test_summary_counts_alerts_per_type_and_per_day() -> None:
    alerts, _ = replay()
    per_type, per_day = summary(alerts)
    assert sum(c["firing"] + c["resolved"] for c in per_type.values()) == len(alerts)
    assert set(per_day) == {"2026-01-01", "2026-01-02"}
    assert per_day["2026-01-01"]["traffic_spike"] == 1


def test_the_page_is_self_contained_with_an_anchor_and_a_chart_per_alert() -> None:
    alerts, points = replay()
    page = render_report(alerts, points, title="test")
    import plotly.offline

    head = page[: page.index("</head>")]
    assert plotly.offline.get_plotlyjs()[:500] in head  # plotly.js inlined: the page works offline
    assert head.count("<script") == 1 and "<script src" not in page[page.index("</head>") :]
    for alert in alerts:
        assert f"id='{alert.alert_id}'" in page
    assert page.count("class='incident") == len(incidents(alerts))
    assert page.count('id="chart-') == len(incidents(alerts))


def test_the_drill_down_tells_a_country_wide_drop_from_a_segment_of_its_own() -> None:
    """DE's CTR falls in all four formats at once; only US banner's falls in the US. DE banner's
    drill-down lists its three DE siblings as fallen and firing too; US banner's lists calm ones."""
    rng = np.random.default_rng(3)
    n, drop = 8 * 60, (360, 400)
    windows: list[SegmentWindow] = []
    for country in ("DE", "US", "FR"):
        for fmt in ("banner", "interstitial", "rewarded_video", "native"):
            im, cr, ec = np.full(n, 800.0), np.full(n, 0.04), np.full(n, 2.0)
            if country == "DE" or (country, fmt) == ("US", "banner"):
                cr[slice(*drop)] *= 0.3
            windows += to_windows(country, fmt, START, *sample_counts(rng, im, cr, ec))
    alerts = run_backtest([(w.segment_key, w) for w in windows], load_rules(None))
    by_start = windows_by_start(windows)

    def first_drop(segment: tuple[str, str]) -> Alert:
        return next(
            a
            for a in alerts
            if (a.country, a.ad_format) == segment and a.alert_type == "ctr_drop" and a.status == "firing"
        )

    de = drilldown(first_drop(("DE", "banner")), by_start, alerts, 60_000)
    de_country = [r for r in de if r.shared == "country"]
    assert {r.segment for r in de_country} == {
        segment_key("DE", f) for f in ("interstitial", "rewarded_video", "native")
    }
    assert all(r.change_pct < -50 and r.fired for r in de_country)
    assert {r.segment for r in de if r.shared == "ad_format"} == {
        segment_key("US", "banner"),
        segment_key("FR", "banner"),
    }
    assert "3 of 3 other segments of DE fired it too" in drill_summary(first_drop(("DE", "banner")), de)

    us = drilldown(first_drop(("US", "banner")), by_start, alerts, 60_000)
    assert all(abs(r.change_pct) < 25 and not r.fired for r in us if r.shared == "country")
    assert next(r.segment for r in us if r.shared == "ad_format") == segment_key("DE", "banner")  # largest first
    page = render_report(alerts, [], title="drill", windows=windows)
    assert page.count("class='drilldown'") == len([i for i in incidents(alerts) if i.firing])


def test_a_missing_plotly_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(ReportError, match=r"adwatch-detector\[report\]"):
        write_report(tmp_path, [], [], title="x")


def test_backtest_cli_writes_the_report(tmp_path: Path) -> None:
    source = tmp_path / "windows.jsonl"
    source.write_bytes(b"\n".join(encode(w) for w in history()) + b"\n")
    assert main(["--input", str(source), "--report", str(tmp_path / "out")], io.StringIO()) == 0
    assert (tmp_path / "out" / "report.html").stat().st_size > 1_000_000


def test_the_report_loads_in_headless_chromium_with_every_chart_drawn(tmp_path: Path) -> None:
    if chromium_binary() is None:
        missing_tool("no chromium (scripts/install_chromium.sh installs it)")
    alerts, points = replay()
    path = write_report(tmp_path, alerts, points, title="browser test")
    firing = next(a for a in alerts if a.status == "firing" and a.alert_type == "ctr_drop")
    with Chromium() as browser:
        page = browser.page()
        page.open(f"{path.resolve().as_uri()}#{firing.alert_id}")
        drawn = page.evaluate("""Array.from(document.querySelectorAll('section.incident')).map(
            s => s.querySelectorAll('.js-plotly-plot .main-svg').length > 0)""")
        lines = page.evaluate("document.querySelectorAll('section.incident .scatterlayer .trace').length")
        target = page.evaluate("document.querySelector(':target') && document.querySelector(':target').id")
        shot = page.screenshot(tmp_path / "report.png", full_page=True, max_height=2400)
    assert page.errors == []
    assert drawn == [True] * len(incidents(alerts))  # every alert has its chart, rendered
    assert lines >= 4 * len(drawn)  # band, expected, metric, markers
    assert target == firing.alert_id  # a notification's link lands on its alert
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
