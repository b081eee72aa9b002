"""Segments on any dimensions through the Spark job: real Spark, the embedded broker, Redis, chdb.

One run, three configured sets (``country``, ``country, ad_format``, ``campaign_id``):
- DE's CTR falls in all four formats at once: one alert on DE with its formats as contributors,
  the four format alerts folded into it (stored, not published);
- one campaign of US banner collapses for a few minutes, then recovers: it alerts on that
  campaign with its own fingerprint and resolves on its own; its sibling campaign never alerts;
- JP's only campaign stops after 8 minutes: its segments are evicted once idle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from adwatch.contracts import SEVERITIES, Alert, decode, make_fingerprint, segment_id
from adwatch.storage import make_clickhouse
from adwatch_detector.job import run_available
from adwatch_detector.metrics import DetectorMetrics
from adwatch_detector.sinks import BatchWriter
from adwatch_dev.testing import consume_all

from .conftest import SegmentTraffic, synth_events
from .test_job import make_settings

pytestmark = pytest.mark.spark

MINUTES = 44
DROP_FROM = 30
FORMATS = ("banner", "interstitial", "rewarded_video", "native")
TRAFFIC = [
    *(
        SegmentTraffic("DE", f, 700, 0.03, ctr_factor=0.3, factor_from_min=DROP_FROM, campaign_id="c-de")
        for f in FORMATS
    ),
    SegmentTraffic("US", "banner", 1500, 0.03, campaign_id="c-steady"),
    SegmentTraffic(
        "US", "banner", 1500, 0.03, ctr_factor=0.15, factor_from_min=DROP_FROM, factor_until_min=36, campaign_id="c-bad"
    ),
    SegmentTraffic("JP", "native", 200, 0.03, campaign_id="c-gone", active_until_min=8),  # leaves: evicted
]
IDLE_S = 15 * 60


def test_campaigns_and_countries_alert_as_one_problem_each(
    spark, kafka: str, redis_url: str, topic_factory: Callable[..., str], produce_events, tmp_path: Path
) -> None:
    topics = {"in": topic_factory("ad-events", 4), "alerts": topic_factory("alerts", 3), "dlq": topic_factory("dlq")}
    produce_events(topics["in"], synth_events(TRAFFIC, MINUTES, seed=11))
    settings, common = make_settings(
        tmp_path,
        kafka,
        redis_url,
        topics,
        segment_sets="country;country,ad_format;campaign_id",
        segment_idle_seconds=IDLE_S,
    )
    metrics = DetectorMetrics(CollectorRegistry())
    writer = BatchWriter(settings, common, metrics)
    try:
        run_available(spark, settings, common, writer, timeout_s=400)
        live = writer.census.live_segments
        context = json.loads(writer.context_property())
    finally:
        writer.close()

    # every segment of every set is tracked, and the budget is told how many there are; JP's
    # three segments (JP, JP native, c-gone) went idle and were evicted
    assert live == 2 + 5 + 3  # DE, US; 4 DE formats + US banner; three campaigns
    assert context["live"] == live and metrics.segments_tracked._value.get() == live
    assert metrics.segments_evicted_total._value.get() == 3

    ch = make_clickhouse(common.clickhouse_url)
    try:
        (n_published,) = ch.query(f"SELECT count() FROM {settings.alerts_table} FINAL WHERE parent_segment_id = ''")[0]
    finally:
        ch.close()
    published = [decode(m.value(), Alert) for m in consume_all(kafka, topics["alerts"], n_published, timeout_s=30)]
    assert len(published) == n_published >= 3
    firing = {(a.segment_id, a.alert_type) for a in published if a.status == "firing"}
    assert ("country=DE", "ctr_drop") in firing
    assert not any(a.dimensions.get("country") == "DE" and "ad_format" in a.dimensions for a in published), (
        "DE's formats are folded into DE's alert, not paged on their own"
    )
    de = next(a for a in published if a.segment_id == "country=DE" and a.status == "firing")
    assert {c.dimensions["ad_format"] for c in de.contributors} == set(FORMATS)
    assert abs(sum(c.share for c in de.contributors) - 1.0) < 0.01
    assert "of the drop from" in de.message  # its formats fire now or a window later: folded either way (below)

    bad = [a for a in published if a.segment_id == "campaign_id=c-bad"]
    # fires, may escalate as it worsens (a firing with previous_severity), resolves on its own
    episode = [a.status for a in bad if not (a.status == "firing" and a.previous_severity)]
    assert episode == ["firing", "resolved"], "the campaign resolves on its own"
    assert bad[-1].resolution == "recovered" and bad[-1].severity == max(
        (a.severity for a in bad), key=SEVERITIES.index
    ), "with the episode's peak severity"
    assert bad[0].fingerprint == make_fingerprint("ctr_drop", "campaign_id=c-bad")
    assert bad[0].dimensions == {"campaign_id": "c-bad"} and bad[0].country == ""
    assert not [a for a in published if a.segment_id == "campaign_id=c-steady"], "its sibling never alerts"
    assert len({a.alert_id for a in published}) == len(published)

    ch = make_clickhouse(common.clickhouse_url)
    try:
        folded = ch.query(
            f"SELECT segment_id, parent_segment_id FROM {settings.alerts_table} FINAL "
            "WHERE parent_segment_id != '' AND status = 'firing' ORDER BY segment_id"
        )
        dims = dict(
            ch.query(
                f"SELECT segment_id, dimensions FROM {settings.metrics_table} WHERE segment_id = 'campaign_id=c-bad' LIMIT 1"
            )
        )
    finally:
        ch.close()
    into = dict(folded)
    de_formats = {segment_id({"country": "DE", "ad_format": f}) for f in FORMATS}
    assert de_formats & set(into) and all(into[sid] == "country=DE" for sid in de_formats & set(into))
    # US's CTR fell only because US banner's did (its only format): the page is US banner's
    assert into.get("country=US") == segment_id({"country": "US", "ad_format": "banner"})
    assert dims == {"campaign_id=c-bad": {"campaign_id": "c-bad"}}

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    latest = r.hgetall(settings.redis_key_prefix + "campaign_id=c-bad")
    assert json.loads(latest["dimensions"]) == {"campaign_id": "c-bad"}


def test_bad_dimensions_are_dead_lettered_with_the_field_named(spark) -> None:
    """Unknown values are fine; a watched dimension missing, over-long or with control characters is not."""
    from pyspark.sql import functions as F

    from adwatch_detector.hierarchy import Hierarchy
    from adwatch_detector.job import EVENT_SCHEMA, dead_letter_reason

    base = {
        "event_id": "e",
        "event_time_ms": 1_790_000_000_000,
        "event_type": "impression",
        "country": "US",
        "ad_format": "hologram",  # a format nobody planned for: accepted
        "app_id": "com.brand.new",
        "placement_id": "p",
        "campaign_id": "c",
        "user_hash": "u",
        "dimensions": {"exchange": "x1"},
    }
    cases = {
        "ok": base,
        "no_exchange": {**base, "dimensions": {}},
        "long_app": {**base, "app_id": "a" * 257},
        "bell_campaign": {**base, "campaign_id": "c\u0007"},
    }
    hierarchy = Hierarchy.parse("country;exchange")
    df = spark.createDataFrame([(name, json.dumps(v)) for name, v in cases.items()], "name string, value string")
    e = F.from_json(F.col("value"), EVENT_SCHEMA)
    reasons = dict(
        df.select(
            "name", dead_letter_reason(e, F.col("value").cast("binary"), dimensions=hierarchy.dimensions).alias("r")
        ).collect()
    )
    assert reasons == {
        "ok": None,
        "no_exchange": "missing_dimension: exchange",
        "long_app": "invalid_dimension: app_id: longer than 256 characters",
        "bell_campaign": "invalid_dimension: campaign_id: control characters",
    }
