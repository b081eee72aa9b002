"""The detector's stream level alerts (``no_data``, ``partition_lagging``: raised by its driver, not
by a rule; see the detector's stream_health.py) route by their severity and format sensibly on
every channel. The alerts here are built as the detector builds them (services do not import each other)."""

from __future__ import annotations

import pytest

from adwatch.contracts import GLOBAL_SEGMENT_ID, Alert, make_alert_id, make_fingerprint, segment_id
from adwatch_notifier import load_routes, route
from adwatch_notifier.formatting import console_box, email_subject, email_text, evidence, pagerduty_event, slack_message

T0 = 1_767_225_600_000


def stream_alert(alert_type: str, status: str = "firing", partition: int | None = None) -> Alert:
    dims = {} if partition is None else {"partition": str(partition)}
    segment = segment_id(dims) if dims else GLOBAL_SEGMENT_ID
    fingerprint = make_fingerprint(alert_type, segment)
    no_data = alert_type == "no_data"
    resolved = status == "resolved"
    if no_data:
        message = (
            "✅ Resolved: No data ad-events: records flow again after 310 s of silence"
            if resolved
            else "🚨 No data! ad-events: no record read for 121 s (threshold 120 s)"
        )
    else:
        message = f"🚨 Partition lagging! ad-events partition {partition}: event time 600 s behind the newest partition"
    return Alert(
        alert_id=make_alert_id(fingerprint, T0, status),
        fingerprint=fingerprint,
        status=status,  # type: ignore[arg-type]
        alert_type=alert_type,  # type: ignore[arg-type]
        severity="critical" if no_data else "high",
        metric="events" if no_data else "lag_seconds",
        current=(205.0 if resolved else 0.0) if no_data else 600.0,
        expected=205.0 if no_data else 60.0,
        band_low=0.0,
        band_high=205.0 if no_data else 60.0,
        deviation_pct=-100.0 if no_data else 900.0,
        volume=0,
        p_value=0.0,
        z_score=0.0,
        window_start_ms=T0,
        window_end_ms=T0 + 121_000,
        detected_at_ms=T0 + 121_000,
        message=message,
        rule="stream",
        dimensions=dims,
        segment_id=segment,
        resolution="recovered" if resolved else None,
        duration_ms=310_000 if resolved else 0,
    )


@pytest.mark.parametrize(
    ("alert", "channels"),
    [
        pytest.param(
            stream_alert("no_data"), ["slack", "pagerduty", "email", "webhook", "console"], id="no_data-critical"
        ),
        pytest.param(
            stream_alert("partition_lagging", partition=3),
            ["slack", "pagerduty", "webhook", "console"],
            id="lagging-high",
        ),
    ],
)
def test_stream_alerts_route_by_severity_on_the_default_table(alert: Alert, channels: list[str]) -> None:
    table = load_routes()
    all_channels = ["slack", "pagerduty", "email", "webhook", "console"]
    assert [c for c in all_channels if route(table, alert, c) is not None] == channels


def test_a_no_data_alert_formats_sensibly_on_every_channel() -> None:
    alert = stream_alert("no_data")
    ev = evidence(alert)
    assert (ev["segment"], ev["segment_id"], ev["alert_type"]) == ("all traffic", "*", "no_data")
    slack = slack_message(alert)
    assert "No data" in slack["text"] and "no record read for 121 s" in slack["text"]
    page = pagerduty_event(alert, "routing-key")
    assert page["event_action"] == "trigger" and page["dedup_key"] == "no_data:*"
    assert page["payload"]["severity"] == "critical" and "No data" in page["payload"]["summary"]
    assert email_subject(alert).startswith("[adwatch] No data")
    assert "no record read for 121 s" in email_text(alert)
    assert "no record read for 121 s" in console_box(alert)
    resolved = stream_alert("no_data", "resolved")
    assert pagerduty_event(resolved, "routing-key")["event_action"] == "resolve"
    assert "records flow again" in slack_message(resolved)["text"]


def test_a_lagging_partition_is_named_in_its_notification() -> None:
    alert = stream_alert("partition_lagging", partition=3)
    assert evidence(alert)["segment"] == "partition=3"
    assert "ad-events partition 3" in slack_message(alert)["text"]
    assert "partition=3" in email_subject(alert)
    assert pagerduty_event(alert, "k")["dedup_key"] == "partition_lagging:partition=3"
