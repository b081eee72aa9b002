"""Kafka sources for the detector: Spark's connector or a Python Data Source, same schema.

The Python source (``format("adwatch_kafka")``) plans one input partition per Kafka
partition and keeps its offsets in Spark's checkpoint as ``{"<partition>": next_offset}``,
so a restarted query resumes exactly where the last committed batch ended. End offsets
come from the fetch high watermark: tansu's ListOffsets under-reports them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows, SupportsTriggerAvailableNow
from pyspark.sql.types import StructType

from adwatch.errors import AdwatchError

logger = logging.getLogger(__name__)

SOURCE_NAME = "adwatch_kafka"
KAFKA_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset long, timestamp timestamp, "
    "headers array<struct<key: string, value: binary>>"
)
_ARROW_SCHEMA = pa.schema(
    [
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))),
    ]
)
Offsets = dict[str, int]


class KafkaSourceError(AdwatchError):
    """The broker did not answer or a partition could not be read up to its planned end."""


# --- pure offset arithmetic ---------------------------------------------------------------
def limit_offsets(start: Mapping[str, int], latest: Mapping[str, int], max_rows: int | None) -> Offsets:
    """End offsets at most ``max_rows`` past ``start`` in total, split in proportion to each
    partition's backlog (as Spark's Kafka source does).

    Why proportional: a producer writes every partition in event-time order at its own rate,
    so taking the same fraction of each backlog keeps the partitions at the same event time.
    An equal split would let small partitions race ahead, push the (global) watermark past
    windows the big partitions have not delivered yet, and close those windows half-full.
    Partitions never move backwards; a partition new since ``start`` starts at 0.
    """
    begin = {p: int(start.get(p, 0)) for p in latest}
    avail = {p: max(0, int(latest[p]) - begin[p]) for p in latest}
    total = sum(avail.values())
    if max_rows is None or total <= max_rows:
        return {p: begin[p] + avail[p] for p in sorted(latest, key=int)}
    exact = {p: max_rows * avail[p] / total for p in latest}
    take = {p: int(exact[p]) for p in latest}
    by_remainder = sorted(latest, key=lambda p: exact[p] - take[p], reverse=True)
    for p in by_remainder[: max_rows - sum(take.values())]:
        take[p] += 1
    return {p: begin[p] + take[p] for p in sorted(latest, key=int)}


class KafkaPartitionRange(InputPartition):
    """Offsets [start, end) of one Kafka partition: one Spark input partition."""

    def __init__(self, topic: str, partition: int, start: int, end: int) -> None:
        super().__init__((topic, partition, start, end))
        self.topic = topic
        self.partition = partition
        self.start = start
        self.end = end


def plan_partitions(topic: str, start: Mapping[str, int], end: Mapping[str, int]) -> list[KafkaPartitionRange]:
    return [
        KafkaPartitionRange(topic, int(p), int(start.get(p, 0)), int(e))
        for p, e in sorted(end.items(), key=lambda kv: int(kv[0]))
        if int(e) > int(start.get(p, 0))
    ]


# --- broker access ------------------------------------------------------------------------
def _consumer_conf(bootstrap: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": "adwatch-detector-spark",  # never joined nor committed: Spark keeps offsets
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        **dict(extra or {}),
    }


def fetch_watermarks(
    bootstrap: str, topic: str, hint: Mapping[str, int] | None = None, timeout_s: float = 15.0
) -> dict[str, tuple[int, int]]:
    """(low, high) per partition from a real fetch (assign near the end, poll, read the cache).

    Starting each partition one record before the last known end makes every partition
    answer at once: with a record, or with an end-of-partition event when it is empty.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        _consumer_conf(
            bootstrap,
            {"enable.partition.eof": True, "max.partition.fetch.bytes": 4096},
        )
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaSourceError(f"topic {topic!r} not found: {getattr(meta, 'error', None)}")
        parts = sorted(meta.partitions)
        hint = hint or {}
        consumer.assign([TopicPartition(topic, p, max(0, int(hint.get(str(p), 0)) - 1)) for p in parts])
        answered: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(answered) < len(parts):
            if time.monotonic() > deadline:
                raise KafkaSourceError(f"no fetch answer for {topic} partitions {sorted(set(parts) - answered)}")
            for msg in consumer.consume(len(parts), 0.2):
                err, part = msg.error(), int(msg.partition() or 0)
                if err is None or err.code() == KafkaError._PARTITION_EOF:
                    answered.add(part)
                elif err.code() == KafkaError.OFFSET_OUT_OF_RANGE:
                    consumer.seek(TopicPartition(topic, part, 0))
                else:
                    logger.warning("fetch for watermarks: %s", err)
        out: dict[str, tuple[int, int]] = {}
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            out[str(p)] = (max(0, low), max(0, high))
        return out
    finally:
        consumer.close()


def topic_partitions(bootstrap: str, topic: str, timeout_s: float = 15.0) -> int:
    """How many partitions ``topic`` has now (0 when it does not exist yet)."""
    from confluent_kafka import Consumer

    consumer = Consumer(_consumer_conf(bootstrap))
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        return len(meta.partitions) if meta is not None and meta.error is None else 0
    finally:
        consumer.close()


def read_range(
    bootstrap: str, rng: KafkaPartitionRange, batch_rows: int = 20_000, stall_timeout_s: float = 60.0
) -> Iterator[pa.RecordBatch]:
    """Records [start, end) of one partition as Arrow record batches (the fast path into Spark)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(_consumer_conf(bootstrap, {"fetch.max.bytes": 52428800, "queued.max.messages.kbytes": 262144}))
    try:
        consumer.assign([TopicPartition(rng.topic, rng.partition, rng.start)])
        next_offset = rng.start
        last_progress = time.monotonic()
        while next_offset < rng.end:
            want = min(batch_rows, rng.end - next_offset)
            msgs = consumer.consume(want, 1.0)
            cols: dict[str, list[Any]] = {name: [] for name in _ARROW_SCHEMA.names}
            for msg in msgs:
                if msg.error() is not None:
                    where = {"topic": rng.topic, "partition": rng.partition, "offset": msg.offset()}
                    logger.warning("kafka read failed: %s", msg.error(), extra=where)
                    continue
                offset = int(msg.offset() or 0)
                if offset >= rng.end:
                    continue
                ts_type, ts = msg.timestamp()
                headers = msg.headers()
                cols["key"].append(msg.key())
                cols["value"].append(msg.value())
                cols["topic"].append(rng.topic)
                cols["partition"].append(rng.partition)
                cols["offset"].append(offset)
                cols["timestamp"].append(ts * 1000 if ts_type and ts >= 0 else None)
                cols["headers"].append([{"key": k, "value": v} for k, v in headers] if headers else None)  # type: ignore[str-unpack]
                next_offset = offset + 1
            if cols["offset"]:
                last_progress = time.monotonic()
                yield pa.RecordBatch.from_arrays(
                    [pa.array(cols[n], type=f.type) for n, f in zip(_ARROW_SCHEMA.names, _ARROW_SCHEMA, strict=True)],
                    schema=_ARROW_SCHEMA,
                )
            elif time.monotonic() - last_progress > stall_timeout_s:
                raise KafkaSourceError(
                    f"{rng.topic}[{rng.partition}] stalled at offset {next_offset}, planned end {rng.end}"
                )
    finally:
        consumer.close()


# --- Spark Python Data Source -------------------------------------------------------------
class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Driver side: plans offset ranges; worker side: :func:`read_range` per partition."""

    def __init__(self, options: Mapping[str, str]) -> None:
        self.bootstrap = options["kafka.bootstrap.servers"]
        self.topic = options["subscribe"]
        self.starting = options.get("startingOffsets", "earliest")
        max_rows = int(options.get("maxOffsetsPerTrigger", "0") or 0)
        self.max_rows = max_rows if max_rows > 0 else None
        self.batch_rows = int(options.get("arrowBatchRows", "20000"))
        self._known: Offsets = {}
        self._target: Offsets | None = None

    def _latest(self) -> Offsets:
        marks = fetch_watermarks(self.bootstrap, self.topic, self._known)
        self._known = {p: hi for p, (_, hi) in marks.items()}
        return dict(self._known)

    def initialOffset(self) -> dict[str, int]:
        marks = fetch_watermarks(self.bootstrap, self.topic)
        self._known = {p: hi for p, (_, hi) in marks.items()}
        if self.starting == "latest":
            return {p: hi for p, (_, hi) in marks.items()}
        return {p: lo for p, (lo, _) in marks.items()}

    def prepareForTriggerAvailableNow(self) -> None:
        self._target = self._latest()

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_rows) if self.max_rows else ReadAllAvailable()

    def latestOffset(self, start: dict[str, int], limit: ReadLimit) -> dict[str, int]:
        latest = self._target if self._target is not None else self._latest()
        latest = {p: max(int(v), int(start.get(p, 0))) for p, v in latest.items()}
        max_rows = limit.max_rows if isinstance(limit, ReadMaxRows) else None
        return limit_offsets(start, latest, max_rows)

    def reportLatestOffset(self) -> dict[str, int] | None:
        return dict(self._known) or None

    def partitions(self, start: dict[str, int], end: dict[str, int]) -> Sequence[InputPartition]:
        return plan_partitions(self.topic, start, end)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, KafkaPartitionRange)
        return read_range(self.bootstrap, partition, self.batch_rows)

    def commit(self, end: dict[str, int]) -> None:
        return None


class KafkaDataSource(DataSource):
    """``spark.readStream.format("adwatch_kafka")`` with the options of Spark's Kafka source
    (``kafka.bootstrap.servers``, ``subscribe``, ``startingOffsets``, ``maxOffsetsPerTrigger``)."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return KAFKA_SCHEMA

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return KafkaStreamReader(self.options)


def register_python_source(spark: SparkSession) -> None:
    """Register the source, shipping this module by value so workers need nothing extra."""
    import sys

    from pyspark import cloudpickle

    register_by_value: Any = cloudpickle.register_pickle_by_value  # untyped
    register_by_value(sys.modules[__name__])
    spark.dataSource.register(KafkaDataSource)


def native_kafka_available(spark: SparkSession) -> bool:
    """True when the spark-sql-kafka connector is on the classpath."""
    jvm: Any = spark.sparkContext._jvm
    try:
        jvm.java.lang.Class.forName("org.apache.spark.sql.kafka010.KafkaSourceProvider")
    except Exception:
        return False
    return True


def read_kafka_stream(
    spark: SparkSession,
    bootstrap: str,
    topic: str,
    source: str = "auto",
    starting_offsets: str = "earliest",
    max_offsets_per_trigger: int = 0,
) -> DataFrame:
    """The input stream with Spark's Kafka schema, from whichever source is selected."""
    kind = source
    if kind == "auto":
        kind = "kafka" if native_kafka_available(spark) else "python"
    elif kind == "kafka" and not native_kafka_available(spark):
        raise KafkaSourceError(
            "ADWATCH_DETECTOR_SOURCE=kafka but the spark-sql-kafka connector is not on the classpath "
            "(build the image with SPARK_CONNECTORS=kafka, or use ADWATCH_DETECTOR_SOURCE=python)"
        )
    if kind == "kafka":
        reader = (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", bootstrap)
            .option("subscribe", topic)
            .option("startingOffsets", starting_offsets)
            .option("includeHeaders", "true")
            .option("failOnDataLoss", "false")
        )
    else:
        register_python_source(spark)
        reader = (
            spark.readStream.format(SOURCE_NAME)
            .option("kafka.bootstrap.servers", bootstrap)
            .option("subscribe", topic)
            .option("startingOffsets", starting_offsets)
        )
    if max_offsets_per_trigger > 0:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    logger.info(
        "reading %s from %s with %s (ADWATCH_DETECTOR_SOURCE=%s)",
        topic,
        bootstrap,
        "Spark's Kafka connector" if kind == "kafka" else "the Python Data Source reader",
        source,
    )
    return reader.load()
