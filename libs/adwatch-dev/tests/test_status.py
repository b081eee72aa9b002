"""The live status of `make run`: metrics text -> status -> lines, and both ways of showing it."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest

from adwatch_dev.status import Snapshot, StatusBoard, build_status, parse_metrics, status_line, status_lines

GENERATOR = """# TYPE adwatch_generator_events_produced_total counter
adwatch_generator_events_produced_total{{event_type="impression"}} {imps}
adwatch_generator_events_produced_total{{event_type="click"}} {clicks}
"""
DETECTOR = """# TYPE adwatch_detector_last_batch_timestamp_seconds gauge
adwatch_detector_last_batch_timestamp_seconds 1.7e9
# TYPE adwatch_detector_events_total counter
adwatch_detector_events_total {events}
# TYPE adwatch_detector_batch_duration_seconds gauge
adwatch_detector_batch_duration_seconds 1.25
# TYPE adwatch_detector_watermark_delay_seconds gauge
adwatch_detector_watermark_delay_seconds 66
# TYPE adwatch_detector_windows_closed_total counter
adwatch_detector_windows_closed_total {windows}
# TYPE adwatch_detector_state_rows gauge
adwatch_detector_state_rows 48
# TYPE adwatch_detector_segments_warming gauge
adwatch_detector_segments_warming {warming}
# TYPE adwatch_detector_alerts_total counter
adwatch_detector_alerts_total{{alert_type="traffic_spike",severity="high",status="firing"}} 1
adwatch_detector_alerts_total{{alert_type="ctr_drop",severity="medium",status="firing"}} 2
adwatch_detector_alerts_total{{alert_type="ctr_drop",severity="low",status="resolved"}} 1
# TYPE adwatch_detector_dead_letters_total counter
adwatch_detector_dead_letters_total{{reason="decode"}} 3
"""
NOTIFIER = """# TYPE adwatch_notifier_notifications_total counter
adwatch_notifier_notifications_total{channel="console",outcome="delivered"} 4
adwatch_notifier_notifications_total{channel="console",outcome="suppressed"} 2
# TYPE adwatch_notifier_dead_letters_total counter
adwatch_notifier_dead_letters_total{channel="console",reason="permanent"} 1
"""


def snapshot(at_s: float, imps: int, events: int, windows: int = 96, warming: int = 0) -> Snapshot:
    return Snapshot(
        at_s,
        {
            "generator": parse_metrics(GENERATOR.format(imps=imps, clicks=imps // 50)),
            "detector": parse_metrics(DETECTOR.format(events=events, windows=windows, warming=warming)),
            "notifier-console": parse_metrics(NOTIFIER),
        },
    )


def test_metrics_text_becomes_samples_with_labels() -> None:
    samples = parse_metrics(NOTIFIER)
    assert samples["adwatch_notifier_notifications_total"] == [
        ({"channel": "console", "outcome": "delivered"}, 4.0),
        ({"channel": "console", "outcome": "suppressed"}, 2.0),
    ]


def test_two_scrapes_give_rates_and_totals() -> None:
    st = build_status(snapshot(100, 1000, 900), snapshot(110, 1800, 1700), started_s=50, trigger_s=2.0)
    assert st.elapsed_s == 60
    assert st.events_in_per_s == pytest.approx((1836 - 1020) / 10)
    assert st.events_processed_per_s == pytest.approx(80)
    assert (st.batch_duration_s, st.trigger_s, st.watermark_delay_s) == (1.25, 2.0, 66)
    assert (st.windows_closed, st.segments_tracked, st.segments_warming) == (96, 48, 0)
    assert (st.alerts_firing, st.alerts_resolved) == (3, 1)
    assert st.deliveries == {"console": 4}
    assert st.dead_letters == {"detector": 3, "console": 1}
    assert st.down == ()


@pytest.mark.parametrize(
    ("services", "phase"),
    [
        pytest.param({"detector": None}, "detector boots Spark", id="detector-down"),
        pytest.param({"generator": parse_metrics(GENERATOR.format(imps=0, clicks=0))}, "generator", id="no-events"),
        pytest.param(
            {"generator": parse_metrics(GENERATOR.format(imps=9, clicks=0)), "detector": {}},
            "reads the backfilled history",
            id="first-batch",
        ),
        pytest.param(snapshot(1, 10, 10, windows=0).services, "first 1-minute window", id="no-window"),
        pytest.param(snapshot(1, 10, 10, warming=5).services, "5 segments still warming up", id="warming"),
        pytest.param(snapshot(1, 10, 10).services, "alerts fired", id="alerting"),
    ],
)
def test_the_phase_says_what_the_pipeline_is_doing(services: dict, phase: str) -> None:  # type: ignore[type-arg]
    assert phase in build_status(None, Snapshot(1, services), started_s=0).phase


def test_unknown_values_show_as_dashes_and_down_services_are_named() -> None:
    st = build_status(None, Snapshot(5, {"detector": None, "generator": None}), started_s=0, trigger_s=2.0)
    lines = status_lines(st)
    assert lines[0].startswith("adwatch 00:05 · starting")
    assert any("not answering" in line and "detector, generator" in line for line in lines)
    assert "in –/s processed –/s" in status_line(st)


def test_non_terminal_output_is_plain_periodic_lines() -> None:
    out = io.StringIO()
    # scrape -> show as the loop does: a line only every plain_interval_s, alerts printed as they come
    board = StatusBoard(lambda: {}, stream=out, trigger_s=2.0, plain_interval_s=10)
    with board:
        for snap_at, s in ((0, snapshot(0, 0, 0)), (5, snapshot(5, 400, 400)), (10, snapshot(10, 800, 800))):
            board.show(build_status(None, s, started_s=0, trigger_s=2.0))
            if snap_at == 5:
                board.print("┌ alert box ┐")
    lines = out.getvalue().splitlines()
    assert [line.split(" |")[0] for line in lines if line.startswith("adwatch")] == ["adwatch 00:00", "adwatch 00:10"]
    assert "┌ alert box ┐" in lines
    assert "\x1b[" not in out.getvalue()  # no escape codes in a file or a pipe


def test_terminal_output_is_a_refreshing_panel_with_alerts_printed_above() -> None:
    out = io.StringIO()
    board = StatusBoard(lambda: {}, stream=out, terminal=True, trigger_s=2.0)
    with board:
        board.show(build_status(snapshot(0, 0, 0), snapshot(10, 800, 800), started_s=0, trigger_s=2.0))
        board.print("┌ alert box ┐")
        board._live.refresh()
    text = out.getvalue()
    assert "\x1b[" in text  # cursor movement: the panel is redrawn in place
    for label in ("events/s", "detector batch", "windows closed", "segments", "alerts", "deliveries", "dead letters"):
        assert label in text
    assert "1.2 s (trigger 2.0 s)" in text
    assert "48 tracked" in text and "3 firing" in text and "console 4" in text
    assert text.index("┌ alert box ┐") < text.rindex("events/s")  # the alert stays above the last panel


def test_the_board_scrapes_every_port_and_names_the_silent_ones() -> None:
    def fetch(port: int) -> str:
        if port == 2:
            raise ConnectionRefusedError
        return NOTIFIER

    board = StatusBoard(
        lambda: {"notifier-console": 1, "detector": 2}, stream=io.StringIO(), terminal=False, fetch=fetch
    )
    stop = threading.Event()
    board.run(stop, tick=lambda: False)
    assert board.status is not None
    assert board.status.down == ("detector",)
    assert board.status.deliveries == {"console": 4}


def _labelled(metric: Any, **labels: str) -> Any:
    """The child of ``metric`` with these labels (any further label names set to "x")."""
    names = getattr(metric, "_labelnames", ())
    return metric.labels(**{name: labels.get(name, "x") for name in names}) if names else metric


def test_every_figure_of_the_panel_comes_from_the_services_real_metrics() -> None:
    """The panel reads the names the services export (their own metric classes), not a copy."""
    from prometheus_client import CollectorRegistry, generate_latest

    from adwatch_detector.metrics import DetectorMetrics
    from adwatch_generator.metrics import GeneratorMetrics
    from adwatch_notifier.metrics import NotifierMetrics

    def scrape(step: int) -> Snapshot:
        gen, det, notif = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
        g, d, n = GeneratorMetrics(gen), DetectorMetrics(det), NotifierMetrics(notif)
        _labelled(g.events_produced_total, event_type="impression").inc(1000 * step)
        d.events_total.inc(900 * step)
        d.windows_closed_total.inc(10 * step)
        _labelled(d.alerts_total, status="firing").inc(2)
        _labelled(d.alerts_total, status="resolved").inc(1)
        _labelled(d.dead_letters_total, reason="decode").inc(3)
        for gauge, value in (
            (d.last_batch_timestamp_seconds, 1.7e9),
            (d.batch_duration_seconds, 1.5),
            (d.trigger_interval_seconds, 2.0),
            (d.watermark_delay_seconds, 7.0),
            (d.state_rows, 64),
            (d.segments_warming, 4),
        ):
            gauge.set(value)
        _labelled(n.notifications, channel="console", outcome="delivered").inc(2)
        _labelled(n.dead_letters, channel="console", reason="permanent").inc(1)
        return Snapshot(
            float(step),
            {
                "generator": parse_metrics(generate_latest(gen).decode()),
                "detector": parse_metrics(generate_latest(det).decode()),
                "notifier-console": parse_metrics(generate_latest(notif).decode()),
            },
        )

    status = build_status(scrape(1), scrape(2), started_s=0.0)
    unknown = [name for name, value in vars(status).items() if value is None]
    assert unknown == [], f"figures the panel cannot find in the services' /metrics: {unknown}"
    assert (status.events_in_per_s, status.events_processed_per_s, status.trigger_s) == (1000.0, 900.0, 2.0)
    assert status.deliveries == {"console": 2.0} and status.dead_letters == {"detector": 3.0, "console": 1.0}
