"""A self-contained HTML report of what fired: ``adwatch-detector backtest --report DIR``.

Reads only the backtest's output (alerts and :class:`~adwatch_detector.backtest.BandPoint`
records), never rule internals. Per incident (a firing alert and the resolution that
followed it): the segment's metric against its expected value and band, the windows that
fired and resolved, the evidence (volume, p, z) and the drill-down (the same metric in the
segments that share a dimension with it: is it this segment, or its whole country or format?);
first a summary of the alerts per type and per day. plotly.js is inlined (the page works offline); each alert id is an anchor, so
notifications can link to ``report.html#<alert_id>``. Needs the ``report`` extra (plotly).
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adwatch.contracts import Alert, SegmentWindow, alert_title, format_value
from adwatch.errors import AdwatchError

if TYPE_CHECKING:
    from adwatch_detector.evidence import BandPoint

REPORT_FILE = "report.html"
BEFORE_WINDOWS = 45  # windows drawn before the firing one
AFTER_WINDOWS = 15  # and after the resolving one (or the firing one while still open)
REFERENCE_WINDOWS = 60  # the drill-down compares the firing window with the hour before it
DRILL_ROWS = 8  # related segments listed per incident, largest change first


class ReportError(AdwatchError):
    """The report cannot be written (plotly missing, unwritable folder)."""


@dataclass(frozen=True)
class Incident:
    """A firing alert and the resolution of the same fingerprint that followed it (if any)."""

    firing: Alert | None
    resolved: Alert | None

    @property
    def first(self) -> Alert:
        alert = self.firing or self.resolved
        assert alert is not None
        return alert

    @property
    def segment(self) -> str:
        return self.first.segment_id


def incidents(alerts: Sequence[Alert]) -> list[Incident]:
    """Pair each firing alert with the next resolved alert of its fingerprint, in window order."""
    out: list[Incident] = []
    open_by_fp: dict[str, int] = {}
    for alert in sorted(alerts, key=lambda a: (a.window_start_ms, a.status != "firing")):
        if alert.status == "firing":
            open_by_fp[alert.fingerprint] = len(out)
            out.append(Incident(alert, None))
        elif alert.fingerprint in open_by_fp:
            i = open_by_fp.pop(alert.fingerprint)
            out[i] = Incident(out[i].firing, alert)
        else:  # resolved whose firing lies before the replayed range
            out.append(Incident(None, alert))
    return out


def summary(alerts: Sequence[Alert]) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """Alerts per type ({type: {status: n}}) and per UTC day ({day: {type: n}}, firing only)."""
    per_type: dict[str, Counter[str]] = defaultdict(Counter)
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for a in alerts:
        per_type[a.alert_type][a.status] += 1
        if a.status == "firing":
            per_day[_day(a.window_start_ms)][a.alert_type] += 1
    return dict(sorted(per_type.items())), dict(sorted(per_day.items()))


def incident_points(incident: Incident, points: Sequence[BandPoint], window_ms: int) -> list[BandPoint]:
    """The band points of the incident's segment and alert type around it, in time order."""
    first = incident.first
    start = (incident.firing or first).window_start_ms - BEFORE_WINDOWS * window_ms
    end = (incident.resolved or incident.firing or first).window_start_ms + AFTER_WINDOWS * window_ms
    return sorted(
        (
            p
            for p in points
            if p.segment == incident.segment and p.alert_type == first.alert_type and start <= p.window_start_ms <= end
        ),
        key=lambda p: p.window_start_ms,
    )


@dataclass(frozen=True)
class DrillRow:
    """The alert's metric in one related segment at the firing window, beside the hour before it."""

    segment: str
    shared: str  # "country" or "ad_format": the dimension it shares with the alerting segment
    current: float
    before: float
    fired: bool  # the same alert type fired on it within two windows of this one

    @property
    def change_pct(self) -> float:
        return 100.0 * (self.current - self.before) / self.before if self.before else 0.0


def metric_value(window: SegmentWindow, metric: str) -> float:
    if metric == "ctr":
        return window.ctr
    if metric == "ecpm":
        return window.ecpm
    if metric == "orphan_clicks":
        return float(window.orphan_clicks)
    return float(window.impressions)


def windows_by_start(windows: Sequence[SegmentWindow]) -> dict[int, list[SegmentWindow]]:
    """Index the replayed windows by start, once per report (the drill-down looks up 61 starts)."""
    index: dict[int, list[SegmentWindow]] = defaultdict(list)
    for w in windows:
        index[w.window_start_ms].append(w)
    return index


def drilldown(
    alert: Alert, by_start: Mapping[int, Sequence[SegmentWindow]], alerts: Sequence[Alert], window_ms: int
) -> list[DrillRow]:
    """The segments sharing the alert's country or ad format: the alert's metric at its window
    against their own mean over the hour before, and whether the same alert fired on them.

    A problem every sibling shows lives in the parent (the country, the format); one only this
    segment shows is its own. Per shared dimension, largest change first; DRILL_ROWS in all.
    """
    at = alert.window_start_ms
    now: dict[str, float] = {}
    history: dict[str, list[float]] = defaultdict(list)
    shared: dict[str, str] = {}
    for k in range(REFERENCE_WINDOWS + 1):
        start = at - k * window_ms
        for w in by_start.get(start, ()):
            if (w.country, w.ad_format) == (alert.country, alert.ad_format):
                continue
            if w.country != alert.country and w.ad_format != alert.ad_format:
                continue
            shared[w.segment_key] = "country" if w.country == alert.country else "ad_format"
            if start == at:
                now[w.segment_key] = metric_value(w, alert.metric)
            else:
                history[w.segment_key].append(metric_value(w, alert.metric))
    fired = {
        a.segment_id
        for a in alerts
        if a.status == "firing" and a.alert_type == alert.alert_type and abs(a.window_start_ms - at) <= 2 * window_ms
    }
    rows = sorted(
        (
            DrillRow(seg, shared[seg], current, sum(history[seg]) / len(history[seg]), seg in fired)
            for seg, current in now.items()
            if history[seg]
        ),
        key=lambda r: (-abs(r.change_pct), r.segment),
    )
    by_country = [r for r in rows if r.shared == "country"]
    by_format = [r for r in rows if r.shared == "ad_format"]
    n_country = min(len(by_country), max(DRILL_ROWS // 2, DRILL_ROWS - len(by_format)))
    return by_country[:n_country] + by_format[: DRILL_ROWS - n_country]


def drill_summary(alert: Alert, rows: Sequence[DrillRow]) -> str:
    """One sentence: how many siblings per shared dimension fired the same alert."""
    parts = []
    for dim, name in (("country", alert.country), ("ad_format", alert.ad_format)):
        related = [r for r in rows if r.shared == dim]
        if related:
            fired = sum(r.fired for r in related)
            parts.append(f"{fired} of {len(related)} other segments of {name} fired it too")
    return "; ".join(parts) + "." if parts else ""


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise ReportError(
            "the HTML report needs plotly: install the report extra, pip install 'adwatch-detector[report]'"
        ) from None
    return go


def _scale(metric: str) -> float:
    return 100.0 if metric == "ctr" else 1.0  # CTR drawn in percent


def incident_figure(incident: Incident, points: Sequence[BandPoint]) -> Any:
    """The metric (line), its expected value (dashed) and band (shaded), fired/resolved windows marked."""
    go = _plotly()
    first = incident.first
    k = _scale(first.metric)
    fig = go.Figure()
    if points:
        x = [_ts(p.window_start_ms) for p in points]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[p.band_high * k for p in points],
                mode="lines",
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[p.band_low * k for p in points],
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor="rgba(46,134,222,0.18)",
                name="expected band",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[p.expected * k for p in points],
                mode="lines",
                name="expected",
                line={"color": "#2e86de", "dash": "dash", "width": 1.5},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[p.current * k for p in points],
                mode="lines+markers",
                name=first.metric,
                line={"color": "#222", "width": 2},
                marker={"size": 4},
                customdata=[p.volume for p in points],
                hovertemplate="%{y:.3f}<br>volume %{customdata}<extra></extra>",
            )
        )
    for alert, colour, symbol in ((incident.firing, "#d00000", "x"), (incident.resolved, "#2eb67d", "circle")):
        if alert is None:
            continue
        fig.add_trace(
            go.Scatter(
                x=[_ts(alert.window_start_ms)],
                y=[alert.current * k],
                mode="markers",
                name=alert.status,
                marker={"color": colour, "size": 13, "symbol": symbol, "line": {"width": 2, "color": colour}},
                hovertemplate=f"{alert.status}: %{{y:.3f}} (expected {alert.expected * k:.3f})<extra></extra>",
            )
        )
    if incident.firing is not None:
        end = incident.resolved.window_end_ms if incident.resolved else incident.firing.window_end_ms
        fig.add_vrect(
            x0=_ts(incident.firing.window_start_ms),
            x1=_ts(end),
            fillcolor="#d00000",
            opacity=0.07,
            line_width=0,
            annotation_text="firing",
            annotation_position="top left",
        )
    unit = " (%)" if first.metric == "ctr" else ""
    fig.update_layout(
        height=340,
        margin={"l": 60, "r": 20, "t": 30, "b": 40},
        template="plotly_white",
        yaxis_title=f"{first.metric}{unit}",
        legend={"orientation": "h", "y": -0.18},
        title={"text": f"{first.country} {first.ad_format} · {first.metric}", "x": 0.01},
    )
    return fig


def summary_figure(per_day: dict[str, Counter[str]]) -> Any:
    go = _plotly()
    types = sorted({t for counts in per_day.values() for t in counts})
    fig = go.Figure([go.Bar(name=t, x=list(per_day), y=[per_day[d][t] for d in per_day]) for t in types])
    fig.update_layout(
        barmode="stack",
        height=260,
        margin={"l": 40, "r": 20, "t": 30, "b": 40},
        template="plotly_white",
        title={"text": "firing alerts per day", "x": 0.01},
        xaxis={"type": "category"},
    )
    return fig


def _evidence(alerts: Sequence[Alert], anchor_from: int = 1) -> str:
    """One table row per alert (firing, then resolved); rows from ``anchor_from`` on carry the alert id."""
    heads = ("status", "severity", "window", "current", "expected", "band", "change", "volume", "p", "z")
    rows = []
    for i, a in enumerate(alerts):
        m = a.metric
        cells = (
            a.status,
            a.severity,
            _when(a.window_start_ms),
            format_value(m, a.current),
            format_value(m, a.expected),
            f"{format_value(m, a.band_low)} – {format_value(m, a.band_high)}",
            f"{a.deviation_pct:+.1f}%",
            f"{a.volume:,}",
            f"{a.p_value:.3g}",
            f"{a.z_score:.2f}",
        )
        ident = f" id='{html.escape(a.alert_id)}'" if i >= anchor_from else ""
        rows.append(f"<tr class='{a.status}'{ident}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in heads)
    return f"<table class='ev'><tr>{head}</tr>{''.join(rows)}</table>"


def _drilldown_html(alert: Alert, rows: Sequence[DrillRow]) -> str:
    if not rows:
        return ""
    m = alert.metric
    body = "".join(
        f"<tr class='{'fired' if r.fired else ''}'><td>{html.escape(r.segment)}</td><td>{r.shared}</td>"
        f"<td>{format_value(m, r.current)}</td><td>{format_value(m, r.before)}</td><td>{r.change_pct:+.1f}%</td>"
        f"<td>{'yes' if r.fired else ''}</td></tr>"
        for r in rows
    )
    return (
        f"<details class='drilldown' open><summary>Drill-down: {m} in the segments sharing a dimension at "
        f"{_when(alert.window_start_ms)}. {html.escape(drill_summary(alert, rows))}</summary>"
        "<table class='ev'><tr><th>segment</th><th>shares</th><th>now</th><th>hour before</th><th>change</th>"
        f"<th>fired too</th></tr>{body}</table></details>"
    )


def _incident_html(number: int, incident: Incident, points: Sequence[BandPoint], drill: Sequence[DrillRow] = ()) -> str:
    first = incident.first
    fig = incident_figure(incident, points)
    chart = fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"chart-{number}",
        config={"displaylogo": False, "responsive": True},
    )
    anchor = html.escape(first.alert_id)
    state = "resolved" if incident.resolved else "still firing"
    rows = _evidence([a for a in (incident.firing, incident.resolved) if a is not None])
    note = "" if points else "<p class='note'>No replayed windows for this segment: the alert's own evidence only.</p>"
    return (
        f"<section class='incident {first.severity}' id='{anchor}' data-alert-type='{first.alert_type}'>"
        f"<h3><a href='#{anchor}'>#{number}</a> {html.escape(first.message.lstrip('🚨✅ '))}</h3>"
        f"<p class='meta'>{alert_title(first.alert_type)} · {first.country} {first.ad_format} · {state} · "
        f"fingerprint <code>{html.escape(first.fingerprint)}</code></p>{rows}{note}{chart}"
        f"{_drilldown_html(incident.firing, drill) if incident.firing else ''}</section>"
    )


def _summary_html(alerts: Sequence[Alert]) -> str:
    per_type, per_day = summary(alerts)
    type_rows = "".join(
        f"<tr><td>{alert_title(t)}</td><td>{c['firing']}</td><td>{c['resolved']}</td></tr>" for t, c in per_type.items()
    )
    types = sorted({t for counts in per_day.values() for t in counts})
    day_head = "".join(f"<th>{alert_title(t)}</th>" for t in types)
    day_rows = "".join(
        f"<tr><td>{d}</td>{''.join(f'<td>{c[t]}</td>' for t in types)}<td>{sum(c.values())}</td></tr>"
        for d, c in per_day.items()
    )
    chart = ""
    if per_day:
        chart = summary_figure(per_day).to_html(
            full_html=False, include_plotlyjs=False, div_id="summary-chart", config={"displaylogo": False}
        )
    return (
        "<section id='summary'><h2>Summary</h2><div class='cols'>"
        f"<table><tr><th>alert type</th><th>firing</th><th>resolved</th></tr>{type_rows}</table>"
        f"<table><tr><th>day (UTC)</th>{day_head}<th>all</th></tr>{day_rows}</table></div>{chart}</section>"
    )


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222;
padding:0 16px}h1{margin-bottom:4px}.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:8px 16px 8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:left}th{background:#f5f6f8}
.cols{display:flex;flex-wrap:wrap;align-items:flex-start}.incident{border-left:4px solid #999;padding:4px 0 8px 12px;
margin:22px 0}.incident.critical{border-color:#d00000}.incident.high{border-color:#e8740c}
.incident.medium{border-color:#daa038}.incident.low{border-color:#439fe0}.incident h3{margin:4px 0}
.meta{color:#555;font-size:13px;margin:2px 0 6px}.note{color:#a60;font-size:13px}:target{background:#fffbe6}
h3 a{color:#888;text-decoration:none}tr.firing td:first-child{color:#d00000;font-weight:600}
tr.resolved td:first-child{color:#2eb67d;font-weight:600}.drilldown summary{cursor:pointer;font-size:13px;
color:#333;margin-top:6px}.drilldown tr.fired td:last-child{color:#d00000;font-weight:600}
"""


def render_report(
    alerts: Sequence[Alert],
    points: Sequence[BandPoint],
    title: str,
    window_ms: int = 60_000,
    windows: Sequence[SegmentWindow] = (),
) -> str:
    """The whole page as one string (plotly.js inlined); ``windows`` feed the drill-down."""
    import plotly.offline

    _plotly()
    found = incidents(alerts)
    by_start = windows_by_start(windows)
    sections = "".join(
        _incident_html(
            i,
            inc,
            incident_points(inc, points, window_ms),
            drilldown(inc.firing, by_start, alerts, window_ms) if inc.firing else (),
        )
        for i, inc in enumerate(found, 1)
    )
    firing = sum(a.status == "firing" for a in alerts)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = sections or "<p>No alert fired in this range.</p>"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>adwatch · {html.escape(title)}</title><style>{CSS}</style>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
        f"<h1>adwatch report</h1><p class='sub'>{html.escape(title)} · {firing} firing, "
        f"{len(alerts) - firing} resolved, {len(found)} incidents · generated {generated}</p>"
        f"{_summary_html(alerts)}<h2>Alerts</h2>{body}</body></html>"
    )


def write_report(
    folder: Path,
    alerts: Sequence[Alert],
    points: Sequence[BandPoint],
    title: str,
    window_ms: int = 60_000,
    windows: Sequence[SegmentWindow] = (),
) -> Path:
    """Write ``folder/report.html`` (atomically: a link opened mid-refresh never sees half a page)."""
    page = render_report(alerts, points, title, window_ms, windows)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / REPORT_FILE
        tmp = path.with_suffix(".html.tmp")
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ReportError(f"cannot write the report to {folder}: {exc.strerror or exc}") from None
    return path
