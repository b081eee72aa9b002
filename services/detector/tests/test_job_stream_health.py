"""Stream health through the Spark job against the embedded broker: a topic that goes silent pages
``no_data`` (the watermark frozen, no batch running) and recovers; a partition whose events trail
the other's pages ``partition_lagging`` naming it, and its dropped events are counted by partition."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from adwatch.contracts import AdEvent, Alert, decode, encode
from adwatch.kafka import make_producer
from adwatch.storage import make_clickhouse
from adwatch_detector.job import build_query, run_available
from adwatch_detector.metrics import DetectorMetrics, progress_dict
from adwatch_detector.sinks import BatchWriter
from adwatch_detector.stream_health import PARTITIONS_OBSERVATION
from adwatch_detector.watcher import StreamWatcher
from adwatch_dev.testing import TopicReader, poll_until

from .conftest import MINUTE_MS, T0_MS, SegmentTraffic, synth_events
from .test_job import make_settings

pytestmark = pytest.mark.spark


def _stream_alerts(reader: TopicReader) -> list[tuple[str, str, str]]:
    return [
        (a.alert_type, a.status, a.segment_id)
        for a in reader.decoded(Alert)
        if a.alert_type in ("no_data", "partition_lagging")
    ]


def _history(common_url: str, table: str, alert_type: str) -> list[tuple[str, str]]:
    ch = make_clickhouse(common_url)
    try:
        rows = ch.query(f"SELECT status, segment FROM {table} WHERE alert_type = '{alert_type}' ORDER BY 1")
    finally:
        ch.close()
    return [tuple(r) for r in rows]


def test_a_topic_that_goes_silent_pages_no_data_once_within_bounded_time_and_resolves_when_records_return(
    spark, kafka: str, redis_url: str, topic_factory: Callable[..., str], produce_events, tmp_path: Path
) -> None:
    """...and the stall's empty minutes are nobody's outage: US banner, warm after 14 minutes, pages
    no traffic_drop for the ten minutes the whole input was silent (one no_data page, not one per segment)."""
    topics = {"in": topic_factory("ad-events", 2), "alerts": topic_factory("alerts"), "dlq": topic_factory("dlq")}
    produce_events(topics["in"], synth_events([SegmentTraffic("US", "banner", 40, 0.02)], 14))
    settings, common = make_settings(
        tmp_path, kafka, redis_url, topics, no_data_seconds=4, trigger_seconds=0.5, partition_lag_seconds=0
    )
    metrics = DetectorMetrics(CollectorRegistry())
    writer = BatchWriter(settings, common, metrics)
    reader = TopicReader(kafka, topics["alerts"])
    stop = threading.Event()
    query = build_query(spark, settings, common, writer)
    try:
        watcher = StreamWatcher.build(query, settings, writer, metrics)
        thread = watcher.start(stop)
        poll_until(lambda: watcher.health.last_data_ms, "the first batch", timeout_s=120)
        # nothing more is produced: the watermark freezes and no batch runs, the driver's timer sees it
        poll_until(lambda: _stream_alerts(reader), "a no_data alert", timeout_s=60)
        assert _stream_alerts(reader) == [("no_data", "firing", "*")]
        (firing,) = [a for a in reader.decoded(Alert) if a.alert_type == "no_data"]
        assert 4000 < firing.detected_at_ms - firing.window_start_ms < 20_000, "paged within a bounded time"
        assert metrics.input_idle_seconds._value.get() > 4
        produce_events(
            topics["in"], synth_events([SegmentTraffic("US", "banner", 40, 0.02)], 3, T0_MS + 24 * MINUTE_MS)
        )
        poll_until(lambda: len(_stream_alerts(reader)) > 1, "the no_data resolve", timeout_s=60)
        assert _stream_alerts(reader) == [("no_data", "firing", "*"), ("no_data", "resolved", "*")]
        resolved = [a for a in reader.decoded(Alert) if a.alert_type == "no_data"][-1]
        assert (resolved.resolution, resolved.window_start_ms) == ("recovered", firing.window_start_ms)
        assert resolved.duration_ms > 4000
        poll_until(
            lambda: writer.census.latest_end_ms >= T0_MS + 25 * MINUTE_MS, "windows after the stall", timeout_s=60
        )
        traffic = [
            (a.alert_type, a.status, (a.window_start_ms - T0_MS) // MINUTE_MS, a.current, a.expected)
            for a in reader.decoded(Alert)
            if a.alert_type.startswith("traffic")
        ]
        assert traffic == []
        stop.set()
        thread.join(10)
    finally:
        stop.set()
        query.stop()
        writer.close()
        reader.close()
    assert _history(common.clickhouse_url, settings.alerts_table, "no_data") == [
        ("firing", "*"),
        ("resolved", "*"),
    ]


def test_a_partition_trailing_the_other_pages_partition_lagging_naming_it_and_its_late_events_are_counted(
    spark, kafka: str, redis_url: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """Partition 1's events run ten minutes behind partition 0's: the global watermark (5 s) drops
    them all after the first batch. That is reported, by partition, not only counted as late."""
    topics = {"in": topic_factory("ad-events", 2), "alerts": topic_factory("alerts"), "dlq": topic_factory("dlq")}
    events = [decode(v, AdEvent) for _, v, _ in synth_events([SegmentTraffic("US", "banner", 30, 0.0)], 20)]
    per_partition = len(events)
    producer = make_producer(kafka)
    for e in events:  # the same traffic on both partitions, partition 1's ten minutes late
        producer.produce(topics["in"], value=encode(e), partition=0)
        late = msgspec.structs.replace(e, event_time_ms=e.event_time_ms - 10 * MINUTE_MS)
        producer.produce(topics["in"], value=encode(late), partition=1)
    assert producer.flush(60) == 0
    settings, common = make_settings(
        tmp_path, kafka, redis_url, topics, max_offsets_per_trigger=per_partition // 3, partition_lag_seconds=60
    )
    metrics = DetectorMetrics(CollectorRegistry())
    writer = BatchWriter(settings, common, metrics)
    reader = TopicReader(kafka, topics["alerts"])
    try:
        query = run_available(spark, settings, common, writer, timeout_s=300)
        progress = [progress_dict(p) for p in query.recentProgress]
        watcher = StreamWatcher.build(query, settings, writer, metrics)
        published = watcher.poll()  # the driver's timer, once: every batch's progress at once
        assert [(a.alert_type, a.status, a.segment_id) for a in published] == [
            ("partition_lagging", "firing", "partition=1")
        ]
        poll_until(lambda: _stream_alerts(reader), "the alert on the topic", timeout_s=30)
        (alert,) = [a for a in reader.decoded(Alert) if a.alert_type == "partition_lagging"]
    finally:
        writer.close()
        reader.close()

    assert (alert.severity, alert.dimensions, alert.metric) == ("high", {"partition": "1"}, "lag_seconds")
    assert alert.current >= 590, alert.message
    assert f"{settings.input_topic} partition 1" in alert.message
    # Spark drops a batch's rows behind the previous batch's watermark: all partition 1 sent after the
    # first two batches is dropped, and counted by partition
    accepted_p1 = sum(p["observedMetrics"][PARTITIONS_OBSERVATION]["events_1"] for p in progress[:2])
    assert 0 < accepted_p1 < per_partition
    dropped_p1 = per_partition - accepted_p1
    assert metrics.partition_late_events_total.labels(partition="1")._value.get() == dropped_p1
    assert metrics.partition_late_events_total.labels(partition="0")._value.get() == 0
    assert metrics.partition_lag_seconds.labels(partition="1")._value.get() >= 590
    assert metrics.partition_lag_seconds.labels(partition="0")._value.get() == 0
    assert watcher.health.late_total == {1: dropped_p1}
    assert _history(common.clickhouse_url, settings.alerts_table, "partition_lagging") == [("firing", "partition=1")]
