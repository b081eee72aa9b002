"""The driver's timer for stream health: reads the query's progress, ticks on processing time.

A trigger that finds no new data runs no ``foreachBatch``, and a stopped stream freezes the
watermark, so neither the batch writer nor a rule would ever notice silence. This thread does:
every ``interval_s`` it feeds each new StreamingQueryProgress (batches and idle reports) to
:class:`~adwatch_detector.stream_health.StreamHealth`, then ticks it with the wall clock, and
publishes what fires or resolves through :meth:`BatchWriter.publish_stream_alerts`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from adwatch.contracts import Alert
from adwatch_detector.metrics import DetectorMetrics, progress_dict
from adwatch_detector.settings import DetectorSettings
from adwatch_detector.stream_health import StreamHealth, StreamHealthSettings, reading_from_progress

logger = logging.getLogger(__name__)


class WatchedQuery(Protocol):
    """The part of pyspark's ``StreamingQuery`` the watcher reads (a fake stands in for tests)."""

    @property
    def recentProgress(self) -> list[Any]: ...

    @property
    def status(self) -> dict[str, Any]: ...


class AlertPublisher(Protocol):
    def publish_stream_alerts(self, alerts: list[Alert]) -> None: ...

    def last_stream_alerts(self) -> list[Alert]: ...


class StreamWatcher:
    """Stream health on the driver, for one query."""

    def __init__(
        self,
        query: WatchedQuery,
        health: StreamHealth,
        publisher: AlertPublisher,
        metrics: DetectorMetrics,
        *,
        rows_per_event: int = 1,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.query = query
        self.health = health
        self.publisher = publisher
        self.metrics = metrics
        self.rows_per_event = rows_per_event
        self.interval_s = interval_s
        self.clock = clock
        self._seen = ""  # timestamp of the newest progress fed to the state machine
        self._watermark_ms: int | None = None  # of the last batch fed: the next one drops rows behind it
        self._pending: list[Alert] = []  # fired or resolved, not yet acknowledged by the broker

    @classmethod
    def build(
        cls, query: WatchedQuery, settings: DetectorSettings, publisher: AlertPublisher, metrics: DetectorMetrics
    ) -> StreamWatcher:
        """The watcher of the detector's query, polling once per trigger interval (at most every 5 s)."""
        health = StreamHealth(
            StreamHealthSettings(
                no_data_ms=settings.no_data_seconds * 1000,
                partition_lag_ms=settings.partition_lag_seconds * 1000,
                partition_lag_for_ms=settings.partition_lag_seconds * 1000,  # a lag must last as long as it is
                topic=settings.input_topic,
            )
        )
        try:  # a restart takes up the episodes it left firing (each still resolves once)
            resumed = health.resume(publisher.last_stream_alerts())
            if resumed:
                logger.info("stream health: %d firing episode(s) taken up from the alerts history", resumed)
        except Exception as exc:  # the history is down: start afresh rather than not at all
            logger.warning("stream health: could not read the alerts history: %s", exc, extra={"error": str(exc)})
        rows_per_event = len(settings.hierarchy.sets)
        return cls(
            query,
            health,
            publisher,
            metrics,
            rows_per_event=rows_per_event,
            interval_s=min(settings.trigger_seconds, 5.0),
        )

    def poll(self) -> list[Alert]:
        """Feed the new progress reports and the clock; publish; the alerts published."""
        for progress in self._new_progress():
            reading = reading_from_progress(progress, self.rows_per_event, self._watermark_ms)
            if reading.records:  # an idle report repeats the watermark of the batch to come
                self._watermark_ms = reading.watermark_ms
            self._pending += self.health.observe(reading)
            for p, part in reading.partitions.items():
                if part.late:
                    self.metrics.partition_late_events_total.labels(partition=str(p)).inc(part.late)
        now_ms = int(self.clock() * 1000)
        status = self.query.status or {}
        busy = bool(status.get("isTriggerActive") and status.get("isDataAvailable"))
        self._pending += self.health.tick(now_ms, data_pending=busy)
        self.metrics.input_idle_seconds.set(self.health.idle_seconds(now_ms))
        for p, lag_s in self.health.lag_seconds().items():
            self.metrics.partition_lag_seconds.labels(partition=str(p)).set(lag_s)
        if not self._pending:
            return []
        alerts, self._pending = self._pending, []
        try:
            self.publisher.publish_stream_alerts(alerts)
        except Exception:
            self._pending = alerts + self._pending  # retried on the next poll, same ids
            raise
        return alerts

    def _new_progress(self) -> list[dict[str, Any]]:
        fresh = []
        for progress in self.query.recentProgress or []:
            data = (
                progress if type(progress) is dict else progress_dict(progress)
            )  # a StreamingQueryProgress is a dict too
            stamp = str(data.get("timestamp") or "")
            if stamp > self._seen:
                fresh.append(data)
        if fresh:
            self._seen = max(str(d.get("timestamp") or "") for d in fresh)
        return sorted(fresh, key=lambda d: str(d.get("timestamp") or ""))

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; a failure is logged and retried, never fatal to the query."""
        while not stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception as exc:
                logger.warning("stream health: %s", exc, extra={"stage": "stream_health", "error": str(exc)})

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="adwatch-stream-health", daemon=True)
        thread.start()
        return thread
