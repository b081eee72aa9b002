"""Hard edges on event time, from below: an event stamped far before its Kafka record is dead-lettered
with its age (through the Spark job against the embedded broker)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from adwatch.contracts import AdEvent, DeadLetter, decode, encode, segment_key
from adwatch.kafka import make_producer
from adwatch.storage import make_clickhouse
from adwatch_detector.job import run_available
from adwatch_detector.metrics import DetectorMetrics
from adwatch_detector.settings import DetectorSettings
from adwatch_dev.testing import consume_all

from .conftest import MINUTE_MS, T0_MS, SegmentTraffic, synth_events
from .test_job import make_settings

pytestmark = pytest.mark.spark

DAY_MS = 86_400_000


def test_the_retention_horizon_is_off_by_default_so_a_backfill_still_reads() -> None:
    """A backfill produced today carries record timestamps days after its events (the other job
    tests produce theirs so): a horizon is for a live stream, set on purpose."""
    assert DetectorSettings().max_event_age_seconds == 0
    assert DetectorSettings(max_event_age_seconds=86_400).max_event_age_seconds == 86_400
    with pytest.raises(ValueError, match="max_event_age_seconds"):
        DetectorSettings(max_event_age_seconds=-1)


def test_an_event_stamped_a_day_before_its_record_is_dead_lettered_with_its_age_and_counted(
    spark, kafka: str, redis_url: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """One event 25 h older than its record (a producer's clock or a re-sent archive), in the first
    micro-batch (no watermark yet): it must not open a window a day old nor count as late."""
    from adwatch_detector.sinks import BatchWriter

    topics = {"in": topic_factory("ad-events", 2), "alerts": topic_factory("alerts"), "dlq": topic_factory("dlq")}
    minutes, stale_at = 8, 3
    records = synth_events([SegmentTraffic("US", "banner", 400, 0.02)], minutes)
    times = [decode(v, AdEvent).event_time_ms for _, v, _ in records]
    cut = next(i for i, t in enumerate(times) if t >= T0_MS + stale_at * MINUTE_MS)
    honest = decode(records[cut][1], AdEvent)
    old_ms = 25 * 3_600_000
    stale = encode(msgspec.structs.replace(honest, event_id="stale", event_time_ms=honest.event_time_ms - old_ms))
    producer = make_producer(kafka)
    stream = [*(v for _, v, _ in records[:cut]), stale, *(v for _, v, _ in records[cut:])]
    for i, value in enumerate(stream):
        stamp = honest.event_time_ms if value == stale else decode(value, AdEvent).event_time_ms
        producer.produce(topics["in"], value=value, partition=i % 2, timestamp=stamp)
    assert producer.flush(60) == 0
    settings, common = make_settings(tmp_path, kafka, redis_url, topics, max_event_age_seconds=DAY_MS // 1000)
    metrics = DetectorMetrics(CollectorRegistry())
    writer = BatchWriter(settings, common, metrics)
    try:
        run_available(spark, settings, common, writer, timeout_s=300)
    finally:
        writer.close()

    (letter,) = [decode(m.value(), DeadLetter) for m in consume_all(kafka, topics["dlq"], expected=1, timeout_s=20)]
    assert letter.reason == f"stale_event_time: {old_ms // 1000} s old", letter.reason
    assert metrics.dead_letters_total.labels(reason="stale_event_time")._value.get() == 1
    impressions = Counter(
        (t - T0_MS) // MINUTE_MS
        for t, (_, v, _) in zip(times, records, strict=True)
        if decode(v, AdEvent).event_type == "impression"
    )
    ch = make_clickhouse(common.clickhouse_url)
    try:
        rows = ch.query(f"SELECT segment, window_start_ms, impressions FROM {settings.metrics_table} FINAL")
    finally:
        ch.close()
    us = segment_key("US", "banner")
    # every window of the real traffic but the last closed, complete; no window a day old
    assert sorted(rows) == [(us, T0_MS + m * MINUTE_MS, impressions[m]) for m in range(minutes - 1)]
    assert metrics.late_events_total._value.get() == 0


@pytest.mark.parametrize(
    ("age_s", "max_age_s", "reason"),
    [
        pytest.param(23 * 3600, 86_400, None, id="inside-the-horizon"),
        pytest.param(86_400, 86_400, None, id="at-the-horizon"),
        pytest.param(86_401, 86_400, "stale_event_time: 86401 s old", id="past-the-horizon"),
        pytest.param(30 * 86_400, 0, None, id="zero-turns-it-off"),
        pytest.param(-200, 86_400, None, id="ahead-within-the-skew"),
    ],
)
def test_the_retention_horizon_is_measured_from_the_record_timestamp(
    spark, age_s: int, max_age_s: int, reason: str | None
) -> None:
    import json

    from pyspark.sql import functions as F

    from adwatch_detector.job import EVENT_SCHEMA, dead_letter_reason

    record_ms = 1_790_000_000_000
    event = {
        "event_id": "e",
        "event_time_ms": record_ms - age_s * 1000,
        "event_type": "impression",
        "country": "US",
        "ad_format": "banner",
        "app_id": "a",
        "placement_id": "p",
        "campaign_id": "c",
        "user_hash": "u",
    }
    df = spark.createDataFrame([(json.dumps(event), record_ms)], "value string, record_ms long")
    e = F.from_json(F.col("value"), EVENT_SCHEMA)
    column = dead_letter_reason(
        e, F.col("value").cast("binary"), F.col("record_ms"), 300_000, max_age_ms=max_age_s * 1000
    )
    assert df.select(column.alias("r")).collect()[0]["r"] == reason
