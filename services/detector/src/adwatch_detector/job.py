"""The detector's Spark Structured Streaming job (the only module that builds Spark plans).

Kafka ``ad-events`` -> ``from_json`` with the AdEvent schema (bad records keyed to the
dead-letter path with a reason) -> event-time watermark -> ``applyInPandasWithState``
keyed by segment: open windows and the rules' :class:`SegmentState` (a versioned mapping keyed by
rule id) live in Spark state (checkpointed), windows close once the watermark passes their end and go through
:func:`adwatch_detector.rules.detect_windows` in start order -> ``foreachBatch`` sinks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.query import StreamingQuery
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout
from pyspark.sql.types import (
    BooleanType,
    DataType,
    DoubleType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from adwatch.config import CommonSettings
from adwatch.contracts import EVENT_DIMENSIONS, EVENT_TYPES, HEADER_TRACEPARENT, MAX_DIMENSION_VALUE, AdEvent
from adwatch_detector.hierarchy import KEY_SEPARATOR, Hierarchy
from adwatch_detector.kafka_source import read_kafka_stream, topic_partitions
from adwatch_detector.settings import DetectorSettings
from adwatch_detector.tracking import TrackingPolicy

if TYPE_CHECKING:
    from adwatch_detector.rules import RuleEngine

logger = logging.getLogger(__name__)

DLQ_KEY = "__dlq__"


def _spark_type(t: msgspec.inspect.Type) -> DataType:
    """The Spark type of one contract field type (constraints are checked by dead_letter_reason)."""
    if isinstance(t, msgspec.inspect.Metadata):
        return _spark_type(t.type)
    if isinstance(t, msgspec.inspect.UnionType):
        (inner,) = [u for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
        return _spark_type(inner)
    if isinstance(t, msgspec.inspect.LiteralType) and all(isinstance(v, str) for v in t.values):
        return StringType()
    if isinstance(t, msgspec.inspect.DictType):
        return MapType(_spark_type(t.key_type), _spark_type(t.value_type))
    simple: dict[type, DataType] = {
        msgspec.inspect.StrType: StringType(),
        msgspec.inspect.IntType: LongType(),
        msgspec.inspect.FloatType: DoubleType(),
        msgspec.inspect.BoolType: BooleanType(),
    }
    for kind, spark_type in simple.items():
        if isinstance(t, kind):
            return spark_type
    raise TypeError(f"no Spark type for contract field type {t!r}")


def contract_schema(record: type[msgspec.Struct]) -> tuple[StructType, tuple[str, ...]]:
    """The from_json schema of a contract record and its required fields, derived from the record
    itself so the contract and the job cannot drift apart."""
    info = msgspec.inspect.type_info(record)
    assert isinstance(info, msgspec.inspect.StructType)
    schema = StructType([StructField(f.name, _spark_type(f.type)) for f in info.fields])
    return schema, tuple(f.name for f in info.fields if f.required)


# from_json schema of adwatch.contracts.AdEvent, plus the corrupt-record column.
_AD_EVENT_SCHEMA, REQUIRED_FIELDS = contract_schema(AdEvent)
EVENT_SCHEMA = StructType([*_AD_EVENT_SCHEMA.fields, StructField("_corrupt_record", StringType())])
MAX_EVENT_TIME_MS = 4_102_444_800_000  # 2100-01-01: beyond is a bug, and overflows timestamps

OUTPUT_SCHEMA = (
    "kind string, segment string, window_start_ms long, window_end_ms long, payload binary, reason string, "
    "src_partition int, src_offset long, traceparents array<string>, count long, tracked boolean"
)
STATE_SCHEMA = "rules binary, windows binary"
OUTPUT_COLUMNS = [c.strip().split(" ")[0] for c in OUTPUT_SCHEMA.split(",")]


def dimension_column(e: Column, name: str) -> Column:
    """An event's value of one dimension: a named AdEvent field, else its ``dimensions`` map."""
    return e[name] if name in EVENT_DIMENSIONS else e["dimensions"][name]


def dead_letter_reason(
    e: Column,
    value: Column,
    record_ms: Column | None = None,
    max_skew_ms: int = 0,
    dimensions: tuple[str, ...] = (),
    max_age_ms: int = 0,
) -> Column:
    """Why a record breaks the AdEvent contract (null when it is valid); 'category: detail'.

    Dimension values are open (a new app is not bad input) but bounded: empty, longer than 256
    characters or holding a control character is an invalid dimension, named; a watched
    dimension (``dimensions``) outside the named fields that an event lacks is a missing one.

    ``record_ms`` (the Kafka record's timestamp) bounds event time from above: one event stamped
    an hour ahead would move the global watermark an hour, close every open window early and
    turn the next hour of real events into late ones. Capped by the record's own timestamp, not
    by a clock, a replay decides the same. It bounds event time from below too (``max_age_ms``):
    an event stamped a day before its record (a producer's clock or unit bug, a re-sent archive)
    belongs to no window the detector still holds; it is dead-lettered with its age, not counted
    as late (in a first micro-batch, before any watermark, it would open a window a day old).
    """
    reason = F.when(value.isNull(), F.lit("empty_value: record has no value")).when(
        e.isNull() | e["_corrupt_record"].isNotNull(), F.lit("malformed_json: not an AdEvent JSON object")
    )
    for name in REQUIRED_FIELDS:
        reason = reason.when(e[name].isNull(), F.lit(f"missing_field: {name}"))
    for name in dimensions:
        if name not in EVENT_DIMENSIONS:
            reason = reason.when(dimension_column(e, name).isNull(), F.lit(f"missing_dimension: {name}"))
    for name in dict.fromkeys([*EVENT_DIMENSIONS[1:], *dimensions]):
        col = dimension_column(e, name)
        reason = (
            reason.when(F.length(col) == 0, F.lit(f"invalid_dimension: {name}: empty"))
            .when(
                F.length(col) > MAX_DIMENSION_VALUE,
                F.lit(f"invalid_dimension: {name}: longer than {MAX_DIMENSION_VALUE} characters"),
            )
            .when(col.rlike("[\\x00-\\x1f\\x7f]"), F.lit(f"invalid_dimension: {name}: control characters"))
        )
    reason = (
        reason.when(~e["event_type"].isin(*EVENT_TYPES), F.concat(F.lit("invalid_event_type: "), e["event_type"]))
        .when(~e["country"].rlike("^[A-Z]{2}$"), F.concat(F.lit("invalid_country: "), e["country"]))
        .when(
            (e["event_time_ms"] < 0) | (e["event_time_ms"] > MAX_EVENT_TIME_MS),
            F.concat(F.lit("invalid_event_time: "), e["event_time_ms"].cast("string")),
        )
        .when(e["revenue_usd"] < 0, F.concat(F.lit("negative_revenue: "), e["revenue_usd"].cast("string")))
    )
    if record_ms is not None and max_skew_ms > 0:
        ahead = e["event_time_ms"] - record_ms
        reason = reason.when(
            ahead > max_skew_ms,
            F.concat(F.lit("future_event_time: "), (ahead / 1000).cast("long").cast("string"), F.lit(" s ahead")),
        )
    if record_ms is not None and max_age_ms > 0:
        age = record_ms - e["event_time_ms"]
        reason = reason.when(
            age > max_age_ms,
            F.concat(F.lit("stale_event_time: "), (age / 1000).cast("long").cast("string"), F.lit(" s old")),
        )
    return reason


def parse_events(
    raw: DataFrame, hierarchy: Hierarchy, max_future_skew_ms: int = 0, max_event_age_ms: int = 0
) -> DataFrame:
    """Kafka rows -> the narrow columns the stateful step needs; ``segments`` holds the grouping
    key of every watched segment of the event (its leaf and every configured ancestor, see
    :meth:`Hierarchy.spark_key`), an invalid row's is the DLQ key. :func:`explode_segments` makes
    one row per event and segment."""
    e = F.col("e")
    parsed = raw.select(
        F.col("value"),
        F.unix_millis(F.col("timestamp")).alias("record_ms"),
        F.col("partition").alias("src_partition"),
        F.col("offset").alias("src_offset"),
        F.expr(f"try_element_at(filter(headers, h -> h.key = '{HEADER_TRACEPARENT}'), 1).value")
        .cast("string")
        .alias("traceparent"),
        F.from_json(
            F.col("value").cast("string"),
            EVENT_SCHEMA,
            {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt_record"},
        ).alias("e"),
    ).withColumn(
        "dlq_reason",
        dead_letter_reason(
            e, F.col("value"), F.col("record_ms"), max_future_skew_ms, hierarchy.dimensions, max_event_age_ms
        ),
    )
    valid = F.col("dlq_reason").isNull()
    keys = [
        F.concat_ws(KEY_SEPARATOR, F.lit(",".join(names)), *(dimension_column(e, n) for n in names))
        for names in hierarchy.sets
    ]
    key_col = F.when(valid, F.array(*keys)).otherwise(F.array(F.lit(DLQ_KEY))).alias("segments")
    type_code = F.lit(None).cast("int")
    for code, name in enumerate(EVENT_TYPES):
        type_code = F.when(e["event_type"] == name, F.lit(code)).otherwise(type_code)
    return parsed.select(
        key_col,
        F.when(valid, F.timestamp_millis(e["event_time_ms"])).alias("event_time"),
        F.when(valid, e["event_time_ms"]).alias("event_time_ms"),
        F.when(valid, type_code).alias("event_type"),
        F.when(valid, F.coalesce(e["revenue_usd"], F.lit(0.0))).alias("revenue_usd"),
        F.when(valid, ((e["event_type"] == "click") & e["impression_id"].isNull()).cast("int")).alias("orphan"),
        F.when(valid, F.col("traceparent")).alias("traceparent"),
        F.col("dlq_reason"),
        F.when(~valid, F.col("value")).alias("dlq_payload"),
        F.col("src_partition"),
        F.col("src_offset"),
    )


def explode_segments(events: DataFrame) -> DataFrame:
    """One row per event and watched segment (``segment``: the grouping key)."""
    others = [c for c in events.columns if c != "segments"]
    return events.select(F.explode("segments").alias("segment"), *others)


def make_detect_fn(
    hierarchy: Hierarchy,
    window_ms: int,
    trace_samples: int,
    rules: RuleEngine,
    policy: TrackingPolicy | None = None,
) -> Callable[[tuple[Any, ...], Iterator[pd.DataFrame], GroupState], Iterator[pd.DataFrame]]:
    """The per-segment stateful step (runs in Python workers; pure logic lives in windowing,
    tracking and rules). The key is the segment's :meth:`Hierarchy.spark_key`."""
    policy = policy or TrackingPolicy()

    def detect(key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: GroupState) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        from adwatch.contracts import encode as encode_record
        from adwatch.contracts import segment_id
        from adwatch_detector import rules as rules_mod
        from adwatch_detector import tracking, windowing
        from adwatch_detector.evidence import BandPoint, band_point
        from adwatch_detector.hierarchy import parent_segment_ids

        if key[0] == DLQ_KEY:
            for pdf in pdfs:
                yield pd.DataFrame(
                    {
                        "kind": "dlq",
                        "segment": None,
                        "window_start_ms": None,
                        "window_end_ms": None,
                        "payload": pdf["dlq_payload"],
                        "reason": pdf["dlq_reason"],
                        "src_partition": pdf["src_partition"],
                        "src_offset": pdf["src_offset"],
                        "traceparents": [[] for _ in range(len(pdf))],
                        "count": None,
                        "tracked": None,
                    },
                    columns=OUTPUT_COLUMNS,
                )
            return
        dims = hierarchy.dimensions_of_key(key[0])
        segment = segment_id(dims)
        rules_bytes, windows_bytes = state.get if state.exists else (None, None)
        open_windows = windowing.OpenWindows.from_bytes(windows_bytes)
        late = 0
        for pdf in pdfs:
            late += windowing.fold_events(
                open_windows,
                pdf["event_time_ms"].to_numpy(),
                pdf["event_type"].to_numpy(),
                pdf["revenue_usd"].to_numpy(),
                pdf["orphan"].to_numpy(),
                pdf["traceparent"].tolist(),
                window_ms,
                trace_samples,
            )
        watermark = state.getCurrentWatermarkMs()
        rows: list[dict[str, Any]] = []
        if late:
            rows.append({**_row("late", segment, None, None, None), "count": late})
        task = TaskContext.get()
        context = tracking.decode_context(task.getLocalProperty(tracking.CONTEXT_PROPERTY) if task else None)
        was_tracked = open_windows.tracked
        closed, gap_fill = tracking.close_tracked(
            open_windows, watermark, window_ms, policy, context.live_segments, rules.max_gap_fill
        )
        if not open_windows.windows and policy.idle(open_windows.last_event_ms, watermark):
            state.remove()  # idle past segment_idle_seconds: evicted (it starts afresh if it returns)
            rows.append({**_row("evicted", segment, None, None, None), "tracked": open_windows.tracked})
            yield pd.DataFrame(rows, columns=OUTPUT_COLUMNS)
            return
        engine = rules.for_live_segments(context.live_segments)
        seg_state = rules_mod.SegmentState.from_bytes(rules_bytes)
        if was_tracked and not open_windows.tracked:
            seg_state = rules_mod.SegmentState()  # rolled up: a return starts a fresh baseline
        if context.stalled is not None:  # a stalled input's empty windows are nobody's outage
            closed = [
                (s, part) for s, part in closed if not tracking.stalled_silence(s, part, window_ms, context.stalled)
            ]
        if closed and (open_windows.tracked or was_tracked):
            windows = [windowing.to_segment_window(s, window_ms, dims, segment, part) for s, part in closed]
            if open_windows.tracked:
                if seg_state.last_window_ms < 0:
                    prior = context.prior_for(parent_segment_ids(hierarchy, dims))
                    if prior is not None:
                        engine.seed(seg_state, prior)  # a young segment borrows its parent's CTR and eCPM
                samples = {s: part.traceparents for s, part in closed}
                # processing time from Spark (the rules never read a clock): stamped as detected_at_ms
                now_ms = state.getCurrentProcessingTimeMs()
                bands: list[BandPoint] = []  # each rule's expected value and band per window (for the dashboard)
                seg_state, alerts = engine.detect(
                    seg_state,
                    windows,
                    now_ms,
                    lambda w, check: bands.append(band_point(segment, w, check)),
                    unknown=context.stalled,
                )
                for b in bands:
                    rows.append(_row("band", segment, b.window_start_ms, b.window_end_ms, encode_record(b)))
                for a in alerts:
                    row = _row("alert", segment, a.window_start_ms, a.window_end_ms, encode_record(a))
                    row["traceparents"] = samples.get(a.window_start_ms, [])
                    rows.append(row)
            # a window row's count says whether the segment's baseline is still warming up (1) or not (0)
            warming = int(engine.warming_up(seg_state))
            for w in windows:
                row = _row("window", segment, w.window_start_ms, w.window_end_ms, encode_record(w))
                rows.append({**row, "count": warming, "tracked": open_windows.tracked})
        state.update((seg_state.to_bytes(), open_windows.to_bytes()))
        nxt = windowing.next_close_ms(open_windows, window_ms, gap_fill)
        idle_at = open_windows.last_event_ms + policy.idle_ms if open_windows.last_event_ms else None
        wake = min(t for t in (nxt, idle_at) if t is not None) if (nxt or idle_at) else None
        if wake is not None:
            state.setTimeoutTimestamp(max(wake - 1, watermark, 1))
        if rows:
            yield pd.DataFrame(rows, columns=OUTPUT_COLUMNS)

    return detect


def _row(kind: str, segment: str, start: int | None, end: int | None, payload: bytes | None) -> dict[str, Any]:
    return {
        "kind": kind,
        "segment": segment,
        "window_start_ms": start,
        "window_end_ms": end,
        "payload": payload,
        "reason": None,
        "src_partition": None,
        "src_offset": None,
        "traceparents": [],
        "count": None,
        "tracked": None,
    }


MAX_OBSERVED_PARTITIONS = 256


def observe_partitions(events: DataFrame, partitions: int) -> DataFrame:
    """Per input partition, each batch: its valid events and their newest and oldest event time
    (:data:`~adwatch_detector.stream_health.PARTITIONS_OBSERVATION`; the driver's stream health
    reads them off the query's progress). One slot per partition the topic had at start-up."""
    from adwatch_detector.stream_health import PARTITIONS_OBSERVATION

    aggs: list[Column] = []
    for p in range(min(max(partitions, 1), MAX_OBSERVED_PARTITIONS)):
        t = F.when(F.col("src_partition") == p, F.col("event_time_ms"))
        aggs += [F.count(t).alias(f"events_{p}"), F.max(t).alias(f"max_{p}"), F.min(t).alias(f"min_{p}")]
    return events.observe(PARTITIONS_OBSERVATION, *aggs)


def read_events(spark: SparkSession, settings: DetectorSettings, common: CommonSettings) -> DataFrame:
    """The input topic, parsed with the settings' hard edges (:func:`parse_events`): what the job
    and the throughput benchmark's stateless ceiling both start from."""
    raw = read_kafka_stream(
        spark,
        common.kafka_bootstrap,
        settings.input_topic,
        source=settings.source,
        starting_offsets=settings.starting_offsets,
        max_offsets_per_trigger=settings.max_offsets_per_trigger,
    )
    return parse_events(
        raw, settings.hierarchy, settings.max_future_skew_seconds * 1000, settings.max_event_age_seconds * 1000
    )


def build_stream(spark: SparkSession, settings: DetectorSettings, common: CommonSettings) -> DataFrame:
    """Source -> parse -> watermark -> stateful detection: the rows ``foreachBatch`` writes out."""
    from adwatch_detector.rules import RuleEngine, load_rules

    hierarchy = settings.hierarchy
    events = read_events(spark, settings, common).observe(
        "adwatch_input",
        F.count(F.lit(1)).alias("rows"),
        F.count("event_time_ms").alias("events"),
        F.max("event_time_ms").alias("max_event_time_ms"),
    )
    if settings.partition_lag_seconds > 0:
        events = observe_partitions(events, topic_partitions(common.kafka_bootstrap, settings.input_topic))
    detect = make_detect_fn(
        hierarchy,
        settings.window_seconds * 1000,
        settings.trace_samples,
        RuleEngine.build(load_rules(settings.rules_file)),
        TrackingPolicy(
            settings.min_segment_volume, settings.max_tracked_segments, settings.segment_idle_seconds * 1000
        ),
    )
    return (
        explode_segments(events.withWatermark("event_time", f"{settings.watermark_seconds} seconds"))
        .groupBy("segment")
        .applyInPandasWithState(detect, OUTPUT_SCHEMA, STATE_SCHEMA, "append", GroupStateTimeout.EventTimeTimeout)
    )


def build_query(
    spark: SparkSession,
    settings: DetectorSettings,
    common: CommonSettings,
    writer: Callable[[DataFrame, int], None],
    trigger: dict[str, Any] | None = None,
) -> StreamingQuery:
    """Start the streaming query; ``trigger`` defaults to processingTime=trigger_seconds.

    Tests pass ``{"availableNow": True}`` to process what is in the topic and stop.
    """
    stream = build_stream(spark, settings, common)
    trig = trigger or {"processingTime": f"{settings.trigger_seconds} seconds"}
    return (
        stream.writeStream.queryName(settings.query_name)
        .outputMode("append")
        .option("checkpointLocation", settings.checkpoint_dir)
        .foreachBatch(writer)
        .trigger(**trig)
        .start()
    )


def run_available(
    spark: SparkSession,
    settings: DetectorSettings,
    common: CommonSettings,
    writer: Callable[[DataFrame, int], None],
    timeout_s: float | None = None,
) -> StreamingQuery:
    """Process everything in the topic now (availableNow), wait for the end, raise on failure."""
    query = build_query(spark, settings, common, writer, trigger={"availableNow": True})
    finished = query.awaitTermination(int(timeout_s)) if timeout_s else query.awaitTermination()
    if finished is False:
        query.stop()
        raise TimeoutError(f"query {settings.query_name} still running after {timeout_s}s")
    exc = query.exception()
    if exc is not None:
        raise exc
    return query


__all__ = [
    "build_query",
    "build_stream",
    "explode_segments",
    "make_detect_fn",
    "parse_events",
    "read_events",
    "run_available",
]
