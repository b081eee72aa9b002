"""The Python Kafka Data Source: offset planning (pure), watermarks and reads against the real broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adwatch.kafka import make_producer
from adwatch_detector.kafka_source import (
    KafkaPartitionRange,
    fetch_watermarks,
    limit_offsets,
    plan_partitions,
    read_kafka_stream,
    read_range,
    topic_partitions,
)


def test_limit_offsets_splits_the_budget_by_backlog_and_never_exceeds_it() -> None:
    start = {"0": 10, "1": 0, "2": 5}
    latest = {"0": 110, "1": 3, "2": 1005}
    assert limit_offsets(start, latest, None) == latest
    end = limit_offsets(start, latest, 100)
    assert sum(end[p] - start[p] for p in end) == 100
    # backlogs 100, 3, 1000: each partition advances by the same fraction (~9.7%)
    assert end == {"0": 19, "1": 0, "2": 96}
    assert all(start[p] <= end[p] <= latest[p] for p in end)


@given(
    st.dictionaries(st.sampled_from("012345"), st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), min_size=1),
    st.integers(1, 10**6),
)
def test_limit_offsets_keeps_partitions_at_the_same_fraction(ranges: dict[str, tuple[int, int]], budget: int) -> None:
    start = {p: a for p, (a, _) in ranges.items()}
    latest = {p: a + b for p, (a, b) in ranges.items()}
    end = limit_offsets(start, latest, budget)
    total = sum(latest[p] - start[p] for p in latest)
    assert sum(end[p] - start[p] for p in end) == min(budget, total)
    for p in latest:
        assert start[p] <= end[p] <= latest[p]
        if total > budget:
            assert abs((end[p] - start[p]) - budget * (latest[p] - start[p]) / total) < 1 + 1e-9


def test_limit_offsets_starts_new_partitions_at_zero() -> None:
    assert limit_offsets({"0": 5}, {"0": 5, "1": 7}, 4) == {"0": 5, "1": 4}


def test_plan_partitions_skips_empty_ranges() -> None:
    parts = plan_partitions("t", {"0": 3, "1": 4}, {"0": 3, "1": 9, "2": 2})
    assert [(p.partition, p.start, p.end) for p in parts] == [(1, 4, 9), (2, 0, 2)]


def _produce(bootstrap: str, topic: str, per_partition: int, partitions: int) -> None:
    producer = make_producer(bootstrap)
    for i in range(per_partition * partitions):
        producer.produce(topic, value=b"v%d" % i, key=b"k", partition=i % partitions, headers=[("h", b"x")])
    assert producer.flush(30) == 0


def test_watermarks_come_from_the_fetch_and_reads_stop_at_the_planned_end(
    kafka: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("src", 3)
    assert fetch_watermarks(kafka, topic) == {"0": (0, 0), "1": (0, 0), "2": (0, 0)}
    _produce(kafka, topic, 500, 3)
    marks = fetch_watermarks(kafka, topic)
    assert marks == {"0": (0, 500), "1": (0, 500), "2": (0, 500)}  # ListOffsets would say 1 on tansu
    assert fetch_watermarks(kafka, topic, {p: hi for p, (_, hi) in marks.items()}) == marks
    batches = list(read_range(kafka, KafkaPartitionRange(topic, 1, 100, 350), batch_rows=100))
    offsets = [o for b in batches for o in b.column("offset").to_pylist()]
    assert offsets == list(range(100, 350))
    assert batches[0].column("headers").to_pylist()[0] == [{"key": "h", "value": b"x"}]


def test_topic_partitions_counts_them_and_a_missing_topic_has_none(
    kafka: str, topic_factory: Callable[..., str]
) -> None:
    """The job's per-partition observation has one slot per partition the topic has at start-up."""
    assert topic_partitions(kafka, topic_factory("src", 3)) == 3
    assert topic_partitions(kafka, "no-such-topic-" + topic_factory("src")[-8:], timeout_s=5) == 0


@pytest.mark.spark
def test_six_partitions_are_planned_and_all_read(
    spark, kafka: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic = topic_factory("six", 6)
    _produce(kafka, topic, 300, 6)
    df = read_kafka_stream(spark, kafka, topic, source="python", max_offsets_per_trigger=1200)
    seen: list[tuple[int, dict[int, int]]] = []

    def collect(batch, batch_id: int) -> None:  # type: ignore[no-untyped-def]
        counts = dict(batch.groupBy("partition").count().collect())
        seen.append((batch.rdd.getNumPartitions(), counts))

    query = (
        df.writeStream.foreachBatch(collect)
        .option("checkpointLocation", str(tmp_path / "ck"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(180)
    assert query.exception() is None
    # one Spark input partition per Kafka partition, every partition read, the row limit respected
    assert seen == [(6, dict.fromkeys(range(6), 200)), (6, dict.fromkeys(range(6), 100))]
    ends = [json.loads(p["sources"][0]["endOffset"]) for p in query.recentProgress if p["numInputRows"]]
    assert ends == [dict.fromkeys(map(str, range(6)), 200), dict.fromkeys(map(str, range(6)), 300)]
