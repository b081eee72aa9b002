"""Pure builders of what each channel sends: Slack Block Kit, email bodies, PagerDuty events.

Nothing here does I/O, so every format is table-tested; Block Kit limits are enforced here.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from adwatch.contracts import Alert, Contributor, alert_title, describe_segment, duration_text, format_value

SEVERITY_EMOJI = {"low": "🔵", "medium": "🟡", "high": "🟠", "critical": "🔴"}
SEVERITY_COLOR = {"low": "#439FE0", "medium": "#DAA038", "high": "#E8740C", "critical": "#D00000"}
RESOLVED_COLOR = "#2EB67D"
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}

# Block Kit limits (api.slack.com/reference/block-kit): header 150, section 3000, field 2000, 10 fields, 50 blocks.
HEADER_MAX, SECTION_MAX, FIELD_MAX, FIELDS_MAX, BLOCKS_MAX = 150, 3000, 2000, 10, 50
PD_SUMMARY_MAX, PD_DEDUP_MAX = 1024, 255


GROUP_KEY = re.compile(r"^g\d+:")  # a group's notification (grouping.group_key) is named by its group
GROUP_DEDUP_PREFIX = "group:"
"""A group's PagerDuty ``dedup_key`` is ``group:<group key>``: no alert's fingerprint starts so
(``decode`` parks one that would look like a group's, :func:`reserved_fingerprint`), so a group's
incident and a single alert's can never share a key."""


def reserved_fingerprint(fingerprint: str) -> bool:
    """A fingerprint an alert may not carry: a group key's shape, or the group dedup namespace."""
    return bool(GROUP_KEY.match(fingerprint)) or fingerprint.startswith(GROUP_DEDUP_PREFIX)


def pagerduty_dedup_key(fingerprint: str) -> str:
    """``group:<key>`` for a group's notification, the fingerprint for an alert; at most 255 characters.

    A group key too long for PagerDuty keeps its head and ends with a hash of the whole, so two long
    keys with one prefix stay two incidents.
    """
    key = GROUP_DEDUP_PREFIX + fingerprint if GROUP_KEY.match(fingerprint) else fingerprint
    if len(key) <= PD_DEDUP_MAX:
        return key
    return f"{key[: PD_DEDUP_MAX - 17]}~{hashlib.sha256(key.encode()).hexdigest()[:16]}"


PD_EVENT_MAX = 512 * 1024  # Events API v2 refuses larger events
PD_CLIENT = "adwatch"


class _Fields(dict[str, object]):
    """Template fields: a dimension the segment lacks is '' (as a label it lacks matches '')."""

    def __missing__(self, key: str) -> str:
        return ""


def url_value(text: str) -> str:
    """One URL-encoded value (a dimension value is any text: ``&``, ``#``, ``/``, spaces...)."""
    return quote(text, safe="")


def link_fields(alert: Alert) -> dict[str, object]:
    """What a link template may use, every text value URL-encoded: ``{segment}`` (the segment id),
    ``{where}`` (``US banner app_id=com.x``), each dimension by name (``{app_id}``, ``{country}``;
    '' when the segment lacks it), ``{grafana_vars}`` (``var-ad_format=banner&var-country=US``),
    ``{alert_type}``, ``{fingerprint}``, ``{alert_id}``, ``{from_ms}``, ``{to_ms}``."""
    fields: dict[str, object] = {name: url_value(value) for name, value in alert.dimensions.items()}
    fields.update(
        {
            "country": url_value(alert.country),
            "ad_format": url_value(alert.ad_format),
            "segment": url_value(alert.segment_id),
            "segment_id": url_value(alert.segment_id),
            "where": url_value(alert.where),
            "grafana_vars": "&".join(
                f"var-{name}={url_value(value)}" for name, value in sorted(alert.dimensions.items())
            ),
            "alert_type": alert.alert_type,
            "alert_id": alert.alert_id,
            "fingerprint": url_value(alert.fingerprint),
            "from_ms": alert.window_start_ms - 3_600_000,
            "to_ms": alert.window_end_ms + 900_000,
        }
    )
    return fields


@dataclass(frozen=True)
class Links:
    """Where an alert points: a dashboard view of its segment and time, and its type's runbook.

    Templates use the fields of :func:`link_fields` (``{segment}``, ``{app_id}``, ``{country}``,
    ``{grafana_vars}``, ``{alert_type}``, ``{from_ms}``, ``{to_ms}``...), URL-encoded; a dimension the
    segment lacks is ''; a template without placeholders is used as is (the dashboard's front page).
    """

    dashboard: str = ""
    runbook: str = ""

    def for_alert(self, alert: Alert) -> list[tuple[str, str]]:
        fields = _Fields(link_fields(alert))
        out: list[tuple[str, str]] = []
        for text, template in (("Dashboard", self.dashboard), ("Runbook", self.runbook)):
            if template:
                try:
                    out.append((text, template.format_map(fields)))
                except (KeyError, IndexError, ValueError, AttributeError):
                    out.append((text, template))
        return out


@dataclass(frozen=True)
class Thread:
    """How a notification follows its episode's first one (``None``: it opens the episode).

    - ``change``: one line for the thread reply / the top of a mail ("escalated high -> critical",
      "resolved after 23 min", "+2 joined, 1 recovered");
    - ``escalated_from``: the severity delivered before, for a firing that escalates;
    - ``peak``, ``since_ms``, ``fired_current``, ``fired_expected``: the firing's evidence, for a
      recovery (highest severity delivered, first firing's detection time, its values).
    """

    change: str = ""
    escalated_from: str = ""
    peak: str = ""
    since_ms: int = 0
    fired_current: float | None = None
    fired_expected: float | None = None


def escalation_line(previous: str, severity: str) -> str:
    return f"escalated {previous} -> {severity}"


def recovery_line(alert: Alert, thread: Thread) -> str:
    """``resolved after 23 min · peak critical · firing 2.00% (expected 5.00%) · now 4.90%``."""
    parts = [
        f"resolved after {duration_text(alert.detected_at_ms - thread.since_ms)}" if thread.since_ms else "resolved"
    ]
    if thread.peak:
        parts.append(f"peak {thread.peak}")
    if thread.fired_current is not None and thread.fired_expected is not None:
        fired = format_value(alert.metric, thread.fired_current)
        parts.append(f"firing {fired} (expected {format_value(alert.metric, thread.fired_expected)})")
    parts.append(f"now {format_value(alert.metric, alert.current)}")
    return " · ".join(parts)


def thread_line(alert: Alert, thread: Thread | None) -> str:
    """The one line that says what changed since the episode's first notification ("" when it opens it)."""
    if thread is None:
        return ""
    if thread.change:
        return thread.change
    if alert.status == "resolved":
        return recovery_line(alert, thread)
    if thread.escalated_from:
        return escalation_line(thread.escalated_from, alert.severity)
    return ""


def mrkdwn(text: object) -> str:
    """Slack mrkdwn escaping: ``&``, ``<``, ``>`` (no ``<!channel>``, no injected links)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_MRKDWN_FORMATTING = frozenset("*_~`")


def mrkdwn_literal(text: object) -> str:
    """A user's value (a dimension value: any text) shown as is in mrkdwn: escaped, inside inline
    code, where Slack applies no ``*bold*``/``_italic_``/``~strike~``; a backtick, which would end the
    code span, becomes ``ˋ`` (U+02CB)."""
    return "`" + mrkdwn(str(text).replace("`", "\u02cb")) + "`"


def mrkdwn_text(text: str, literals: Sequence[str] = ()) -> str:
    """Text that holds user values (``literals``: a segment's ``where``) as mrkdwn: escaped, and each
    literal carrying a formatting character shown as inline code (:func:`mrkdwn_literal`)."""
    out = mrkdwn(text)
    for literal in sorted({lit for lit in literals if _MRKDWN_FORMATTING & set(lit)}, key=len, reverse=True):
        out = out.replace(mrkdwn(literal), mrkdwn_literal(literal))
    return out


# --- drill-down -----------------------------------------------------------------------------
DRILLDOWN_TOP = 5
"""Contributors listed per notification (the alert carries up to 20, largest share first)."""
METRIC_NAMES = {"ctr": "CTR", "ecpm": "eCPM", "impressions": "impressions", "orphan_clicks": "orphan clicks"}


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def change_word(alert: Alert) -> str:
    """``drop``, ``rise`` or ``change``: what the shares of contributors are shares of."""
    return "drop" if alert.current < alert.expected else "rise" if alert.current > alert.expected else "change"


def child_name(alert: Alert, child: Contributor) -> str:
    """A contributor by the dimensions it adds to the alert's segment: ``app_id=com.example.game``
    under ``US banner``, ``banner`` under all traffic (the whole segment when it adds none)."""
    extra = {k: v for k, v in child.dimensions.items() if alert.dimensions.get(k) != v}
    return describe_segment(extra or child.dimensions)


def _child_change(child: Contributor) -> str:
    return f" ({100.0 * (child.current - child.expected) / child.expected:+.0f}%)" if child.expected else ""


def drilldown_headline(alert: Alert) -> str:
    """The cause in one line, "" without contributors (and for a recovery):
    ``US banner CTR -48%: 91% of the drop from app_id=com.example.game (CTR 3.10% -> 0.40%)``."""
    if not alert.contributors or alert.status != "firing":
        return ""
    top, name = alert.contributors[0], metric_name(alert.metric)
    values = f"{format_value(alert.metric, top.expected)} -> {format_value(alert.metric, top.current)}"
    return (
        f"{alert.where} {name} {alert.deviation_pct:+.0f}%: {top.share:.0%} of the {change_word(alert)} "
        f"from {child_name(alert, top)} ({name} {values})"
    )


def contributor_text(alert: Alert, child: Contributor) -> str:
    """``3.10% -> 0.40% (-87%) · 91% of the drop · volume 12,000 · alerting`` (without its name)."""
    parts = [
        f"{format_value(alert.metric, child.expected)} -> {format_value(alert.metric, child.current)}"
        + _child_change(child),
        f"{child.share:.0%} of the {change_word(alert)}",
    ]
    if child.volume:
        parts.append(f"volume {child.volume:,}")
    if child.alerting:
        parts.append("alerting")
    return " · ".join(parts)


def folded_text(alert: Alert) -> str:
    """``+3 child alerts folded`` ("" when none)."""
    if not alert.folded:
        return ""
    return f"+{alert.folded} child alert{'s' if alert.folded != 1 else ''} folded"


def drilldown_lines(alert: Alert, top: int = DRILLDOWN_TOP) -> list[tuple[str, str]]:
    """The top ``top`` contributors as ``(name, values)`` (name '' for the trailing lines:
    ``... and 4 more``, ``+3 child alerts folded``); empty when there is nothing to drill into."""
    if alert.status != "firing":
        return []
    lines = [(child_name(alert, c), contributor_text(alert, c)) for c in alert.contributors[:top]]
    if len(alert.contributors) > top:
        lines.append(("", f"... and {len(alert.contributors) - top} more"))
    if alert.folded:
        lines.append(("", folded_text(alert)))
    return lines


def drilldown_plain(alert: Alert, top: int = DRILLDOWN_TOP) -> list[str]:
    """:func:`drilldown_lines` as plain text lines: ``app_id=com.x: 3.10% -> 0.40% (-87%) · ...``."""
    return [f"{name}: {values}" if name else values for name, values in drilldown_lines(alert, top)]


def contributors_detail(alert: Alert) -> list[dict[str, Any]]:
    """Every contributor, structured (PagerDuty ``custom_details``)."""
    return [
        {
            "segment": child_name(alert, c),
            "segment_id": c.segment_id,
            "current": format_value(alert.metric, c.current),
            "expected": format_value(alert.metric, c.expected),
            "share": f"{c.share:.0%}",
            "volume": c.volume,
            "alerting": c.alerting,
        }
        for c in alert.contributors
    ]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def alert_link(template: str, alert: Alert) -> str:
    """The link of one alert: ``{alert_id}``, ``{fingerprint}`` and ``{segment}`` (the segment id,
    URL-encoded) in ADWATCH_GRAFANA_URL are filled in (``make run`` links each alert to its chart:
    ``file://.../report.html#{alert_id}``)."""
    return (
        template.replace("{alert_id}", alert.alert_id)
        .replace("{fingerprint}", alert.fingerprint)
        .replace("{segment}", url_value(alert.segment_id))
    )


def window_text(alert: Alert) -> str:
    start = datetime.fromtimestamp(alert.window_start_ms / 1000, UTC)
    end = datetime.fromtimestamp(alert.window_end_ms / 1000, UTC)
    return f"{start:%Y-%m-%d %H:%M}–{end:%H:%M} UTC"


def evidence(alert: Alert) -> dict[str, Any]:
    """The facts behind an alert, human-formatted, shared by every channel.

    ``segment`` is its dimensions for people (``US banner app_id=com.x``), ``segment_id`` the id;
    ``country``/``ad_format`` are there when the segment has them; ``drilldown`` (the cause in one
    line) and ``folded`` when the alert has contributors or folded children."""
    facts: dict[str, Any] = {
        "status": alert.status,
        "alert_type": alert.alert_type,
        "severity": alert.severity,
        "segment": alert.where,
        "segment_id": alert.segment_id,
    }
    facts.update({name: alert.dimensions[name] for name in ("country", "ad_format") if name in alert.dimensions})
    facts.update(
        {
            "metric": alert.metric,
            "current": format_value(alert.metric, alert.current),
            "expected": format_value(alert.metric, alert.expected),
            "band": f"{format_value(alert.metric, alert.band_low)} – {format_value(alert.metric, alert.band_high)}",
            "change_pct": f"{alert.deviation_pct:+.1f}%",
            "volume": alert.volume,
            "p_value": f"{alert.p_value:.3g}",
            "z_score": f"{alert.z_score:.2f}",
            "window": window_text(alert),
            "detected_at": utc(alert.detected_at_ms),
            "alert_id": alert.alert_id,
            "fingerprint": alert.fingerprint,
            "rule_set": alert.rule_set,
        }
    )
    headline = drilldown_headline(alert)
    if headline:
        facts["drilldown"] = headline
    if alert.folded:
        facts["folded"] = alert.folded
    return facts


# --- Slack ----------------------------------------------------------------------------------
def slack_message(alert: Alert, grafana_url: str = "", links: Links = Links()) -> dict[str, Any]:
    """``text`` (notification fallback), ``blocks`` and a colour bar by severity / recovery."""
    grafana_url = alert_link(grafana_url, alert)
    ev = {k: mrkdwn(v) for k, v in evidence(alert).items()}
    emoji = "✅" if alert.status == "resolved" else SEVERITY_EMOJI.get(alert.severity, "⚪")
    segment = mrkdwn_literal(alert.where) if alert.dimensions else ev["segment"]
    fields = [
        f"*Segment*\n{segment}",
        f"*Metric*\n{ev['metric']}",
        f"*Severity*\n{emoji} {ev['severity']}",
        f"*Current value*\n{ev['current']}",
        f"*Expected value*\n{ev['expected']} (band {ev['band']})",
        f"*Change*\n{ev['change_pct']}",
        f"*Time*\n{ev['window']}",
        f"*Alert id*\n{ev['alert_id']}",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(alert.message, HEADER_MAX), "emoji": True}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": clip(f, FIELD_MAX)} for f in fields[:FIELDS_MAX]],
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": clip(
                        f"{ev['status']} · volume {ev['volume']} · p={ev['p_value']} · z={ev['z_score']} · "
                        f"rules {ev['rule_set']} · detected {ev['detected_at']}",
                        SECTION_MAX,
                    ),
                }
            ],
        },
    ]
    drill = slack_drilldown(alert)
    if drill is not None:
        blocks.insert(2, drill)
    urls = links.for_alert(alert) or ([("Open the Grafana dashboard", grafana_url)] if grafana_url else [])
    if urls:
        text = " · ".join(f"<{_slack_url(url)}|{mrkdwn(name)}>" for name, url in urls)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_MAX)}})
    color = RESOLVED_COLOR if alert.status == "resolved" else SEVERITY_COLOR.get(alert.severity, "#808080")
    headline = drilldown_headline(alert)
    literals = [alert.where, *(child_name(alert, c) for c in alert.contributors[:1])]
    text = mrkdwn_text(f"{alert.message} · {headline}" if headline else alert.message, literals)
    return {
        "text": clip(text, SECTION_MAX),
        "blocks": blocks[:BLOCKS_MAX],
        "attachments": [{"color": color, "fallback": clip(text, SECTION_MAX)}],
    }


def slack_drilldown(alert: Alert, top: int = DRILLDOWN_TOP) -> dict[str, Any] | None:
    """The drill-down section: the cause's headline, then the top contributors one a line, each
    segment value as inline code (:func:`mrkdwn_literal`: a value cannot mention, link or format)."""
    lines = drilldown_lines(alert, top)
    if not lines:
        return None
    headline = drilldown_headline(alert)
    first = alert.contributors[:1]
    head = mrkdwn_text(headline, [alert.where, *(child_name(alert, c) for c in first)]) if headline else ""
    rows = [f"• {mrkdwn_literal(name)}: {mrkdwn(values)}" if name else f"_{mrkdwn(values)}_" for name, values in lines]
    text = "\n".join([f"*Drill-down* · {head}" if head else "*Drill-down*", *rows])
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_MAX)}}


def slack_thread_note(message: dict[str, Any], line: str) -> dict[str, Any]:
    """The message with the episode's change (escalation, recovery evidence) under its header.

    The notification text starts with an escalation or a group's change; a recovery's text
    keeps its ``✅ Resolved`` first and ends with the evidence."""
    if not line:
        return message
    closing = line.startswith(("resolved", "all "))
    icon = "✅" if closing else "⬆️" if line.startswith("escalated") else "🔁"
    note = {"type": "section", "text": {"type": "mrkdwn", "text": clip(f"{icon} *{mrkdwn(line)}*", SECTION_MAX)}}
    blocks = list(message.get("blocks", []))
    blocks.insert(1 if blocks else 0, note)
    text = message.get("text", "")
    text = f"{text} · {line}" if closing else f"{line}: {text}"
    return {**message, "text": clip(text, SECTION_MAX), "blocks": blocks[:BLOCKS_MAX]}


def _slack_url(url: str) -> str:
    """A configured URL inside ``<url|text>``: ``|`` and ``>`` would end it early."""
    return url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C")


# --- PagerDuty ------------------------------------------------------------------------------
def pagerduty_event(
    alert: Alert, routing_key: str, grafana_url: str = "", links: Links = Links(), thread: Thread | None = None
) -> dict[str, Any]:
    """Events API v2 body: trigger for firing, resolve for resolved, dedup_key = fingerprint (a group: ``group:<key>``).

    An escalation is a new ``trigger`` with the same ``dedup_key`` (PagerDuty appends it to the
    open alert's log as a trigger entry, at the new severity; no second incident), its
    ``custom_details`` saying ``escalated_from``. A resolve carries no payload (the API takes none).
    ``client``/``client_url`` name adwatch and its dashboard; the event is trimmed under 512 KB
    (``custom_details`` values are clipped, then dropped) so PagerDuty never refuses it for size.
    """
    grafana_url = alert_link(grafana_url, alert)
    dedup_key = pagerduty_dedup_key(alert.fingerprint)
    if alert.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    headline = drilldown_headline(alert)
    summary = f"{alert.message} · {headline}" if headline else alert.message
    details = evidence(alert)
    details["dimensions"] = dict(alert.dimensions)
    if alert.contributors:
        details["contributors"] = contributors_detail(alert)
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": clip(summary, PD_SUMMARY_MAX),
            "source": alert.segment_id,
            "severity": PAGERDUTY_SEVERITY.get(alert.severity, "warning"),
            "timestamp": datetime.fromtimestamp(alert.detected_at_ms / 1000, UTC).isoformat(),
            "class": alert.alert_type,
            "custom_details": details,
        },
        "client": PD_CLIENT,
    }
    if alert.ad_format:
        event["payload"]["component"] = clip(alert.ad_format, 255)
    if alert.country:
        event["payload"]["group"] = alert.country
    if len(summary) > PD_SUMMARY_MAX:  # a group's list of segments, a long drill-down: whole in the details
        details["message"] = alert.message
    line = thread_line(alert, thread)
    if line:
        event["payload"]["custom_details"]["episode"] = line
    if thread is not None and thread.escalated_from:
        event["payload"]["custom_details"]["escalated_from"] = thread.escalated_from
    urls = links.for_alert(alert) or ([("Grafana dashboard", grafana_url)] if grafana_url else [])
    if urls:
        event["links"] = [{"href": url, "text": text} for text, url in urls]
        event["client_url"] = urls[0][1]
    return trim_event(event)


def event_size(event: dict[str, Any]) -> int:
    return len(json.dumps(event, ensure_ascii=False).encode())


def trim_event(event: dict[str, Any], limit: int = PD_EVENT_MAX) -> dict[str, Any]:
    """Clip the longest ``custom_details`` values until the event fits in ``limit`` bytes."""
    details: dict[str, Any] = event.get("payload", {}).get("custom_details", {})
    while event_size(event) > limit and details:
        name = max(details, key=lambda k: len(str(details[k])))
        value = str(details[name])
        if len(value) <= 64:
            details.pop(name)
            continue
        details[name] = clip(value, max(64, len(value) // 2))
    return event


# --- email ----------------------------------------------------------------------------------
def thread_id(fingerprint: str) -> str:
    """The Message-ID every mail of one fingerprint refers to, so clients thread them."""
    return f"<adwatch-{hashlib.sha256(fingerprint.encode()).hexdigest()[:24]}@adwatch>"


def message_id(alert: Alert) -> str:
    return f"<{alert.alert_id}.{alert.status}@adwatch>"


def email_subject(alert: Alert, reply: bool = False) -> str:
    """Same subject for the whole episode (later mails prefixed Re:) so every client threads them.

    A group's notification (fingerprint ``g<route>:<labels>``) is named by its group, not by its
    most severe member (which changes as segments join and leave)."""
    if GROUP_KEY.match(alert.fingerprint):
        subject = f"[adwatch] group {alert.fingerprint.split(':', 1)[1]}"
    else:
        subject = f"[adwatch] {alert_title(alert.alert_type)}: {clip(alert.where, 200)}"
    return f"Re: {subject}" if alert.status == "resolved" or reply else subject


def email_text(alert: Alert, grafana_url: str = "", thread: Thread | None = None) -> str:
    grafana_url = alert_link(grafana_url, alert)
    line = thread_line(alert, thread)
    lines = ([line.capitalize(), ""] if line else []) + [alert.message, ""]
    drill = drilldown_plain(alert)
    headline = drilldown_headline(alert)
    if drill:
        lines += ([headline] if headline else []) + [f"  - {row}" for row in drill] + [""]
    lines += [f"{k:>12}: {v}" for k, v in evidence(alert).items()]
    if grafana_url:
        lines += ["", f"Dashboard: {grafana_url}"]
    return "\n".join(lines) + "\n"


def email_html(alert: Alert, grafana_url: str = "", thread: Thread | None = None) -> str:
    grafana_url = alert_link(grafana_url, alert)
    line = thread_line(alert, thread)
    note = f"<p><b>{html.escape(line.capitalize())}</b></p>" if line else ""
    color = RESOLVED_COLOR if alert.status == "resolved" else SEVERITY_COLOR.get(alert.severity, "#808080")
    rows = "".join(
        f"<tr><th align='left'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in evidence(alert).items()
    )
    link = f"<p><a href='{html.escape(grafana_url)}'>Open the Grafana dashboard</a></p>" if grafana_url else ""
    drill = ""
    lines = drilldown_lines(alert)
    if lines:
        headline = drilldown_headline(alert)
        items = "".join(
            f"<li><code>{html.escape(name)}</code>: {html.escape(values)}</li>"
            if name
            else f"<li><i>{html.escape(values)}</i></li>"
            for name, values in lines
        )
        drill = (f"<p><b>{html.escape(headline)}</b></p>" if headline else "") + f"<ul>{items}</ul>"
    return (
        f"<html><body>{note}<h2 style='color:{color}'>{html.escape(alert.message)}</h2>"
        f"{drill}<table>{rows}</table>{link}</body></html>"
    )


# --- webhook and console ----------------------------------------------------------------------
def webhook_body(alert: Alert, idempotency_key: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The alert as the contract encodes it (``dimensions``, ``contributors``...), its message, and
    for people: ``where`` (the segment), ``drilldown`` (the cause in one line, "" without contributors)
    and ``drilldown_lines`` (the top contributors, ``+3 child alerts folded``)."""
    return {
        "version": "1",
        "idempotency_key": idempotency_key,
        "message": alert.message,
        "where": alert.where,
        "drilldown": drilldown_headline(alert),
        "drilldown_lines": drilldown_plain(alert),
        "alert": raw,
    }


def console_box(alert: Alert, link: str = "") -> str:
    """A small box per alert for terminals (``make run``); ``link``: ADWATCH_GRAFANA_URL (templated)."""
    ev = evidence(alert)
    body = [
        alert.message,
        f"{ev['severity']} {ev['alert_type']} · {ev['segment']} · {ev['metric']}",
        f"current {ev['current']} · expected {ev['expected']} (band {ev['band']}) · {ev['change_pct']}",
        f"window {ev['window']} · volume {ev['volume']} · p={ev['p_value']} z={ev['z_score']}",
        f"id {ev['alert_id']}",
    ]
    headline = drilldown_headline(alert)
    if headline:
        body.append(headline)
    body += [f"  {row}" for row in drilldown_plain(alert)]
    if link:
        body.append(f"chart {alert_link(link, alert)}")
    width = max(len(line) for line in body)
    return "\n".join(
        ["┌" + "─" * (width + 2) + "┐", *(f"│ {line:<{width}} │" for line in body), "└" + "─" * (width + 2) + "┘"]
    )
