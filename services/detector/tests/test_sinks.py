"""foreachBatch sinks without Spark: real broker, Redis and embedded ClickHouse."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from adwatch.config import CommonSettings
from adwatch.contracts import (
    Alert,
    DeadLetter,
    SegmentWindow,
    decode,
    encode,
    make_alert_id,
    make_fingerprint,
    segment_key,
)
from adwatch_detector.evidence import BandPoint
from adwatch_detector.metrics import DetectorMetrics, progress_values
from adwatch_detector.settings import DetectorSettings
from adwatch_detector.sinks import BatchWriter, alert_parent, event_links, reason_label
from adwatch_detector.stream_health import BatchReading, PartitionBatch, StreamHealth, StreamHealthSettings
from adwatch_dev.testing import consume_all, unique

SEG = segment_key("US", "banner")
FP = make_fingerprint("ctr_drop", SEG)
WINDOW = SegmentWindow(
    window_start_ms=1_790_000_040_000,
    window_end_ms=1_790_000_100_000,
    country="US",
    ad_format="banner",
    impressions=1000,
    clicks=8,
    revenue_usd=2.0,
    event_counts={"impression": 1000, "click": 8},
)
ALERT = Alert(
    alert_id=make_alert_id(FP, WINDOW.window_start_ms, "firing"),
    fingerprint=FP,
    status="firing",
    alert_type="ctr_drop",
    severity="high",
    country="US",
    ad_format="banner",
    metric="ctr",
    current=0.008,
    expected=0.02,
    band_low=0.015,
    band_high=0.025,
    deviation_pct=-60.0,
    volume=1000,
    p_value=1e-9,
    z_score=-6.1,
    window_start_ms=WINDOW.window_start_ms,
    window_end_ms=WINDOW.window_end_ms,
    detected_at_ms=1_790_000_105_000,
    message="🚨 CTR drop! US banner: 2.00% -> 0.80% (-60.0%)",
    rule="ctr",
)
BAND = BandPoint(
    segment=SEG,
    alert_type="ctr_drop",
    metric="ctr",
    window_start_ms=WINDOW.window_start_ms,
    window_end_ms=WINDOW.window_end_ms,
    current=0.008,
    expected=0.02,
    band_low=0.015,
    band_high=0.025,
    volume=1000,
    breach=True,
)
TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _row(kind: str, **kw: object) -> dict[str, object]:
    base: dict[str, object] = dict.fromkeys(
        ["segment", "window_start_ms", "window_end_ms", "payload", "reason", "src_partition", "src_offset", "count"]
    )
    return {**base, "kind": kind, "traceparents": [], **kw}


def test_write_rows_reaches_every_sink_and_a_replay_changes_nothing(
    kafka: str, redis_url: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    settings = DetectorSettings(
        alerts_topic=topic_factory("alerts", 3),
        dlq_topic=topic_factory("dlq"),
        redis_key_prefix=unique("seg") + ":",
    )
    common = CommonSettings(kafka_bootstrap=kafka, redis_url=redis_url, clickhouse_url=f"chdb://{tmp_path / 'ch'}")
    metrics = DetectorMetrics(CollectorRegistry())
    rows = [
        _row("window", segment=SEG, payload=encode(WINDOW)),
        _row("alert", segment=SEG, payload=encode(ALERT), traceparents=[TP]),
        _row("band", segment=SEG, payload=encode(BAND)),
        _row(
            "dlq", payload=b"{oops", reason="malformed_json: not an AdEvent JSON object", src_partition=2, src_offset=41
        ),
        _row("late", segment=SEG, count=3),
    ]
    writer = BatchWriter(settings, common, metrics)
    try:
        writer.write_rows(rows, 0, query_id="q1")
        writer.write_rows(rows, 0, query_id="q1")  # the same batch replayed after a crash
        ch = writer.clickhouse
        # exactly once without FINAL: the replay's inserts carry the same deduplication token
        assert ch.query(f"SELECT segment, impressions, clicks FROM {settings.metrics_table}") == [(SEG, 1000, 8)]
        assert ch.query(f"SELECT alert_id, status, rule FROM {settings.alerts_table}") == [
            (ALERT.alert_id, "firing", "ctr")
        ]
        assert ch.query(f"SELECT alert_type, expected, band_low, band_high FROM {settings.bands_table}") == [
            ("ctr_drop", 0.02, 0.015, 0.025)
        ]
        writer.write_rows(rows, 0, query_id="q2")  # batch 0 of another query (a new checkpoint) is new
        assert ch.query(f"SELECT count() FROM {settings.metrics_table}") == [(2,)]
    finally:
        writer.close()

    # Kafka has each batch's records again (consumers deduplicate by alert id)
    alerts = consume_all(kafka, settings.alerts_topic, expected=3, timeout_s=15)
    assert {decode(m.value(), Alert).alert_id for m in alerts} == {ALERT.alert_id}  # same id, never a new one
    assert all(m.key() == FP.encode() for m in alerts)
    (letter, _, _) = [decode(m.value(), DeadLetter) for m in consume_all(kafka, settings.dlq_topic, 3, timeout_s=15)]
    assert (letter.stage, letter.partition, letter.offset, letter.payload) == ("detector", 2, 41, "{oops")
    # the replay counted nothing; the other query's batch 0 counted once
    assert metrics.dead_letters_total.labels(reason="malformed_json")._value.get() == 2
    labels = {"rule": "ctr", "alert_type": "ctr_drop", "severity": "high", "status": "firing"}
    assert metrics.alerts_total.labels(**labels)._value.get() == 2
    assert metrics.late_events_total._value.get() == 6
    assert metrics.windows_closed_total._value.get() == 2

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    key = settings.redis_key_prefix + SEG
    assert r.hget(key, "impressions") == "1000" and float(r.hget(key, "ctr") or 0) == 0.008
    assert 0 < r.ttl(key) <= settings.redis_ttl_seconds


def test_helpers() -> None:
    assert reason_label("missing_field: event_id") == "missing_field"
    assert reason_label(None) == "unknown"
    (link,) = event_links([TP, "garbage"])
    assert format(link.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


UNSAMPLED = "00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203331-00"
OTHER = "00-2cf7651916cd43dd8448eb211c80319c-d7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("traceparents", "parent_trace", "linked"),
    [
        pytest.param([UNSAMPLED, TP, OTHER], TP, [UNSAMPLED, OTHER], id="first-sampled-is-the-parent"),
        pytest.param(["garbage", OTHER], OTHER, [], id="invalid-skipped"),
        pytest.param([UNSAMPLED], None, [UNSAMPLED], id="none-sampled-root-span"),
        pytest.param([], None, [], id="no-samples"),
    ],
)
def test_alert_parent_is_one_sampled_event(
    traceparents: list[str], parent_trace: str | None, linked: list[str]
) -> None:
    parent, links = alert_parent(traceparents)
    trace_of = lambda tp: tp.split("-")[1]  # noqa: E731
    if parent_trace is None:
        assert parent is None
    else:
        ctx = trace.get_current_span(parent).get_span_context()
        assert format(ctx.trace_id, "032x") == trace_of(parent_trace)
        assert format(ctx.span_id, "016x") == parent_trace.split("-")[2]
    assert [format(link.context.trace_id, "032x") for link in links] == [trace_of(tp) for tp in linked]


def test_the_alert_span_continues_the_events_trace(kafka: str, topic_factory: Callable[..., str]) -> None:
    """The span that sends an alert is a child of a sampled event's span: the same trace id."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = DetectorSettings(
        alerts_topic=topic_factory("alerts"),
        dlq_topic=topic_factory("dlq"),
        redis_enabled=False,
        clickhouse_enabled=False,
    )
    writer = BatchWriter(
        settings,
        CommonSettings(kafka_bootstrap=kafka),
        DetectorMetrics(CollectorRegistry()),
        tracer=provider.get_tracer("t"),
    )
    try:
        writer.write_rows([_row("alert", segment=SEG, payload=encode(ALERT), traceparents=[UNSAMPLED, TP, OTHER])], 0)
    finally:
        writer.close()
    (span,) = exporter.get_finished_spans()
    assert span.context is not None and span.parent is not None
    assert format(span.context.trace_id, "032x") == TP.split("-")[1]
    assert format(span.parent.span_id, "016x") == TP.split("-")[2]
    assert len(span.links) == 2


def test_progress_values_maps_streaming_progress() -> None:
    progress = {
        "timestamp": "2026-11-22T02:00:10.000Z",
        "inputRowsPerSecond": 1000.0,
        "processedRowsPerSecond": 2000.0,
        "durationMs": {"triggerExecution": 1500},
        "eventTime": {"watermark": "2026-11-22T02:00:00.000Z"},
        "stateOperators": [{"numRowsTotal": 4, "numRowsDroppedByWatermark": 2}],
        "observedMetrics": {"adwatch_input": {"rows": 10, "events": 9, "max_event_time_ms": 1795312805000}},
    }
    now = 1795312815.0
    values = progress_values(progress, now, last_batch_start_s=1795312805.0)
    assert values["batch_duration_seconds"] == 1.5
    assert values["trigger_interval_seconds"] == 5.0
    assert values["watermark_delay_seconds"] == 15.0
    assert values["state_rows"] == 4 and values["dropped_late"] == 2
    assert values["events"] == 9 and values["freshness_seconds"] == 10.0


def test_a_restarted_driver_reads_its_open_stream_episodes_back_from_the_alerts_history(
    kafka: str, redis_url: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """What the driver published (a lagging partition still firing, a silence already resolved) is
    read back from ClickHouse by the next driver, which resumes the open episode and resolves it."""
    settings = DetectorSettings(alerts_topic=topic_factory("alerts"), dlq_topic=topic_factory("dlq"))
    common = CommonSettings(kafka_bootstrap=kafka, redis_url=redis_url, clickhouse_url=f"chdb://{tmp_path / 'ch'}")
    t0, s = 1_790_000_000_000, 1000
    first = StreamHealth(StreamHealthSettings(no_data_ms=120 * s, partition_lag_ms=60 * s))

    def reading(at_s: int, **newest_s: int) -> BatchReading:
        parts = {int(k[1:]): PartitionBatch(10, t0 + v * s) for k, v in newest_s.items()}
        return BatchReading(at_ms=t0 + at_s * s, records=100, partitions=parts)

    writer = BatchWriter(settings, common, DetectorMetrics(CollectorRegistry()))
    try:
        writer.publish_stream_alerts(first.observe(reading(0, p0=0, p1=0)) + first.observe(reading(10, p0=100, p1=20)))
        writer.publish_stream_alerts(first.tick(t0 + 200 * s))  # no_data fires...
        writer.publish_stream_alerts(first.observe(reading(205, p0=205, p1=100)))  # ...and resolves
        assert sorted((a.alert_type, a.status) for a in writer.last_stream_alerts()) == [
            ("no_data", "resolved"),
            ("partition_lagging", "firing"),
        ]
        restarted = StreamHealth(StreamHealthSettings(no_data_ms=120 * s, partition_lag_ms=60 * s))
        assert restarted.resume(writer.last_stream_alerts()) == 1
        (resolved,) = restarted.observe(reading(300, p0=300, p1=300))
        assert (resolved.alert_type, resolved.status, resolved.segment_id) == (
            "partition_lagging",
            "resolved",
            "partition=1",
        )
        assert resolved.window_start_ms == t0 + 10 * s, "the episode's own start, from before the restart"
    finally:
        writer.close()
