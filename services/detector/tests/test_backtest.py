"""Backtest on small JSONL files (windows and raw events)."""

from __future__ import annotations

import io
from pathlib import Path

import msgspec
import pytest

from adwatch.contracts import AdEvent, Alert, SegmentWindow, encode
from adwatch_detector.backtest import aggregate_events, main

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
