"""Backtest: replay stored history through the rules and report which alerts would have fired.

    adwatch-detector backtest (--input FILE.jsonl | --clickhouse URL) [--rules rules.yaml] [--json]

The JSONL file holds SegmentWindow records or AdEvent records (aggregated here to windows of
``window_ms``). With --clickhouse, windows come from the detector's ``ad_metrics`` table.
The replay uses event time only: detected_at_ms is each window's end.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

import msgspec

from adwatch.contracts import AdEvent, AdFormat, Alert, ContractError, SegmentWindow, decode
from adwatch.errors import AdwatchError
from adwatch_detector.evidence import BandPoint, band_point
from adwatch_detector.rules import RuleEngine, RuleSettings, SegmentState, detect_windows, load_rules
from adwatch_detector.rules.base import Check


class BacktestError(AdwatchError):
    """History that cannot be replayed (unreadable file, bad record)."""


def aggregate_events(events: Iterable[AdEvent], window_ms: int) -> list[SegmentWindow]:
    """Tumbling event-time windows per country|ad_format, as the Spark job builds them."""
    acc: dict[tuple[str, str, int], dict[str, Any]] = {}
    for e in events:
        start = e.event_time_ms // window_ms * window_ms
        slot = acc.setdefault(
            (e.country, e.ad_format, start), {"imps": 0, "clicks": 0, "rev": 0.0, "orph": 0, "counts": defaultdict(int)}
        )
        slot["counts"][e.event_type] += 1
        if e.event_type == "impression":
            slot["imps"] += 1
            slot["rev"] += e.revenue_usd
        elif e.event_type == "click":
            slot["clicks"] += 1
            slot["orph"] += e.impression_id is None
    return [
        SegmentWindow(
            window_start_ms=start,
            window_end_ms=start + window_ms,
            country=country,
            ad_format=cast(AdFormat, fmt),
            impressions=s["imps"],
            clicks=s["clicks"],
            revenue_usd=s["rev"],
            orphan_clicks=s["orph"],
            event_counts=dict(s["counts"]),
        )
        for (country, fmt, start), s in sorted(acc.items(), key=lambda kv: kv[0][2])
    ]


def run_backtest(
    windows: Iterable[tuple[str, SegmentWindow]], rules: RuleSettings, points: list[BandPoint] | None = None
) -> list[Alert]:
    """Replay (segment, window) pairs per segment in time order; alerts sorted by window then segment.

    With ``points``, the evidence of every window of each (segment, alert type) that alerted
    is appended to it.
    """
    engine = RuleEngine.build(rules)
    by_segment: dict[str, list[SegmentWindow]] = defaultdict(list)
    for segment, window in windows:
        by_segment[segment].append(window)
    alerts: list[Alert] = []
    for segment in sorted(by_segment):
        state: SegmentState | None = None
        seen: list[BandPoint] = []

        def record(window: SegmentWindow, check: Check, segment: str = segment, seen: list[BandPoint] = seen) -> None:
            seen.append(band_point(segment, window, check))

        on_check = record if points is not None else None
        fired: set[str] = set()
        for window in sorted(by_segment[segment], key=lambda w: w.window_start_ms):
            state, new = detect_windows(state, [window], engine, window.window_end_ms, on_check)
            alerts.extend(new)
            fired.update(a.alert_type for a in new)
        if points is not None:
            points.extend(p for p in seen if p.alert_type in fired)
    alerts.sort(key=lambda a: (a.window_start_ms, a.fingerprint, a.status))
    return alerts


def parse_jsonl(lines: Iterable[str], window_ms: int) -> list[tuple[str, SegmentWindow]]:
    """SegmentWindow or AdEvent lines (decided per line by the presence of ``event_type``)."""
    windows: list[SegmentWindow] = []
    events: list[AdEvent] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            if '"event_type"' in line:
                events.append(decode(line, AdEvent))
            else:
                windows.append(decode(line, SegmentWindow))
        except ContractError as exc:
            raise BacktestError(f"line {number}: {exc}") from None
    windows += aggregate_events(events, window_ms)
    return [(w.segment_key, w) for w in windows]


def clickhouse_windows(url: str, table: str, since_ms: int | None) -> list[tuple[str, SegmentWindow]]:
    from adwatch.storage import make_clickhouse

    where = f"WHERE window_start_ms >= {int(since_ms)}" if since_ms is not None else ""
    rows = make_clickhouse(url).query(
        f"SELECT segment, country, ad_format, window_start_ms, window_end_ms, impressions, clicks, revenue_usd, "
        f"orphan_clicks, requests, conversions FROM {table} FINAL {where} ORDER BY segment, window_start_ms"
    )
    out = []
    for seg, country, fmt, start, end, imps, clicks, rev, orph, req, conv in rows:
        counts = {"impression": int(imps), "click": int(clicks), "request": int(req), "conversion": int(conv)}
        out.append(
            (
                str(seg),
                SegmentWindow(
                    window_start_ms=int(start),
                    window_end_ms=int(end),
                    country=country,
                    ad_format=cast(AdFormat, fmt),
                    impressions=int(imps),
                    clicks=int(clicks),
                    revenue_usd=float(rev),
                    orphan_clicks=int(orph),
                    event_counts=counts,
                ),
            )
        )
    return out


def format_table(alerts: Sequence[Alert]) -> str:
    header = (
        f"{'window_start_ms':>15}  {'status':<8} {'severity':<8} {'alert_type':<24} {'segment':<22} {'z':>6}  message"
    )
    lines = [header]
    for a in alerts:
        lines.append(
            f"{a.window_start_ms:>15}  {a.status:<8} {a.severity:<8} {a.alert_type:<24} "
            f"{a.country + '|' + a.ad_format:<22} {a.z_score:>6.1f}  {a.message}"
        )
    firing = sum(a.status == "firing" for a in alerts)
    lines.append(f"{firing} firing, {len(alerts) - firing} resolved")
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """CLI entry (wired as ``adwatch-detector backtest``); returns the exit code."""
    stream = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="adwatch-detector backtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="JSONL of SegmentWindow or AdEvent records ('-' = stdin)")
    source.add_argument("--clickhouse", help="ClickHouse URL (chdb://dir or http(s)://...)")
    parser.add_argument("--table", default="ad_metrics", help="ClickHouse table of windows")
    parser.add_argument("--since-ms", type=int, default=None, help="only windows from this epoch ms")
    parser.add_argument("--rules", default=None, help="rules YAML (default: built-in defaults)")
    parser.add_argument("--rule-set", choices=["default", "classic"], default=None, help="override rule_set")
    parser.add_argument("--json", action="store_true", help="one Alert JSON per line instead of a table")
    parser.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="also write DIR/report.html: each alert's metric against its band (needs the "
        "'report' extra: pip install 'adwatch-detector[report]')",
    )
    args = parser.parse_args(argv)
    try:
        rules = load_rules(args.rules)
        if args.rule_set:
            rules = rules.model_copy(update={"rule_set": args.rule_set})
        if args.input:
            if args.input == "-":
                windows = parse_jsonl(sys.stdin, rules.window_ms)
            else:
                with Path(args.input).open(encoding="utf-8") as handle:
                    windows = parse_jsonl(handle, rules.window_ms)
        else:
            windows = clickhouse_windows(args.clickhouse, args.table, args.since_ms)
    except OSError as exc:
        print(f"backtest: cannot read {args.input}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except AdwatchError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2
    points: list[BandPoint] | None = [] if args.report else None
    alerts = run_backtest(windows, rules, points)
    if args.report:
        from adwatch_detector.report import ReportError, write_report

        source = args.input or args.clickhouse.split("@")[-1]  # no credentials in the page
        try:
            path = write_report(
                Path(args.report),
                alerts,
                points or [],
                title=f"Backtest of {source}",
                window_ms=rules.window_ms,
                windows=[w for _, w in windows],
            )
        except ReportError as exc:
            print(f"backtest: {exc}", file=sys.stderr)
            return 2
        print(f"backtest: report written to {path}", file=sys.stderr)
    if args.json:
        for alert in alerts:
            stream.write(msgspec.json.encode(alert).decode() + "\n")
    else:
        stream.write(format_table(alerts) + "\n")
    return 0
