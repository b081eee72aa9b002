"""Prometheus metrics of the detector, fed by foreachBatch and a StreamingQueryListener.

Every series is updated on the driver (the batch writer runs in ``foreachBatch``, the listener on
the driver's listener bus); the rules in the Python workers only return rows. So there is no
process-level instance: the entry point builds :class:`DetectorMetrics` on the service's registry
(``svc.metrics(DetectorMetrics)``) and passes it down; tests build one on a fresh registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pyspark.sql.streaming.listener import StreamingQueryListener

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1800, 3600)


class DetectorMetrics:
    """All detector series, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "adwatch_detector_"
        self.input_rows_per_second = Gauge(
            p + "input_rows_per_second", "Input rate of the last batch", registry=registry
        )
        self.processed_rows_per_second = Gauge(
            p + "processed_rows_per_second", "Processing rate of the last batch", registry=registry
        )
        self.batch_duration_seconds = Gauge(
            p + "batch_duration_seconds", "Duration of the last micro-batch", registry=registry
        )
        self.trigger_interval_seconds = Gauge(
            p + "trigger_interval_seconds", "Time between the starts of the last two batches", registry=registry
        )
        self.watermark_delay_seconds = Gauge(
            p + "watermark_delay_seconds", "Wall clock minus the event-time watermark", registry=registry
        )
        self.state_rows = Gauge(p + "state_rows", "Rows in the state store (segments)", registry=registry)
        self.segments_warming = Gauge(
            p + "segments_warming", "Segments whose baseline is still warming up (no alerts yet)", registry=registry
        )
        self.segments_tracked = Gauge(
            p + "segments_tracked",
            "Segments the rules track (the alert budget is spread over them)",
            registry=registry,
        )
        self.segments_evicted_total = Counter(
            p + "segments_evicted_total", "Segment states evicted after segment_idle_seconds", registry=registry
        )
        self.alerts_folded_total = Counter(
            p + "alerts_folded_total",
            "Child alerts folded into an ancestor's alert (stored, not published)",
            registry=registry,
        )
        self.freshness_seconds = Gauge(
            p + "freshness_seconds", "Wall clock minus the newest event time processed", registry=registry
        )
        self.last_batch_timestamp_seconds = Gauge(
            p + "last_batch_timestamp_seconds", "When the last micro-batch finished", registry=registry
        )
        self.events_total = Counter(p + "events_total", "Valid events read", registry=registry)
        self.input_rows_total = Counter(p + "input_rows_total", "Kafka records read", registry=registry)
        self.dead_letters_total = Counter(
            p + "dead_letters_total", "Records parked in the dead-letter topic", ["reason"], registry=registry
        )
        self.late_events_total = Counter(
            p + "late_events_total", "Events whose window had already closed", registry=registry
        )
        self.windows_closed_total = Counter(
            p + "windows_closed_total", "Segment windows closed and scored", registry=registry
        )
        self.alerts_total = Counter(
            p + "alerts_total",
            "Alerts emitted, by the id of the rule that raised them",
            ["rule", "alert_type", "severity", "status"],
            registry=registry,
        )
        self.detection_latency_seconds = Histogram(
            p + "detection_latency_seconds",
            "Alert emitted minus its window end",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.input_idle_seconds = Gauge(
            p + "input_idle_seconds",
            "Processing time since the last record was read from the input topic (no_data past no_data_seconds)",
            registry=registry,
        )
        self.partition_lag_seconds = Gauge(
            p + "partition_lag_seconds",
            "How far a partition's newest event time trails the newest partition's (partition_lagging)",
            ["partition"],
            registry=registry,
        )
        self.partition_late_events_total = Counter(
            p + "partition_late_events_total",
            "Events of a partition dropped behind the watermark, by input partition",
            ["partition"],
            registry=registry,
        )
        self._last_batch_start: float | None = None

    def observe_progress(self, progress: dict[str, Any], now_s: float | None = None) -> None:
        """Update the gauges from one StreamingQueryProgress (as its JSON dict)."""
        now_s = time.time() if now_s is None else now_s
        values = progress_values(progress, now_s, self._last_batch_start)
        if values.get("batch_start_s") is not None:
            self._last_batch_start = values["batch_start_s"]
        for name in (
            "input_rows_per_second",
            "processed_rows_per_second",
            "batch_duration_seconds",
            "trigger_interval_seconds",
            "watermark_delay_seconds",
            "state_rows",
            "freshness_seconds",
        ):
            if values.get(name) is not None:
                getattr(self, name).set(values[name])
        if values.get("rows"):
            self.input_rows_total.inc(values["rows"])
        if values.get("events"):
            self.events_total.inc(values["events"])
        if values.get("dropped_late"):
            self.late_events_total.inc(values["dropped_late"])
        self.last_batch_timestamp_seconds.set(now_s)


def _epoch_s(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def progress_values(progress: dict[str, Any], now_s: float, last_batch_start_s: float | None) -> dict[str, Any]:
    """Pure mapping StreamingQueryProgress JSON -> metric values (None when unknown)."""
    out: dict[str, Any] = {
        "input_rows_per_second": progress.get("inputRowsPerSecond"),
        "processed_rows_per_second": progress.get("processedRowsPerSecond"),
    }
    duration_ms = (progress.get("durationMs") or {}).get("triggerExecution")
    out["batch_duration_seconds"] = duration_ms / 1000.0 if duration_ms is not None else None
    start = _epoch_s(progress.get("timestamp"))
    out["batch_start_s"] = start
    out["trigger_interval_seconds"] = start - last_batch_start_s if start and last_batch_start_s else None
    watermark = _epoch_s((progress.get("eventTime") or {}).get("watermark"))
    out["watermark_delay_seconds"] = now_s - watermark if watermark and watermark > 0 else None
    ops = progress.get("stateOperators") or []
    out["state_rows"] = sum(op.get("numRowsTotal", 0) for op in ops) if ops else None
    out["dropped_late"] = sum(op.get("numRowsDroppedByWatermark", 0) for op in ops)
    observed = (progress.get("observedMetrics") or {}).get("adwatch_input") or {}
    out["rows"] = observed.get("rows") or 0
    out["events"] = observed.get("events") or 0
    newest_ms = observed.get("max_event_time_ms")
    out["freshness_seconds"] = now_s - newest_ms / 1000.0 if newest_ms else None
    return out


class ProgressListener(StreamingQueryListener):
    """Copies each micro-batch's progress into the Prometheus gauges (driver side)."""

    def __init__(
        self, metrics: DetectorMetrics, query_name: str | None = None, on_progress: Callable[[], None] = lambda: None
    ) -> None:
        self.metrics = metrics
        self.query_name = query_name
        self.on_progress = on_progress  # the liveness heartbeat: a batch finished, or the idle query said so

    def onQueryStarted(self, event: Any) -> None:
        logger.info(
            "query started: %s (%s)", event.name, event.id, extra={"query": event.name, "query_id": str(event.id)}
        )

    def onQueryProgress(self, event: Any) -> None:
        progress = event.progress
        if self.query_name and progress.name != self.query_name:
            return
        self.on_progress()
        try:
            self.metrics.observe_progress(progress_dict(progress))
        except Exception:  # a metrics bug must never stop the query
            logger.exception("could not record query progress")

    def onQueryIdle(self, event: Any) -> None:
        self.on_progress()  # no new data, but the query is alive and polling

    def onQueryTerminated(self, event: Any) -> None:
        if event.exception:
            logger.error(
                "query %s terminated: %s",
                event.id,
                event.exception,
                extra={"query_id": str(event.id), "error": str(event.exception)},
            )


def progress_dict(progress: Any) -> dict[str, Any]:
    """StreamingQueryProgress -> the JSON dict shape, observed metrics as plain dicts."""
    import json

    data: dict[str, Any] = json.loads(progress.json)
    observed = getattr(progress, "observedMetrics", None) or {}
    data["observedMetrics"] = {name: row.asDict() for name, row in observed.items()}
    return data
