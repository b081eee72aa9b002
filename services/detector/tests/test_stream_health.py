"""The driver's stream health (no_data, partition_lagging) as a pure state machine, and its
watcher against a fake query: no Spark, no broker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adwatch.contracts import Alert, alert_title, describe_segment, parse_segment_id
from adwatch_detector.metrics import DetectorMetrics
from adwatch_detector.stream_health import (
    PARTITIONS_OBSERVATION,
    BatchReading,
    PartitionBatch,
    StreamHealth,
    StreamHealthSettings,
    reading_from_progress,
)
from adwatch_detector.watcher import StreamWatcher

S = 1000
T0 = 1_790_000_000_000
SETTINGS = StreamHealthSettings(no_data_ms=120 * S, partition_lag_ms=60 * S, topic="ad-events")


def batch(at_s: float, records: int = 100, **newest_s: float) -> BatchReading:
    """A batch read at ``at_s`` whose partitions' newest events are at ``p<n>=<seconds>``."""
    parts = {int(k[1:]): PartitionBatch(events=10, max_event_ms=T0 + int(v * S)) for k, v in newest_s.items()}
    return BatchReading(at_ms=T0 + int(at_s * S), records=records, partitions=parts)


def summary(alerts: list[Alert]) -> list[tuple[str, str, str]]:
    return [(a.alert_type, a.status, a.segment_id) for a in alerts]


def run(steps: list[BatchReading | float], settings: StreamHealthSettings = SETTINGS) -> list[Alert]:
    """Feed batches, and ticks (a bare number: processing-time seconds), in order."""
    health = StreamHealth(settings)
    out: list[Alert] = []
    for step in steps:
        out += health.observe(step) if isinstance(step, BatchReading) else health.tick(T0 + int(step * S))
    return out


def test_a_silent_topic_fires_no_data_once_then_resolves_once_when_records_flow_again() -> None:
    steps: list[BatchReading | float] = [batch(0, p0=0), 60, 119, 121, 150, 300, batch(310, p0=310), 400]
    alerts = run(steps)
    assert summary(alerts) == [("no_data", "firing", "*"), ("no_data", "resolved", "*")]
    firing, resolved = alerts
    assert (firing.severity, firing.metric, firing.dimensions, firing.rule) == ("critical", "events", {}, "stream")
    assert (firing.current, firing.expected) == (0, 100), "no record, where the last batch read 100"
    assert firing.window_start_ms == T0, "the episode starts with the silence, at the last record read"
    assert firing.detected_at_ms == T0 + 121 * S
    assert "no record read for 121 s" in firing.message and "ad-events" in firing.message
    assert (resolved.resolution, resolved.duration_ms) == ("recovered", 310 * S)
    assert resolved.fingerprint == firing.fingerprint == "no_data:*"
    assert resolved.alert_id != firing.alert_id


def test_the_alert_ids_are_the_same_on_a_replay_of_the_same_inputs() -> None:
    steps: list[BatchReading | float] = [
        batch(0, p0=0, p1=0),
        batch(10, p0=100, p1=20),
        200,
        batch(210, p0=210, p1=210),
    ]
    first, again = run(steps), run(steps)
    assert [a.alert_id for a in first] == [a.alert_id for a in again]
    assert len({a.alert_id for a in first}) == len(first) == 4, summary(first)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param([5.0, 500.0], [], id="nothing-judged-before-the-first-batch"),
        pytest.param([batch(0), batch(100), batch(200), 310], [], id="steady-batches-never-fire"),
        pytest.param(
            [batch(0), batch(10, records=0), 125], [("no_data", "firing", "*")], id="empty-batches-are-silence"
        ),
        pytest.param(
            [batch(0), 100, 200, 300, 400, batch(500), batch(501), 800],
            [("no_data", "firing", "*"), ("no_data", "resolved", "*"), ("no_data", "firing", "*")],
            id="a-second-silence-is-a-second-episode",
        ),
    ],
)
def test_no_data_table(steps: list[BatchReading | float], expected: list[tuple[str, str, str]]) -> None:
    assert summary(run(steps)) == expected


def test_a_running_batch_on_new_data_is_not_silence() -> None:
    health = StreamHealth(SETTINGS)
    health.observe(batch(0))
    assert health.tick(T0 + 200 * S, data_pending=True) == []
    assert health.tick(T0 + 300 * S) == [], "the silence is timed from the end of the long batch"
    assert summary(health.tick(T0 + 321 * S)) == [("no_data", "firing", "*")]


def test_one_partition_trailing_the_others_fires_naming_it_and_resolves_when_it_catches_up() -> None:
    steps: list[BatchReading | float] = [
        batch(0, p0=0, p1=0, p2=0),
        batch(10, p0=70, p1=70, p2=5),  # p2 65 s behind
        batch(20, p0=80, p1=80, p2=30),  # still 50 s behind: no second alert
        batch(30, p0=90, p1=90, p2=55),  # 35 s behind: not yet within half the threshold
        batch(40, p0=100, p1=100, p2=90),  # 10 s: caught up
    ]
    alerts = run(steps)
    assert summary(alerts) == [
        ("partition_lagging", "firing", "partition=2"),
        ("partition_lagging", "resolved", "partition=2"),
    ]
    firing, resolved = alerts
    assert (firing.severity, firing.metric, firing.current, firing.expected) == ("high", "lag_seconds", 65.0, 60.0)
    assert firing.dimensions == {"partition": "2"} == parse_segment_id(firing.segment_id)
    assert describe_segment(firing.dimensions) == "partition=2"
    assert "ad-events partition 2" in firing.message and alert_title(firing.alert_type) in firing.message
    assert (resolved.resolution, resolved.duration_ms, resolved.current) == ("recovered", 30 * S, 10.0)


def test_every_partition_lagging_alone_is_its_own_episode_and_a_whole_stream_that_stops_is_not_a_lag() -> None:
    steps: list[BatchReading | float] = [
        batch(0, p0=100, p1=100, p2=100),
        batch(10, p0=200, p1=120, p2=110),  # p1 and p2 fall behind together
        400,  # then the whole stream stops: the lead stops too
    ]
    alerts = run(steps)
    assert sorted(summary(alerts)) == [
        ("no_data", "firing", "*"),
        ("partition_lagging", "firing", "partition=1"),
        ("partition_lagging", "firing", "partition=2"),
    ]
    assert len({a.fingerprint for a in alerts}) == 3


def test_late_events_keep_a_partition_lagging_and_are_counted() -> None:
    health = StreamHealth(SETTINGS)
    health.observe(batch(0, p0=0, p1=0))
    (firing,) = health.observe(
        BatchReading(
            T0 + 10 * S,
            20,
            partitions={0: PartitionBatch(10, T0 + 100 * S), 1: PartitionBatch(10, T0 + 20 * S, late=7)},
        )
    )
    assert (firing.segment_id, firing.volume) == ("partition=1", 7)
    assert "7 events dropped as late" in firing.message
    late_again = BatchReading(
        T0 + 20 * S, 5, partitions={0: PartitionBatch(1, T0 + 100 * S), 1: PartitionBatch(1, T0 + 95 * S, late=3)}
    )
    assert health.observe(late_again) == [], "caught up in event time but still dropping: not resolved"
    assert health.late_total == {1: 10}
    assert summary(health.observe(batch(30, p0=100, p1=100))) == [("partition_lagging", "resolved", "partition=1")]


@pytest.mark.parametrize(
    ("late", "expected"),
    [
        pytest.param(80, [("partition_lagging", "firing", "partition=1")], id="most-dropped-fires"),
        pytest.param(3, [], id="a-few-stragglers-do-not"),
    ],
)
def test_a_partition_mostly_dropped_as_late_fires_though_within_the_lag_threshold(
    late: int, expected: list[tuple[str, str, str]]
) -> None:
    """30 s behind (under the 60 s threshold) but past the few seconds of watermark: its events are lost."""
    health = StreamHealth(SETTINGS)
    health.observe(batch(0, p0=0, p1=0))
    parts = {0: PartitionBatch(100, T0 + 100 * S), 1: PartitionBatch(100, T0 + 70 * S, late=late)}
    assert summary(health.observe(BatchReading(T0 + 10 * S, 200, partitions=parts))) == expected


def test_an_idle_partition_is_not_lagging() -> None:
    """A partition that delivered nothing in a batch holds nothing back and loses nothing (Spark's
    watermark is the newest event time of all partitions): it neither fires nor resolves then."""
    steps: list[BatchReading | float] = [
        batch(0, p0=0, p1=0),
        BatchReading(T0 + 90 * S, 10, partitions={0: PartitionBatch(10, T0 + 90 * S)}),  # p1 idle
        batch(95, p0=95, p1=95),
    ]
    assert run(steps) == []


def test_a_zero_threshold_turns_a_check_off() -> None:
    off = StreamHealthSettings(no_data_ms=0, partition_lag_ms=0)
    assert run([batch(0, p0=0, p1=0), batch(10, p0=1000, p1=0), 10_000], off) == []


def _progress(at: str, rows: int, watermark: str, dropped: int, **observed: Any) -> dict[str, Any]:
    return {
        "timestamp": at,
        "numInputRows": rows,
        "eventTime": {"watermark": watermark},
        "stateOperators": [{"numRowsDroppedByWatermark": dropped}],
        "observedMetrics": {PARTITIONS_OBSERVATION: observed},
    }


def test_a_progress_report_becomes_a_reading_its_dropped_rows_put_down_to_the_partition_behind() -> None:
    progress = _progress(
        "2026-12-04T21:00:10.000Z",
        40,
        "2026-12-04T21:00:00.000Z",
        dropped=2 * 9,  # two segment sets: 9 events
        events_0=20,
        max_0=1_796_418_020_000,
        min_0=1_796_418_001_000,
        events_1=20,
        max_1=1_796_417_500_000,
        min_1=1_796_417_400_000,  # behind the watermark (21:00:00 = 1_796_418_000_000)
    )
    reading = reading_from_progress(progress, rows_per_event=2)
    assert reading.at_ms == 1_796_418_010_000
    assert reading.watermark_ms == 1_796_418_000_000
    assert reading.records == 40
    assert reading.partitions == {
        0: PartitionBatch(20, 1_796_418_020_000, 0),
        1: PartitionBatch(20, 1_796_417_500_000, 9),
    }
    # Spark drops by the previous batch's watermark: partition 1's oldest event was not behind that one
    earlier = reading_from_progress(progress, rows_per_event=2, late_before_ms=1_796_417_000_000)
    assert earlier.partitions[1].late == 0


def test_an_idle_progress_report_reads_as_an_empty_batch() -> None:
    reading = reading_from_progress({"timestamp": "2026-12-04T21:00:10.000Z", "numInputRows": 0})
    assert (reading.records, reading.partitions) == (0, {})


@dataclass
class FakeQuery:
    progress: list[dict[str, Any]] = field(default_factory=list)
    busy: bool = False

    @property
    def recentProgress(self) -> list[dict[str, Any]]:
        return list(self.progress)

    @property
    def status(self) -> dict[str, Any]:
        return {"isTriggerActive": self.busy, "isDataAvailable": self.busy}


class FlakyPublisher:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.published: list[Alert] = []

    def publish_stream_alerts(self, alerts: list[Alert]) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("broker down")
        self.published += alerts

    def last_stream_alerts(self) -> list[Alert]:
        return self.published


def test_the_watcher_feeds_each_report_once_ticks_on_the_clock_and_retries_a_failed_publish() -> None:
    at = "2026-12-04T21:00:00.000Z"
    query = FakeQuery([_progress(at, 10, "", 0, events_0=10, max_0=1, min_0=1)])
    publisher, now = FlakyPublisher(failures=1), [1_796_418_000.0]
    metrics = DetectorMetrics(CollectorRegistry())
    health = StreamHealth(StreamHealthSettings(no_data_ms=5 * S, partition_lag_ms=60 * S))
    watcher = StreamWatcher(query, health, publisher, metrics, clock=lambda: now[0])
    assert watcher.poll() == []
    assert watcher.poll() == [], "the same report is not fed twice"
    now[0] += 6
    with pytest.raises(RuntimeError):
        watcher.poll()
    assert metrics.input_idle_seconds._value.get() == 6
    (again,) = watcher.poll()
    assert (again.alert_type, again.status) == ("no_data", "firing")
    assert publisher.published == [again]
    assert watcher.poll() == []
    query.progress.append(_progress("2026-12-04T21:00:07.000Z", 3, "", 0, events_0=3, max_0=2, min_0=2))
    (resolved,) = watcher.poll()
    assert (resolved.status, resolved.duration_ms) == ("resolved", 7 * S)
    assert metrics.partition_lag_seconds.labels(partition="0")._value.get() == 0


def test_a_restarted_driver_takes_up_its_firing_episodes_and_resolves_each_once_with_the_ids_of_one_run() -> None:
    """A driver killed mid-episode must not leave its page open for ever: the new one resumes the
    episodes its predecessor published as firing (their last stream alert per fingerprint), and
    resolves them with the alert ids an unrestarted driver would have minted."""
    before: list[BatchReading | float] = [batch(0, p0=0, p1=0), batch(10, p0=100, p1=20), 200]
    after: list[BatchReading | float] = [batch(210, p0=210, p1=210)]
    whole = run(before + after)
    published = run(before)
    assert summary(published) == [("partition_lagging", "firing", "partition=1"), ("no_data", "firing", "*")]

    restarted = StreamHealth(SETTINGS)
    assert restarted.resume([*published, Alert(**{**_fields(published[0]), "rule": "ctr", "fingerprint": "x:y"})]) == 2
    resumed = [a for step in after if isinstance(step, BatchReading) for a in restarted.observe(step)]
    assert summary(resumed) == [("no_data", "resolved", "*"), ("partition_lagging", "resolved", "partition=1")]
    assert {a.alert_id for a in resumed} == {a.alert_id for a in whole if a.status == "resolved"}
    assert StreamHealth(SETTINGS).resume(whole) == 0, "a resolved episode is not taken up"


def _fields(alert: Alert) -> dict[str, Any]:
    return {f: getattr(alert, f) for f in alert.__struct_fields__}


def test_a_moment_of_lag_does_not_page_a_lasting_one_does_and_an_extreme_one_at_once() -> None:
    """A producer backfilling far faster than real time skews a batch's partitions for a moment;
    the driver pages a lag that lasts ``partition_lag_for_ms``, or one beyond EXTREME_LAG x the limit."""
    lasting = StreamHealthSettings(no_data_ms=0, partition_lag_ms=60 * S, partition_lag_for_ms=60 * S)
    moment = [batch(0, p0=0, p1=0), batch(2, p0=200, p1=90), batch(4, p0=204, p1=204), batch(70, p0=270, p1=270)]
    assert run(moment, lasting) == []
    lasts = [batch(0, p0=0, p1=0), batch(2, p0=200, p1=90), batch(40, p0=240, p1=130), batch(63, p0=263, p1=150)]
    (firing,) = run(lasts, lasting)
    assert (firing.alert_type, firing.segment_id, firing.window_start_ms) == (
        "partition_lagging",
        "partition=1",
        T0 + 2 * S,
    ), "the episode starts when the lag began"
    extreme = [batch(0, p0=0, p1=0), batch(2, p0=400, p1=50)]
    assert summary(run(extreme, lasting)) == [("partition_lagging", "firing", "partition=1")]
