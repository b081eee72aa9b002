"""Backtest: replay stored history through the rules and report which alerts would have fired.

    adwatch-detector backtest (--input FILE.jsonl | --clickhouse URL) [--rules rules.yaml]
        [--segment-sets 'country;country,ad_format'] [--json]

The JSONL file holds SegmentWindow records (schema version 2 with ``dimensions``, or version 1
with ``country`` and ``ad_format`` only: read as that segment set) or AdEvent records
(aggregated here to windows of ``window_ms``, each event feeding every configured set, as the
Spark job does). With --clickhouse, windows come from the detector's ``ad_metrics`` table.

Windows are rolled up to every configured segment set that can be derived from them: a set is
taken as it is when the input has windows of exactly that set, else summed (impressions, clicks,
revenue, orphans, event counts per window) from the input set with the fewest dimensions that
contains it (version-1 ``country,ad_format`` windows roll up to ``country`` and ``*``). A set no
input can give is skipped with a note on stderr.

The rules run per segment with the alert budget over the number of segments replayed (the
live count, as the job's census gives it), then the alerts of each window are folded as the
job folds them (drill-down: a parent's alert names its children, their alerts are folded into
it). The replay uses event time only: detected_at_ms is each window's end.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec

from adwatch.contracts import (
    AdEvent,
    Alert,
    ContractError,
    SegmentWindow,
    decode,
    duration_text,
    event_dimensions,
    parse_segment_id,
    segment_id,
)
from adwatch.errors import AdwatchError
from adwatch_detector.drilldown import Folder
from adwatch_detector.evidence import BandPoint, band_point
from adwatch_detector.hierarchy import Hierarchy, SegmentSet
from adwatch_detector.rules import RuleEngine, RuleSettings, SegmentState, detect_windows, load_rules
from adwatch_detector.rules.base import Check

DEFAULT_SEGMENT_SETS = "country,ad_format"
"""The detector's default (``ADWATCH_DETECTOR_SEGMENT_SETS``)."""


class BacktestError(AdwatchError):
    """History that cannot be replayed (unreadable file, bad record)."""


def _new_slot() -> dict[str, Any]:
    return {"imps": 0, "clicks": 0, "rev": 0.0, "orph": 0, "counts": defaultdict(int)}


def _to_window(dims: dict[str, str], start: int, window_ms: int, s: Mapping[str, Any]) -> SegmentWindow:
    return SegmentWindow(
        window_start_ms=start,
        window_end_ms=start + window_ms,
        dimensions=dims,
        segment_id=segment_id(dims),
        impressions=s["imps"],
        clicks=s["clicks"],
        revenue_usd=s["rev"],
        orphan_clicks=s["orph"],
        event_counts=dict(s["counts"]),
    )


def aggregate_events(
    events: Iterable[AdEvent], window_ms: int, hierarchy: Hierarchy | None = None
) -> list[SegmentWindow]:
    """Tumbling event-time windows per segment of every configured set (default: country,
    ad_format), as the Spark job builds them: each event feeds one segment of each set."""
    sets = (hierarchy or Hierarchy.parse(DEFAULT_SEGMENT_SETS)).sets
    acc: dict[tuple[tuple[tuple[str, str], ...], int], dict[str, Any]] = {}
    for e in events:
        start = e.event_time_ms // window_ms * window_ms
        dims = event_dimensions(e)
        for names in sets:
            if any(n not in dims for n in names):
                continue  # an event without the dimension feeds no segment of that set
            key = (tuple((n, dims[n]) for n in sorted(names)), start)
            slot = acc.get(key)
            if slot is None:
                slot = acc[key] = _new_slot()
            slot["counts"][e.event_type] += 1
            if e.event_type == "impression":
                slot["imps"] += 1
                slot["rev"] += e.revenue_usd
            elif e.event_type == "click":
                slot["clicks"] += 1
                slot["orph"] += e.impression_id is None
    return [
        _to_window(dict(pairs), start, window_ms, s)
        for (pairs, start), s in sorted(acc.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


def roll_up(
    windows: Iterable[SegmentWindow], hierarchy: Hierarchy, notes: list[str] | None = None
) -> list[SegmentWindow]:
    """The windows of every configured set that the input can give (see the module doc).

    Input windows of an exact configured set are kept as they are; a set without them is summed
    per window from the input set with the fewest dimensions that contains it (the most
    aggregated source: the job stores only tracked segments, so a finer one may lack the long
    tail). ``notes`` gets one line per set that cannot be derived.
    """
    by_set: dict[frozenset[str], list[SegmentWindow]] = defaultdict(list)
    for w in windows:
        by_set[frozenset(w.dimensions)].append(w)
    out: list[SegmentWindow] = []
    for names in hierarchy.sets:
        wanted = frozenset(names)
        if wanted in by_set:
            out.extend(by_set[wanted])
            continue
        sources = sorted((s for s in by_set if wanted < s), key=lambda s: (len(s), sorted(s)))
        if not sources:
            if notes is not None:
                have = "; ".join(sorted(",".join(sorted(s)) or "*" for s in by_set)) or "none"
                notes.append(f"segment set {','.join(names) or '*'!r} cannot be derived from the input's ({have})")
            continue
        out.extend(_sum_windows(by_set[sources[0]], names))
    return out


def _sum_windows(windows: Iterable[SegmentWindow], names: SegmentSet) -> list[SegmentWindow]:
    acc: dict[tuple[tuple[tuple[str, str], ...], int, int], dict[str, Any]] = {}
    for w in windows:
        key = (tuple((n, w.dimensions[n]) for n in sorted(names)), w.window_start_ms, w.window_end_ms)
        slot = acc.get(key)
        if slot is None:
            slot = acc[key] = _new_slot()
        slot["imps"] += w.impressions
        slot["clicks"] += w.clicks
        slot["rev"] += w.revenue_usd
        slot["orph"] += w.orphan_clicks
        for kind, n in w.event_counts.items():
            slot["counts"][kind] += n
    return [
        _to_window(dict(pairs), start, end - start, s)
        for (pairs, start, end), s in sorted(acc.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]


def run_backtest(
    windows: Iterable[tuple[str, SegmentWindow]],
    rules: RuleSettings,
    points: list[BandPoint] | None = None,
    *,
    live_segments: int | None = None,
    hierarchy: Hierarchy | None = None,
    drilldown: list[BandPoint] | None = None,
) -> list[Alert]:
    """Replay (segment, window) pairs per segment in time order; alerts sorted by window then segment.

    With ``points``, the evidence of every window of each (segment, alert type) that alerted
    is appended to it. ``live_segments``: the alert budget's segment count (None: the configured
    ``expected_segments``). With ``hierarchy`` and ``drilldown``, the evidence the drill-down
    needs is appended to ``drilldown``: each child's points at the windows where a direct parent
    fired an alert of that type (parents are replayed before their children for that).
    """
    engine = RuleEngine.build(rules).for_live_segments(live_segments)
    by_segment: dict[str, list[SegmentWindow]] = defaultdict(list)
    for segment, window in windows:
        by_segment[segment].append(window)
    dims = {seg: ws[0].dimensions for seg, ws in by_segment.items()}
    fired_at: dict[str, set[tuple[int, str]]] = defaultdict(set)  # segment -> (window, alert type) firing
    alerts: list[Alert] = []
    for segment in sorted(by_segment, key=lambda s: (len(dims[s]), s)):
        state: SegmentState | None = None
        seen: list[BandPoint] = []
        wanted: set[tuple[int, str]] = set()
        if hierarchy is not None and drilldown is not None:
            for parent in hierarchy.parents(dims[segment]):
                wanted |= fired_at.get(segment_id(parent), set())
        keep_all = points is not None

        def record(
            window: SegmentWindow,
            check: Check,
            segment: str = segment,
            seen: list[BandPoint] = seen,
            wanted: set[tuple[int, str]] = wanted,
            keep_all: bool = keep_all,
        ) -> None:
            if keep_all or (window.window_start_ms, check.alert_type) in wanted:
                seen.append(band_point(segment, window, check))

        on_check = record if points is not None or wanted else None
        fired: set[str] = set()
        for window in sorted(by_segment[segment], key=lambda w: w.window_start_ms):
            state, new = detect_windows(state, [window], engine, window.window_end_ms, on_check)
            alerts.extend(new)
            fired.update(a.alert_type for a in new)
            fired_at[segment].update((a.window_start_ms, a.alert_type) for a in new if a.status == "firing")
        if points is not None:
            points.extend(p for p in seen if p.alert_type in fired)
        if drilldown is not None and wanted:
            drilldown.extend(p for p in seen if (p.window_start_ms, p.alert_type) in wanted)
    alerts.sort(key=lambda a: (a.window_start_ms, a.fingerprint, a.status))
    return alerts


def fold_alerts(
    alerts: Sequence[Alert],
    bands: Iterable[BandPoint],
    hierarchy: Hierarchy,
    dimensions: Mapping[str, dict[str, str]],
    top: int = 5,
) -> tuple[list[Alert], list[Alert]]:
    """(published, folded): the alerts of each window folded in window order, as the job's sink
    folds a micro-batch (a parent's alert gets its drill-down; its children's are folded into it)."""
    folder = Folder(hierarchy, top)
    by_window: dict[int, list[Alert]] = defaultdict(list)
    for a in alerts:
        by_window[a.window_start_ms].append(a)
    bands_by_window: dict[int, list[BandPoint]] = defaultdict(list)
    for b in bands:
        bands_by_window[b.window_start_ms].append(b)
    published: list[Alert] = []
    folded: list[Alert] = []
    for start in sorted(by_window):
        pub, fold = folder.fold(by_window[start], bands_by_window.get(start, []), dimensions)
        published += pub
        folded += fold
    return published, folded


def parse_jsonl(
    lines: Iterable[str], window_ms: int, hierarchy: Hierarchy | None = None, notes: list[str] | None = None
) -> list[tuple[str, SegmentWindow]]:
    """SegmentWindow or AdEvent lines (decided per line by the presence of ``event_type``), as
    the windows of the configured sets (default: country,ad_format)."""
    hierarchy = hierarchy or Hierarchy.parse(DEFAULT_SEGMENT_SETS)
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
    rolled = roll_up(windows, hierarchy, notes) if windows else []
    rolled += aggregate_events(events, window_ms, hierarchy)
    return [(w.segment_key, w) for w in rolled]


def clickhouse_windows(
    url: str, table: str, since_ms: int | None, hierarchy: Hierarchy | None = None, notes: list[str] | None = None
) -> list[tuple[str, SegmentWindow]]:
    """The windows of ``table`` (the job's ``ad_metrics``), rolled up to the configured sets.

    A row's dimensions are its ``dimensions`` map (schema migration 5), else read from its
    segment id (a version-1 ``US|banner`` row included)."""
    from adwatch.storage import make_clickhouse

    store = make_clickhouse(url)
    columns = {str(row[0]) for row in store.query(f"DESCRIBE TABLE {table}")}
    dims_column = "dimensions" if "dimensions" in columns else "map()"
    where = f"WHERE window_start_ms >= {int(since_ms)}" if since_ms is not None else ""
    rows = store.query(
        f"SELECT segment, {dims_column}, window_start_ms, window_end_ms, impressions, clicks, revenue_usd, "
        f"orphan_clicks, requests, conversions FROM {table} FINAL {where} ORDER BY segment, window_start_ms"
    )
    windows = []
    for seg, dims, start, end, imps, clicks, rev, orph, req, conv in rows:
        dimensions = {str(k): str(v) for k, v in dict(dims or {}).items()}
        if not dimensions:
            try:
                dimensions = parse_segment_id(str(seg))
            except ValueError:
                raise BacktestError(f"{table}: segment {seg!r} has no dimensions to replay it by") from None
        counts = {"impression": int(imps), "click": int(clicks), "request": int(req), "conversion": int(conv)}
        windows.append(
            SegmentWindow(
                window_start_ms=int(start),
                window_end_ms=int(end),
                dimensions=dimensions,
                segment_id=segment_id(dimensions),
                impressions=int(imps),
                clicks=int(clicks),
                revenue_usd=float(rev),
                orphan_clicks=int(orph),
                event_counts=counts,
            )
        )
    rolled = roll_up(windows, hierarchy or Hierarchy.parse(DEFAULT_SEGMENT_SETS), notes)
    return [(w.segment_key, w) for w in rolled]


def _state(alert: Alert) -> str:
    if alert.parent_segment_id:
        return f"folded into {alert.parent_segment_id}"
    if alert.contributors:
        return f"published, {len(alert.contributors)} contributors, {alert.folded} folded"
    return "published"


def lifecycle_state(alert: Alert) -> str:
    """Where the alert stands in its episode: ``fired``, ``escalated low->high``, ``recovered after
    23 min``, ``new normal after 4 h``."""
    if alert.status == "firing":
        return f"escalated {alert.previous_severity}->{alert.severity}" if alert.previous_severity else "fired"
    how = "new normal" if alert.resolution == "new_normal" else (alert.resolution or "resolved")
    return f"{how} after {duration_text(alert.duration_ms)}" if alert.duration_ms else how


def lifecycle_summary(alerts: Sequence[Alert]) -> list[str]:
    """Per alert type: how many episodes fired, escalated, recovered, became the new normal."""
    tally: dict[str, dict[str, int]] = {}
    for a in alerts:
        state = lifecycle_state(a).split(" after ")[0].split(" ")[0]
        counts = tally.setdefault(a.alert_type, {})
        counts[state] = counts.get(state, 0) + 1
    order = ("fired", "escalated", "recovered", "new", "resolved")
    names = {"new": "new normal"}
    return [
        f"  {alert_type}: " + ", ".join(f"{counts[k]} {names.get(k, k)}" for k in order if k in counts)
        for alert_type, counts in sorted(tally.items())
    ]


def format_table(alerts: Sequence[Alert], folded: Sequence[Alert] = ()) -> str:
    """Published alerts (and, when given, the folded ones, marked) by window; the counts last, with
    each alert type's lifecycle states."""
    rows = sorted([*alerts, *folded], key=lambda a: (a.window_start_ms, len(a.dimensions), a.fingerprint, a.status))
    header = (
        f"{'window_start_ms':>15}  {'status':<8} {'severity':<8} {'alert_type':<24} {'where':<30} {'z':>6}  "
        f"{'lifecycle':<26} {'state':<40} message"
    )
    lines = [header]
    for a in rows:
        lines.append(
            f"{a.window_start_ms:>15}  {a.status:<8} {a.severity:<8} {a.alert_type:<24} "
            f"{a.where:<30} {a.z_score:>6.1f}  {lifecycle_state(a):<26} {_state(a):<40} {a.message}"
        )
        for c in a.contributors:
            lines.append(
                f"{'':>15}    <- {segment_id(c.dimensions)}: share {c.share:.0%}, {c.expected:.4g} -> {c.current:.4g}"
                f"{' (alerting)' if c.alerting else ''}"
            )
    firing = sum(a.status == "firing" for a in alerts)
    n_folded = sum(a.status == "firing" for a in folded)
    lines.append(
        f"{firing} firing, {len(alerts) - firing} resolved published; "
        f"{n_folded} firing folded into a parent's alert ({len(folded) - n_folded} resolved)"
    )
    if alerts:
        lines += ["published by alert type and lifecycle:", *lifecycle_summary(alerts)]
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
    parser.add_argument(
        "--segment-sets",
        default=DEFAULT_SEGMENT_SETS,
        help="watched segment sets, ';'-separated, as ADWATCH_DETECTOR_SEGMENT_SETS "
        f"(default {DEFAULT_SEGMENT_SETS!r}; e.g. '*;country;country,ad_format')",
    )
    parser.add_argument("--drilldown-top", type=int, default=5, help="child segments named in a parent's alert")
    parser.add_argument("--json", action="store_true", help="one Alert JSON per line instead of a table")
    parser.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="also write DIR/report.html: each alert's metric against its band (needs the "
        "'report' extra: pip install 'adwatch-detector[report]')",
    )
    args = parser.parse_args(argv)
    notes: list[str] = []
    try:
        hierarchy = Hierarchy.parse(args.segment_sets)
        rules = load_rules(args.rules)
        if args.rule_set:
            rules = rules.model_copy(update={"rule_set": args.rule_set})
        if args.input:
            if args.input == "-":
                windows = parse_jsonl(sys.stdin, rules.window_ms, hierarchy, notes)
            else:
                with Path(args.input).open(encoding="utf-8") as handle:
                    windows = parse_jsonl(handle, rules.window_ms, hierarchy, notes)
        else:
            windows = clickhouse_windows(args.clickhouse, args.table, args.since_ms, hierarchy, notes)
    except OSError as exc:
        print(f"backtest: cannot read {args.input}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except AdwatchError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"backtest: {note}", file=sys.stderr)
    points: list[BandPoint] | None = [] if args.report else None
    drilldown: list[BandPoint] = []
    segments = {seg for seg, _ in windows}
    alerts = run_backtest(
        windows, rules, points, live_segments=len(segments) or None, hierarchy=hierarchy, drilldown=drilldown
    )
    dimensions = {w.segment_id: w.dimensions for _, w in windows}
    published, folded = fold_alerts(alerts, drilldown, hierarchy, dimensions, args.drilldown_top)
    print(
        f"backtest: {len(segments)} segments in {len(hierarchy.sets)} sets "
        f"({'; '.join(','.join(s) or '*' for s in hierarchy.sets)}); {len(published)} alerts published, "
        f"{len(folded)} folded into a parent's",
        file=sys.stderr,
    )
    if args.report:
        from adwatch_detector.report import ReportError, write_report

        source = args.input or args.clickhouse.split("@")[-1]  # no credentials in the page
        try:
            path = write_report(
                Path(args.report),
                published,
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
        for alert in sorted([*published, *folded], key=lambda a: (a.window_start_ms, len(a.dimensions))):
            stream.write(msgspec.json.encode(alert).decode() + "\n")
    else:
        stream.write(format_table(published, folded) + "\n")
    return 0
