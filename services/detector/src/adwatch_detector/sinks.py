"""Where a micro-batch's output goes: Kafka (alerts, dead letters), Redis, ClickHouse.

Everything runs on the driver inside ``foreachBatch`` (chdb allows one process per data
directory). A batch is done only once the producer has flushed. A replayed batch (the
query restarted from its checkpoint) is written exactly once where the store allows it:
ClickHouse drops the replay's inserts by their ``insert_deduplication_token`` (query id,
batch id, table), and the metrics count a batch id once. Kafka gets the replay's records
again with the same alert ids and keys: consumers deduplicate by ``alert_id`` (the
notifier's ledger does), which is the documented contract of the alerts topic.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from confluent_kafka import Producer
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Tracer

from adwatch import telemetry
from adwatch.config import CommonSettings
from adwatch.contracts import HEADER_SCHEMA_VERSION, SCHEMA_VERSION, Alert, SegmentWindow, decode, encode
from adwatch.errors import AdwatchError
from adwatch.kafka import dead_letter, make_producer
from adwatch.storage import make_clickhouse, make_redis
from adwatch_detector.drilldown import Folder
from adwatch_detector.evidence import BandPoint
from adwatch_detector.metrics import DetectorMetrics
from adwatch_detector.migrations import Tables, migrate
from adwatch_detector.settings import DetectorSettings
from adwatch_detector.stream_health import RULE_ID as STREAM_RULE_ID
from adwatch_detector.tracking import CONTEXT_PROPERTY, Census, encode_context, stall_span

logger = logging.getLogger(__name__)

STAGE = "detector"


class SinkError(AdwatchError):
    """A sink could not take a micro-batch (the batch fails and is replayed)."""


def window_row(segment: str, w: SegmentWindow, written_at_ms: int) -> dict[str, Any]:
    return {
        "segment": segment,
        "segment_id": w.segment_id,
        "dimensions": w.dimensions,
        "country": w.country,
        "ad_format": w.ad_format,
        "window_start_ms": w.window_start_ms,
        "window_end_ms": w.window_end_ms,
        "impressions": w.impressions,
        "clicks": w.clicks,
        "requests": w.event_counts.get("request", 0),
        "conversions": w.event_counts.get("conversion", 0),
        "revenue_usd": w.revenue_usd,
        "orphan_clicks": w.orphan_clicks,
        "ctr": w.ctr,
        "ecpm": w.ecpm,
        "written_at_ms": written_at_ms,
    }


def redis_fields(w: SegmentWindow, updated_at_ms: int) -> dict[str, str]:
    row = window_row(w.segment_id, w, updated_at_ms)
    row.pop("written_at_ms")
    row["updated_at_ms"] = updated_at_ms
    row["dimensions"] = json.dumps(w.dimensions, sort_keys=True)
    return {k: str(v) for k, v in row.items()}


def alert_row(alert: Alert, segment: str, trace_id: str) -> dict[str, Any]:
    """An alert as a ClickHouse row (the drill-down as JSON text); :func:`alert_from_row` reads it back."""
    row = msgspec.to_builtins(alert)
    row["contributors"] = json.dumps(row["contributors"], separators=(",", ":"))
    return {**row, "trace_id": trace_id, "segment": segment}


ALERT_COLUMNS = tuple(f for f in Alert.__struct_fields__ if f != "schema_version")
"""The ad_alerts columns that make an Alert (select them in this order for :func:`alert_from_row`)."""


def alert_from_row(values: Sequence[Any]) -> Alert:
    """An Alert from a row of :data:`ALERT_COLUMNS` (the inverse of :func:`alert_row`)."""
    row = dict(zip(ALERT_COLUMNS, values, strict=True))
    if isinstance(row.get("contributors"), str):
        row["contributors"] = json.loads(row["contributors"] or "[]")
    return msgspec.convert(row, Alert)


def alert_span_attributes(alert: Alert, segment: str, topic: str) -> dict[str, Any]:
    """The evidence on the span that emits an alert (messaging semconv v1.44 names)."""
    return {
        telemetry.MESSAGING_SYSTEM: "kafka",
        telemetry.MESSAGING_OPERATION_TYPE: "send",
        telemetry.MESSAGING_DESTINATION: topic,
        telemetry.MESSAGING_KAFKA_KEY: alert.fingerprint,
        "adwatch.segment": segment,
        "adwatch.segment.set": ",".join(sorted(alert.dimensions)) or "*",
        "adwatch.alert.folded": alert.folded,
        "adwatch.window.start_ms": alert.window_start_ms,
        "adwatch.window.end_ms": alert.window_end_ms,
        "adwatch.rule": alert.alert_type,
        "adwatch.rule_set": alert.rule_set,
        "adwatch.alert.id": alert.alert_id,
        "adwatch.alert.status": alert.status,
        "adwatch.alert.severity": alert.severity,
        "adwatch.metric": alert.metric,
        "adwatch.value.current": alert.current,
        "adwatch.value.expected": alert.expected,
        "adwatch.value.band_low": alert.band_low,
        "adwatch.value.band_high": alert.band_high,
        "adwatch.value.deviation_pct": alert.deviation_pct,
        "adwatch.volume": alert.volume,
        "adwatch.significance.p_value": alert.p_value,
        "adwatch.significance.z_score": alert.z_score,
    }


def event_links(traceparents: Iterable[str] | None) -> list[Link]:
    """Links to the (sampled) event contexts behind an alert."""
    links = []
    for tp in traceparents or []:
        ctx = telemetry.extract_context([("traceparent", tp)])
        span_context = trace.get_current_span(ctx).get_span_context()
        if span_context.is_valid:
            links.append(Link(span_context))
    return links


def alert_parent(traceparents: Sequence[str] | None) -> tuple[Context | None, list[Link]]:
    """The alert span's parent and links: one trace from the events to the deliveries.

    The parent is the first *sampled* event context of the breaching window (its generator
    span), so the alert, and the notifier spans that continue it, share that event's trace
    id; the other samples stay links. No sampled sample: no parent (a root span), all links.
    """
    links = event_links(traceparents)
    for i, link in enumerate(links):
        if link.context.trace_flags.sampled:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(link.context))
            return parent, links[:i] + links[i + 1 :]
    return None, links


def reason_label(reason: str | None) -> str:
    """Bounded metric label from 'category: detail'."""
    return (reason or "unknown").split(":", 1)[0].strip() or "unknown"


class BatchWriter:
    """The ``foreachBatch`` function: call it with (batch DataFrame, batch id)."""

    def __init__(
        self,
        settings: DetectorSettings,
        common: CommonSettings,
        metrics: DetectorMetrics,
        producer: Producer | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.settings = settings
        self.common = common
        self.metrics = metrics
        self._owns_producer = producer is None
        self._closed = False
        self.producer = producer or make_producer(common.kafka_bootstrap)
        self.tracer = tracer or trace.get_tracer("adwatch.detector")
        self.redis = make_redis(common.redis_url) if settings.redis_enabled else None
        self._clickhouse: Any = None
        self.batches = 0
        self._delivery_errors: list[str] = []
        self._lock = threading.RLock()
        self._warming: dict[str, bool] = {}  # segment -> baseline still warming up (from its last window)
        self._counted: dict[str, int] = {}  # query id -> last batch id counted in the metrics
        self._last_batch_ms: int | None = None  # wall clock of the last batch (stall detection)
        self._stall: tuple[int, int] | None = None  # event time the input left unknown, until closed past
        hierarchy = settings.hierarchy
        self.folder = Folder(hierarchy, settings.drilldown_top, horizon_ms=settings.segment_idle_seconds * 1000)
        parent_sets = {frozenset(p) for parents in hierarchy.parent_sets.values() for p in parents}
        self.census = Census(parent_sets, idle_ms=settings.segment_idle_seconds * 1000)

    @property
    def clickhouse(self) -> Any:
        """Opened lazily on the driver (chdb: one process per directory); schema migrated once."""
        if self._clickhouse is None and self.settings.clickhouse_enabled:
            ch = make_clickhouse(self.common.clickhouse_url)
            tables = Tables(self.settings.metrics_table, self.settings.alerts_table, self.settings.bands_table)
            ran = migrate(ch, tables)
            if ran:
                logger.info("ClickHouse schema migrated: versions %s", ran, extra={"migrations": ran})
            self._clickhouse = ch
        return self._clickhouse

    def __call__(self, batch: Any, batch_id: int) -> None:
        # Spark's query id: stable across restarts from one checkpoint, new for a new checkpoint
        spark_context = batch.sparkSession.sparkContext
        query_id = spark_context.getLocalProperty("sql.streaming.queryId")
        stalled = self.input_stall(int(time.time() * 1000))
        if stalled is not None:  # this batch's tasks must know before they replay the silence
            self._stall = stalled
            spark_context.setLocalProperty(CONTEXT_PROPERTY, self.context_property(stalled))
        rows = [r.asDict() for r in batch.collect()]
        self.write_rows(rows, batch_id, query_id or self.settings.query_name)
        # the watermark moves a batch behind the events: the stall stays known until windows after
        # its start have closed
        if self._stall is not None and self.census.latest_end_ms > self._stall[0]:
            self._stall = None
        # set on the query's thread, this reaches the next batches' tasks (see tracking.py)
        spark_context.setLocalProperty(CONTEXT_PROPERTY, self.context_property(self._stall))

    def context_property(self, stalled: tuple[int, int] | None = None) -> str:
        """What the next batch's state step should know: live segments, parent priors (and a stall)."""
        return encode_context(self.census.context(stalled))

    def input_stall(self, now_ms: int) -> tuple[int, int] | None:
        """The event time the input left unknown if it was silent past no_data_seconds before this
        batch (:func:`stall_span`): empty windows in it are a stalled stream's, not each segment's
        outage (``no_data`` pages it once)."""
        last, self._last_batch_ms = self._last_batch_ms, now_ms
        span = stall_span(last, now_ms, self.settings.no_data_seconds * 1000, self.census.latest_end_ms)
        if span is not None and last is not None:
            logger.info(
                "input stalled %.0f s: empty windows from %d are the stall's, not segments' outages",
                (now_ms - last) / 1000,
                span[0],
                extra={"stalled_from_ms": span[0], "stalled_to_ms": span[1]},
            )
        return span

    def publish_stream_alerts(self, alerts: Sequence[Alert]) -> None:
        """The driver's stream alerts (``no_data``, ``partition_lagging``: segment-less, raised
        between or after batches by :mod:`adwatch_detector.watcher`), to the alerts topic and the
        alerts history like a rule's; raise :class:`SinkError` unless all were acked."""
        if not alerts:
            return
        with self._lock:
            self._delivery_errors = []
            trace_ids = {a.alert_id: self._send_alert(a, a.segment_id, None, False) for a in alerts}
            self._flush()
            if self.clickhouse is not None:
                token = "stream:" + ",".join(a.alert_id for a in alerts)
                rows = [alert_row(a, a.segment_id, trace_ids[a.alert_id]) for a in alerts]
                self.clickhouse.insert_json_rows(self.settings.alerts_table, rows, dedup_token=token)
        for a in alerts:
            logger.warning(
                "%s", a.message, extra={"alert_id": a.alert_id, "alert_type": a.alert_type, "status": a.status}
            )

    def last_stream_alerts(self) -> list[Alert]:
        """The last stream alert (``rule = 'stream'``) stored per fingerprint: what a restarted
        driver's :meth:`StreamHealth.resume` takes up. Empty without the alerts history."""
        if self.clickhouse is None:
            return []
        rows = self.clickhouse.query(
            f"SELECT {', '.join(ALERT_COLUMNS)} FROM {self.settings.alerts_table} "
            f"WHERE rule = '{STREAM_RULE_ID}' ORDER BY detected_at_ms DESC, status DESC LIMIT 1 BY fingerprint"
        )
        return [alert_from_row(r) for r in rows]

    def write_rows(self, rows: Sequence[dict[str, Any]], batch_id: int, query_id: str = "local") -> None:
        """Write one batch's rows; raise :class:`SinkError` unless all Kafka records were acked.

        ``(query_id, batch_id)`` names the batch: a replay of it inserts nothing new into
        ClickHouse and adds nothing to the counters.
        """
        with self._lock:  # the stream watcher publishes from its own thread
            self._write_rows(rows, batch_id, query_id)

    def _write_rows(self, rows: Sequence[dict[str, Any]], batch_id: int, query_id: str) -> None:
        now_ms = int(time.time() * 1000)
        window_rows = [(r, decode(r["payload"], SegmentWindow)) for r in rows if r["kind"] == "window"]
        windows = [(r["segment"], w) for r, w in window_rows]
        raised = sorted(
            ((r, decode(r["payload"], Alert)) for r in rows if r["kind"] == "alert"),
            key=lambda ra: (ra[1].window_start_ms, ra[1].fingerprint),
        )
        bands = [decode(r["payload"], BandPoint) for r in rows if r["kind"] == "band"]
        self.census.observe((w, r.get("tracked") is not False) for r, w in window_rows)
        evicted = [r["segment"] for r in rows if r["kind"] == "evicted"]
        for segment in evicted:
            self.census.forget(segment)
        # one problem, one alert: children folded into their ancestors' alerts (drill-down)
        row_of = {a.alert_id: r for r, a in raised}
        dimensions = {w.segment_id: w.dimensions for _, w in windows} if raised else {}
        published, folded = self.folder.fold([a for _, a in raised], bands, dimensions)
        alerts = [(row_of.get(a.alert_id, {"segment": a.segment_id}), a) for a in published]
        stored = alerts + [(row_of.get(a.alert_id, {"segment": a.segment_id}), a) for a in folded]
        dead = [r for r in rows if r["kind"] == "dlq"]
        late = sum(int(r["count"] or 0) for r in rows if r["kind"] == "late")
        self._delivery_errors = []
        for r in dead:
            dead_letter(
                self.producer,
                self.settings.dlq_topic,
                source_topic=self.settings.input_topic,
                stage=STAGE,
                reason=r["reason"] or "unknown",
                payload=bytes(r["payload"] or b""),
                partition=r["src_partition"] if r["src_partition"] is not None else -1,
                offset=r["src_offset"] if r["src_offset"] is not None else -1,
            )
        replay = batch_id <= self._counted.get(query_id, -1)  # counted the first time it was written
        trace_ids = {a.alert_id: self._send_alert(a, r["segment"], r.get("traceparents"), replay) for r, a in alerts}
        self._flush()
        if not replay:
            self._count(windows, dead, late)
            self.metrics.segments_evicted_total.inc(len(evicted))
            self.metrics.alerts_folded_total.inc(len(folded))
            self._counted[query_id] = batch_id
        self.metrics.segments_tracked.set(self.census.live_segments)
        for r in rows:
            if r["kind"] == "window" and r.get("count") is not None:
                self._warming[r["segment"]] = bool(r["count"])
        if self._warming:
            self.metrics.segments_warming.set(sum(self._warming.values()))
        if self.redis is not None and windows:
            self._write_redis(windows, now_ms)
        if self.clickhouse is not None and (windows or stored):
            for table, table_rows in (
                (self.settings.metrics_table, [window_row(seg, w, now_ms) for seg, w in windows]),
                (
                    self.settings.alerts_table,
                    [alert_row(a, r["segment"], trace_ids.get(a.alert_id, "")) for r, a in stored],
                ),
                (
                    self.settings.bands_table,
                    [{**msgspec.structs.asdict(b), "written_at_ms": now_ms} for b in bands],
                ),
            ):
                self.clickhouse.insert_json_rows(table, table_rows, dedup_token=f"{query_id}:{batch_id}:{table}")
        self.batches += 1
        if windows or alerts or dead:
            counts = {
                "batch_id": batch_id,
                "windows": len(windows),
                "alerts": len(alerts),
                "folded": len(folded),
                "dead_letters": len(dead),
            }
            logger.info(
                "batch %d: %d windows closed, %d alerts (+%d folded), %d dead letters", *counts.values(), extra=counts
            )

    def _count(self, windows: Sequence[tuple[str, SegmentWindow]], dead: Sequence[dict[str, Any]], late: int) -> None:
        for r in dead:
            self.metrics.dead_letters_total.labels(reason=reason_label(r["reason"])).inc()
        if late:
            self.metrics.late_events_total.inc(late)
        self.metrics.windows_closed_total.inc(len(windows))

    def _send_alert(self, alert: Alert, segment: str, traceparents: Sequence[str] | None, replay: bool) -> str:
        topic = self.settings.alerts_topic
        parent, links = alert_parent(traceparents)
        with self.tracer.start_as_current_span(
            f"send {topic}",
            context=parent,
            kind=SpanKind.PRODUCER,
            links=links,
            attributes=alert_span_attributes(alert, segment, topic),
        ) as span:
            headers = telemetry.inject_headers([(HEADER_SCHEMA_VERSION, str(SCHEMA_VERSION).encode())])
            self.producer.produce(
                topic,
                key=alert.fingerprint,
                value=encode(alert),
                headers=headers,  # type: ignore[arg-type]
                on_delivery=self._on_delivery,
            )
            if not replay:  # a replayed batch's alerts were counted the first time
                latency = max(0.0, time.time() - alert.window_end_ms / 1000.0)
                self.metrics.detection_latency_seconds.observe(latency, exemplar=telemetry.trace_id_exemplar())
                self.metrics.alerts_total.labels(
                    rule=alert.rule, alert_type=alert.alert_type, severity=alert.severity, status=alert.status
                ).inc()
            ctx = span.get_span_context()
            return format(ctx.trace_id, "032x") if ctx.is_valid else ""

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def _flush(self) -> None:
        remaining = self.producer.flush(self.settings.flush_timeout_seconds)
        if remaining or self._delivery_errors:
            raise SinkError(
                f"{remaining} records unflushed, delivery errors: {self._delivery_errors[:3]} (batch will be replayed)"
            )

    def _write_redis(self, windows: Sequence[tuple[str, SegmentWindow]], now_ms: int) -> None:
        latest: dict[str, SegmentWindow] = {}
        for seg, w in windows:
            if seg not in latest or w.window_start_ms > latest[seg].window_start_ms:
                latest[seg] = w
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=False)
        for seg, w in latest.items():
            key = self.settings.redis_key_prefix + seg
            pipe.hset(key, mapping=redis_fields(w, now_ms))  # type: ignore[arg-type]
            pipe.expire(key, self.settings.redis_ttl_seconds)
        pipe.execute()

    def close(self) -> None:
        """Flush what is pending and release the producer and the stores (on shutdown).

        The producer is closed, not left to the garbage collector: Spark keeps a reference to
        this writer (foreachBatch), and a live producer reconnects to a stopped broker forever.
        """
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.producer.flush(self.settings.flush_timeout_seconds)
        if self._owns_producer:
            self.producer.close()
        if self._clickhouse is not None and hasattr(self._clickhouse, "close"):
            self._clickhouse.close()
            self._clickhouse = None
        if self.redis is not None:
            self.redis.close()
