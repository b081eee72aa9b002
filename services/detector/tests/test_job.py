"""The Spark job end to end in-process: real Spark local[2], the embedded broker, Redis, chdb."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from adwatch.config import CommonSettings
from adwatch.contracts import Alert, DeadLetter, decode, segment_key
from adwatch.kafka import header_value
from adwatch.storage import make_clickhouse
from adwatch_detector.job import run_available
from adwatch_detector.metrics import DetectorMetrics, ProgressListener
from adwatch_detector.settings import DetectorSettings
from adwatch_detector.sinks import BatchWriter
from adwatch_dev.testing import consume_all, poll_until, unique

from .conftest import MINUTE_MS, T0_MS, SegmentTraffic, synth_events

pytestmark = pytest.mark.spark

US, DE = segment_key("US", "banner"), segment_key("DE", "native")
HISTORY_MIN = 40
DROP_FROM_MIN = 36
SEGMENTS = [
    SegmentTraffic("US", "banner", 2500, 0.02, ctr_factor=0.4, factor_from_min=DROP_FROM_MIN),
    SegmentTraffic("DE", "native", 1500, 0.03),
]


def make_settings(tmp: Path, kafka: str, redis_url: str, topics: dict[str, str], **over: object):
    settings = DetectorSettings(
        checkpoint_dir=str(tmp / "checkpoint"),
        input_topic=topics["in"],
        alerts_topic=topics["alerts"],
        dlq_topic=topics["dlq"],
        redis_key_prefix=unique("adwatch:segment") + ":",
        query_name=unique("detector").replace("-", "_"),
        source="python",
        **over,
    )
    common = CommonSettings(kafka_bootstrap=kafka, redis_url=redis_url, clickhouse_url=f"chdb://{tmp / 'ch'}")
    return settings, common


def test_backfill_with_ctr_drop_fires_exactly_one_alert_and_fills_the_stores(
    spark, kafka: str, redis_url: str, topic_factory: Callable[..., str], produce_events, tmp_path: Path
) -> None:
    topics = {"in": topic_factory("ad-events", 6), "alerts": topic_factory("alerts", 3), "dlq": topic_factory("dlq")}
    records = synth_events(SEGMENTS, HISTORY_MIN)
    malformed = [
        (None, b"{not json", None),
        (
            None,
            b'{"event_id": "x1", "event_time_ms": 1790000000000, "event_type": "impression", "country": "US",'
            b' "ad_format": "banner", "app_id": "a\\u0007", "placement_id": "p", "campaign_id": "c", "user_hash": "u"}',
            None,
        ),
        (None, b'{"event_id": "x2", "event_type": "click"}', None),
    ]
    produce_events(topics["in"], malformed + records)
    settings, common = make_settings(tmp_path, kafka, redis_url, topics)
    metrics = DetectorMetrics(CollectorRegistry())
    dead_before = sum(s.value for s in metrics.dead_letters_total.collect()[0].samples if s.name.endswith("_total"))
    provider, spans = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    writer = BatchWriter(settings, common, metrics, tracer=provider.get_tracer("test"))
    events_before = metrics.events_total._value.get()
    listener = ProgressListener(metrics, settings.query_name)
    spark.streams.addListener(listener)
    try:
        run_available(spark, settings, common, writer, timeout_s=300)
        # progress reaches the listener asynchronously
        poll_until(lambda: metrics.events_total._value.get() - events_before >= len(records), "progress events")
    finally:
        spark.streams.removeListener(listener)
        writer.close()
    assert metrics.events_total._value.get() - events_before == len(records)
    assert metrics.windows_closed_total._value.get() >= 2 * (HISTORY_MIN - 1)

    alerts = [decode(m.value(), Alert) for m in consume_all(kafka, topics["alerts"], expected=1, timeout_s=20)]
    assert [(a.alert_type, a.status, a.country, a.ad_format) for a in alerts] == [
        ("ctr_drop", "firing", "US", "banner")
    ]
    assert alerts[0].window_start_ms >= T0_MS + DROP_FROM_MIN * MINUTE_MS
    msgs = consume_all(kafka, topics["alerts"], expected=1, timeout_s=5)
    assert msgs[0].key() == f"ctr_drop:{US}".encode()
    traceparent = header_value(msgs[0].headers(), "traceparent")
    assert traceparent is not None
    (span,) = spans.get_finished_spans()
    assert span.name == f"send {topics['alerts']}" and span.kind == SpanKind.PRODUCER
    assert traceparent.decode().split("-")[1] == format(span.context.trace_id, "032x")
    assert span.attributes["messaging.destination.name"] == topics["alerts"]
    assert span.attributes["adwatch.segment"] == US
    assert span.attributes["adwatch.rule"] == "ctr_drop"
    assert 0 < len(span.links) <= settings.trace_samples

    letters = [decode(m.value(), DeadLetter) for m in consume_all(kafka, topics["dlq"], expected=3, timeout_s=20)]
    reasons = sorted(d.reason.split(":")[0] for d in letters)
    assert reasons == ["invalid_dimension", "malformed_json", "missing_field"]
    dead_after = sum(s.value for s in metrics.dead_letters_total.collect()[0].samples if s.name.endswith("_total"))
    assert dead_after - dead_before == 3

    r = redis.Redis.from_url(redis_url)
    h = r.hgetall(settings.redis_key_prefix + US)
    assert int(h[b"impressions"]) > 0
    assert r.ttl(settings.redis_key_prefix + US) > 0

    ch = make_clickhouse(common.clickhouse_url)
    try:
        rows = ch.query(f"SELECT segment, count() FROM {settings.metrics_table} GROUP BY segment ORDER BY segment")
        # every window but the last one per segment has closed (the watermark never passes the last)
        assert rows == sorted([(DE, HISTORY_MIN - 1), (US, HISTORY_MIN - 1)])
        assert ch.query(f"SELECT alert_type, status FROM {settings.alerts_table}") == [("ctr_drop", "firing")]
        # the rules' bands, once per window and rule, without FINAL: the segment dashboard draws them
        ((bands, distinct, ctr_windows),) = ch.query(
            f"SELECT count(), uniqExact(segment, alert_type, window_start_ms), "
            f"uniqExactIf(window_start_ms, segment = '{US}' AND alert_type = 'ctr_drop') FROM {settings.bands_table}"
        )
        assert bands == distinct and ctr_windows == HISTORY_MIN - 1
    finally:
        ch.close()


def test_restart_from_checkpoint_keeps_state_and_loses_or_repeats_nothing(
    spark, kafka: str, redis_url: str, topic_factory: Callable[..., str], produce_events, tmp_path: Path
) -> None:
    from adwatch_detector.job import build_query

    topics = {"in": topic_factory("ad-events", 6), "alerts": topic_factory("alerts", 3), "dlq": topic_factory("dlq")}
    first, total, drop = 24, 31, 25  # the drop comes after the restart: only restored baselines can see it
    segments = [
        SegmentTraffic("US", "banner", 2000, 0.02, ctr_factor=0.4, factor_from_min=drop),
        SegmentTraffic("DE", "native", 1000, 0.03),
    ]
    records = synth_events(segments, total, seed=11)
    cut = next(i for i, (_, v, _) in enumerate(records) if _time(v) >= T0_MS + first * MINUTE_MS)
    produce_events(topics["in"], records[:cut])
    settings, common = make_settings(tmp_path, kafka, redis_url, topics, max_offsets_per_trigger=25_000)
    metrics = DetectorMetrics(CollectorRegistry())

    writer = BatchWriter(settings, common, metrics)
    query = build_query(spark, settings, common, writer, trigger={"processingTime": "1 second"})
    try:
        poll_until(lambda: (query.lastProgress or {}).get("batchId", -1) >= 1, "two micro-batches", timeout_s=180)
    finally:
        query.stop()  # mid-stream: the rest of the history is still unread
        writer.close()
    assert query.exception() is None

    produce_events(topics["in"], records[cut:])
    writer = BatchWriter(settings, common, metrics)
    try:
        run_available(spark, settings, common, writer, timeout_s=300)
    finally:
        writer.close()

    msgs = consume_all(kafka, topics["alerts"], expected=2, timeout_s=10)
    alerts = [decode(m.value(), Alert) for m in msgs]
    assert [(a.alert_type, a.status, a.country, a.ad_format) for a in alerts] == [
        ("ctr_drop", "firing", "US", "banner")
    ]
    ch = make_clickhouse(common.clickhouse_url)
    try:
        for segment in (US, DE):
            starts = [
                r[0]
                for r in ch.query(
                    f"SELECT window_start_ms FROM {settings.metrics_table} WHERE segment = '{segment}' ORDER BY 1"
                )
            ]
            assert starts == [T0_MS + m * MINUTE_MS for m in range(total - 1)]
    finally:
        ch.close()


def _time(value: bytes) -> int:
    from adwatch.contracts import AdEvent

    return decode(value, AdEvent).event_time_ms


def test_one_event_stamped_an_hour_ahead_is_dead_lettered_and_closes_no_window_early(
    spark, kafka: str, redis_url: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """A producer whose clock is an hour ahead for one event: the watermark must not jump with it."""
    from adwatch.contracts import AdEvent, encode
    from adwatch.kafka import make_producer

    topics = {"in": topic_factory("ad-events", 2), "alerts": topic_factory("alerts"), "dlq": topic_factory("dlq")}
    minutes, poisoned_at = 12, 5
    records = synth_events([SegmentTraffic("US", "banner", 600, 0.02), SegmentTraffic("DE", "native", 400, 0.03)], 12)
    cut = next(i for i, (_, v, _) in enumerate(records) if _time(v) >= T0_MS + poisoned_at * MINUTE_MS)
    honest = decode(records[cut][1], AdEvent)
    ahead = msgspec.structs.replace(honest, event_id="ahead", event_time_ms=honest.event_time_ms + 3_600_000)
    producer = make_producer(kafka)
    for i, (_, value, _) in enumerate([*records[:cut], (None, encode(ahead), None), *records[cut:]]):
        # record timestamps as a live producer sets them; the poisoned one carries the true send time
        stamp = honest.event_time_ms if value == encode(ahead) else _time(value)
        producer.produce(topics["in"], value=value, partition=i % 2, timestamp=stamp)
    assert producer.flush(60) == 0
    settings, common = make_settings(tmp_path, kafka, redis_url, topics)
    metrics = DetectorMetrics(CollectorRegistry())
    late_before = metrics.late_events_total._value.get()
    writer = BatchWriter(settings, common, metrics)
    try:
        run_available(spark, settings, common, writer, timeout_s=300)
    finally:
        writer.close()

    (letter,) = [decode(m.value(), DeadLetter) for m in consume_all(kafka, topics["dlq"], expected=1, timeout_s=20)]
    assert letter.reason.startswith("future_event_time: 3600 s ahead"), letter.reason
    assert metrics.late_events_total._value.get() == late_before
    impressions = Counter(
        (e.country, (e.event_time_ms - T0_MS) // MINUTE_MS)
        for e in (decode(v, AdEvent) for _, v, _ in records)
        if e.event_type == "impression"
    )
    ch = make_clickhouse(common.clickhouse_url)
    try:
        rows = ch.query(f"SELECT segment, window_start_ms, impressions FROM {settings.metrics_table} FINAL")
    finally:
        ch.close()
    # every window but the last closed, each with all its impressions: nothing early, nothing lost
    assert sorted(rows) == sorted(
        (
            segment_key(country, "banner" if country == "US" else "native"),
            T0_MS + m * MINUTE_MS,
            impressions[country, m],
        )
        for country in ("US", "DE")
        for m in range(minutes - 1)
    )


def test_a_segment_that_goes_dark_pages_traffic_drop_while_the_others_flow(
    spark, kafka: str, redis_url: str, topic_factory: Callable[..., str], produce_events, tmp_path: Path
) -> None:
    """An outage sends no events at all: the job must judge the silent minutes, not wait for traffic to return."""
    topics = {"in": topic_factory("ad-events", 2), "alerts": topic_factory("alerts"), "dlq": topic_factory("dlq")}
    minutes, dark_from = 30, 24
    records = synth_events([SegmentTraffic("US", "banner", 800, 0.02), SegmentTraffic("DE", "native", 400, 0.03)], 30)
    dark_ms = T0_MS + dark_from * MINUTE_MS
    records = [r for r in records if not (b'"DE"' in r[1] and _time(r[1]) >= dark_ms)]
    produce_events(topics["in"], records)
    settings, common = make_settings(tmp_path, kafka, redis_url, topics)
    writer = BatchWriter(settings, common, DetectorMetrics(CollectorRegistry()))
    try:
        run_available(spark, settings, common, writer, timeout_s=300)
    finally:
        writer.close()

    alerts = [decode(m.value(), Alert) for m in consume_all(kafka, topics["alerts"], expected=1, timeout_s=20)]
    assert [(a.alert_type, a.status, a.country, a.window_start_ms) for a in alerts] == [
        ("traffic_drop", "firing", "DE", dark_ms)
    ]
    ch = make_clickhouse(common.clickhouse_url)
    try:
        rows = ch.query(
            f"SELECT window_start_ms, impressions FROM {settings.metrics_table} FINAL WHERE segment = '{DE}' ORDER BY 1"
        )
    finally:
        ch.close()
    silent = [start for start, impressions in rows if impressions == 0]
    assert silent == [T0_MS + m * MINUTE_MS for m in range(dark_from, minutes - 1)], "one empty window per dark minute"
