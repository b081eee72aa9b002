"""Is the input stream itself healthy? The driver's ``no_data`` and ``partition_lagging`` alerts.

A stream that stops entirely freezes the event-time watermark: no window closes, no rule runs, and
nobody is told. A partition whose events trail the others' has them dropped as late by the global
watermark. Neither is a segment's anomaly, so no rule can see it; the driver does, once per
micro-batch (:meth:`StreamHealth.observe`) and on processing time between batches
(:meth:`StreamHealth.tick`), from what it reads off the query's progress.

Pure logic: time comes in as ``now_ms`` (processing time), nothing here reads a clock or talks to
a broker. Each problem is one episode: it fires once and resolves once (``resolution="recovered"``,
``duration_ms``), and its alert ids derive from the episode's start (:func:`make_alert_id`), so
the same inputs mint the same ids.

- ``no_data`` (critical, segment ``*``): no record read on the whole topic for ``no_data_ms`` of
  processing time; the episode starts when the last record was read, and resolves on the next one.
- ``partition_lagging`` (high, segment ``partition=<n>``, dimensions ``{"partition": "<n>"}``): the
  newest event time read from a partition trails the newest of any partition by more than
  ``partition_lag_ms`` (its events fall behind the global watermark and are dropped as late), or
  most of its events in a batch were dropped as late (:data:`LATE_SHARE`); it resolves once the partition is back within half of that (hysteresis: no flapping at the edge).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adwatch.contracts import (
    GLOBAL_SEGMENT_ID,
    Alert,
    AlertType,
    Metric,
    Severity,
    make_alert_id,
    make_fingerprint,
    segment_id,
)

RULE_ID = "stream"
"""The ``rule`` of a stream alert (metric labels, logs): the driver raised it, not a rule."""
LATE_SHARE = 0.5
MIN_LATE_EVENTS = 10
EXTREME_LAG = 5.0
"""A lag of this many times ``partition_lag_ms`` pages at once, without ``partition_lag_for_ms``."""
"""A batch in which a partition had at least half its events, and at least 10, dropped as late
fires ``partition_lagging`` whatever its lag (the watermark is seconds; the lag threshold a minute)."""
NO_DATA_SEVERITY: Severity = "critical"
LAGGING_SEVERITY: Severity = "high"


@dataclass(frozen=True)
class StreamHealthSettings:
    """When the stream is unhealthy; 0 turns a check off."""

    no_data_ms: int = 120_000
    partition_lag_ms: int = 60_000
    partition_lag_for_ms: int = 0
    """How long (processing time) a lag short of extreme must last before it pages; 0: at once. A
    producer backfilling far faster than real time skews one batch's partitions for a moment
    (their ends are sampled a moment apart); a lag that lasts is a lagging partition."""
    topic: str = "ad-events"
    rule_set: str = "default"


@dataclass(frozen=True)
class PartitionBatch:
    """What one micro-batch read from one partition."""

    events: int = 0
    """Valid events read (a bad record still dead-letters, it has no event time)."""
    max_event_ms: int | None = None
    late: int = 0
    """Its events the watermark dropped (or dead-lettered) as late in this batch."""


@dataclass(frozen=True)
class BatchReading:
    """One micro-batch as the driver saw it (from its StreamingQueryProgress)."""

    at_ms: int
    """Processing time at the end of the batch (its progress timestamp plus its duration)."""
    records: int
    """Kafka records read (valid or not): any record means the topic is not silent."""
    watermark_ms: int = 0
    partitions: Mapping[int, PartitionBatch] = field(default_factory=dict)


@dataclass
class _Episode:
    started_ms: int
    peak: float = 0.0


@dataclass
class StreamHealth:
    """The driver's state machine (one per query, in driver memory). A restarted driver takes up
    the episodes it had published as firing (:meth:`resume`), so each still resolves once."""

    settings: StreamHealthSettings
    last_data_ms: int | None = None
    last_records: int = 0
    """Records of the last batch that read any: what a batch looked like before a silence."""
    newest_ms: dict[int, int] = field(default_factory=dict)
    """The newest event time read from each partition."""
    late_total: dict[int, int] = field(default_factory=dict)
    no_data: _Episode | None = None
    lagging: dict[int, _Episode] = field(default_factory=dict)
    lag_since: dict[int, int] = field(default_factory=dict)
    """Partitions breaching, not yet paged: since when (processing time)."""

    # --- inputs ---------------------------------------------------------------------------
    def resume(self, last_published: Iterable[Alert]) -> int:
        """Take up the episodes a previous driver left firing: of the stream alerts it published
        (``last_published``, from the alerts history), each fingerprint's last; the firing ones become
        open episodes again, with their start (so their resolve gets the id it would have had).
        Without this a restart in the middle of an episode would leave it firing for ever.
        Returns how many were resumed."""
        last: dict[str, Alert] = {}
        for alert in sorted(last_published, key=lambda a: (a.detected_at_ms, a.status == "resolved")):
            last[alert.fingerprint] = alert  # a resolve after (or with) its firing closes the episode
        resumed = 0
        for alert in last.values():
            if alert.rule != RULE_ID or alert.status != "firing":
                continue
            episode = _Episode(alert.window_start_ms, alert.current)
            if alert.alert_type == "no_data":
                self.no_data, resumed = episode, resumed + 1
            elif alert.alert_type == "partition_lagging" and alert.dimensions.get("partition", "").isdigit():
                self.lagging[int(alert.dimensions["partition"])] = episode
                resumed += 1
        return resumed

    def observe(self, batch: BatchReading) -> list[Alert]:
        """One finished micro-batch: the alerts it fires or resolves (stream alerts first)."""
        alerts: list[Alert] = []
        if self.last_data_ms is None or batch.records > 0:  # the silence is timed from the first batch on
            self.last_data_ms = max(self.last_data_ms or 0, batch.at_ms)
        if batch.records > 0 and self.no_data is not None:
            alerts.append(self._no_data_alert("resolved", batch.at_ms, self.no_data, batch.records))
            self.no_data = None
        if batch.records > 0:
            self.last_records = batch.records
        for p, part in batch.partitions.items():
            if part.max_event_ms is not None:
                self.newest_ms[p] = max(self.newest_ms.get(p, part.max_event_ms), part.max_event_ms)
            if part.late:
                self.late_total[p] = self.late_total.get(p, 0) + part.late
        alerts += self._check_lag(batch.at_ms, batch.partitions)
        alerts += self.tick(batch.at_ms)
        return alerts

    def tick(self, now_ms: int, data_pending: bool = False) -> list[Alert]:
        """Processing time passed without a finished batch (an idle trigger, or the driver's timer).

        ``data_pending``: a trigger is running on new data right now (a long batch is not silence).
        Before the first batch nothing is judged: the query is still starting (liveness covers that).
        """
        if self.last_data_ms is None:
            return []
        if data_pending:
            self.last_data_ms = max(self.last_data_ms, now_ms)
        limit = self.settings.no_data_ms
        silent_ms = now_ms - self.last_data_ms
        if limit > 0 and self.no_data is None and silent_ms > limit:
            self.no_data = _Episode(self.last_data_ms, silent_ms / 1000.0)
            return [self._no_data_alert("firing", now_ms, self.no_data)]
        if self.no_data is not None:
            self.no_data.peak = max(self.no_data.peak, silent_ms / 1000.0)
        return []

    # --- views ----------------------------------------------------------------------------
    def idle_seconds(self, now_ms: int) -> float:
        """Processing time since the last record read (0 before the first batch)."""
        return max(0.0, (now_ms - self.last_data_ms) / 1000.0) if self.last_data_ms is not None else 0.0

    def lag_seconds(self) -> dict[int, float]:
        """How far each partition's newest event time trails the newest of all partitions."""
        if not self.newest_ms:
            return {}
        lead = max(self.newest_ms.values())
        return {p: (lead - t) / 1000.0 for p, t in sorted(self.newest_ms.items())}

    # --- logic ----------------------------------------------------------------------------
    def _check_lag(self, now_ms: int, parts: Mapping[int, PartitionBatch]) -> list[Alert]:
        limit = self.settings.partition_lag_ms
        if limit <= 0:
            return []
        alerts: list[Alert] = []
        late = {p: part.late for p, part in parts.items()}
        for p, lag_s in self.lag_seconds().items():
            part = parts.get(p)
            if part is None or (part.events <= 0 and not part.late):
                continue  # idle in this batch: nothing of it trails or is dropped (an idle partition holds nothing back)
            episode = self.lagging.get(p)
            if episode is None:
                if not (lag_s * 1000 > limit or _mostly_late(part)):
                    self.lag_since.pop(p, None)
                    continue
                since = self.lag_since.setdefault(p, now_ms)
                if lag_s * 1000 > EXTREME_LAG * limit or now_ms - since >= self.settings.partition_lag_for_ms:
                    del self.lag_since[p]
                    episode = self.lagging[p] = _Episode(since, lag_s)
                    alerts.append(self._lag_alert("firing", now_ms, p, episode, lag_s, late.get(p, 0)))
            else:
                episode.peak = max(episode.peak, lag_s)
                if lag_s * 1000 <= limit / 2 and not late.get(p, 0):
                    alerts.append(self._lag_alert("resolved", now_ms, p, episode, lag_s, 0))
                    del self.lagging[p]
        return alerts

    def _no_data_alert(self, status: str, now_ms: int, episode: _Episode, records: int = 0) -> Alert:
        limit_s = self.settings.no_data_ms / 1000.0
        silent_s = (now_ms - episode.started_ms) / 1000.0
        topic = self.settings.topic
        if status == "firing":
            message = f"🚨 No data! {topic}: no record read for {silent_s:,.0f} s (threshold {limit_s:,.0f} s)"
        else:
            message = f"✅ Resolved: No data {topic}: records flow again after {silent_s:,.0f} s of silence"
        return self._alert(
            "no_data", status, GLOBAL_SEGMENT_ID, {}, episode, now_ms, NO_DATA_SEVERITY,
            metric="events", current=float(records), expected=float(self.last_records), message=message,
        )  # fmt: skip

    def _lag_alert(self, status: str, now_ms: int, partition: int, episode: _Episode, lag_s: float, late: int) -> Alert:
        limit_s = self.settings.partition_lag_ms / 1000.0
        where = f"{self.settings.topic} partition {partition}"
        if status == "firing":
            dropped = f", {late:,} events dropped as late" if late else ""
            message = f"🚨 Partition lagging! {where}: event time {lag_s:,.0f} s behind the newest partition{dropped}"
        else:
            total = self.late_total.get(partition, 0)
            message = f"✅ Resolved: Partition lagging {where}: back to {lag_s:,.0f} s behind ({total:,} late in all)"
        dims = {"partition": str(partition)}
        return self._alert(
            "partition_lagging", status, segment_id(dims), dims, episode, now_ms, LAGGING_SEVERITY,
            metric="lag_seconds", current=lag_s, expected=limit_s, message=message, volume=late,
        )  # fmt: skip

    def _alert(
        self,
        alert_type: AlertType,
        status: str,
        segment: str,
        dimensions: dict[str, str],
        episode: _Episode,
        now_ms: int,
        severity: Severity,
        *,
        metric: Metric,
        current: float,
        expected: float,
        message: str,
        volume: int = 0,
    ) -> Alert:
        fingerprint = make_fingerprint(alert_type, segment)
        resolved = status == "resolved"
        return Alert(
            alert_id=make_alert_id(fingerprint, episode.started_ms, status),
            fingerprint=fingerprint,
            status="resolved" if resolved else "firing",
            alert_type=alert_type,
            severity=severity,
            metric=metric,
            current=current,
            expected=expected,
            band_low=0.0,
            band_high=expected,
            deviation_pct=100.0 * (current - expected) / expected if expected else 0.0,
            volume=volume,
            p_value=0.0,
            z_score=0.0,
            window_start_ms=episode.started_ms,
            window_end_ms=max(now_ms, episode.started_ms),
            detected_at_ms=now_ms,
            message=message,
            rule_set=self.settings.rule_set,
            rule=RULE_ID,
            dimensions=dimensions,
            segment_id=segment,
            resolution="recovered" if resolved else None,
            duration_ms=max(0, now_ms - episode.started_ms) if resolved else 0,
        )


def _mostly_late(part: PartitionBatch | None) -> bool:
    """Most of a partition's events of the batch dropped as late (and not a straggler or two): it
    lags behind the watermark even while within ``partition_lag_ms`` of the others."""
    return part is not None and part.late >= max(MIN_LATE_EVENTS, LATE_SHARE * part.events)


PARTITIONS_OBSERVATION = "adwatch_partitions"
"""The name of the job's per-partition observed metrics: ``events_<p>``, ``max_<p>``, ``min_<p>``."""


def reading_from_progress(
    progress: Mapping[str, Any], rows_per_event: int = 1, late_before_ms: int | None = None
) -> BatchReading:
    """One StreamingQueryProgress (its JSON dict, observed metrics as dicts) -> a :class:`BatchReading`.

    The watermark drops rows of the stateful step (one per event and watched segment set:
    ``rows_per_event``), after the observation; they are put down to the partitions whose oldest
    event of the batch is behind ``late_before_ms``, in proportion to their events (exact when one
    partition lags, as is usual). Spark drops late rows by the *previous* batch's watermark (the
    current one only evicts state), so that is what the caller passes; None: this batch's.
    """
    observed = (progress.get("observedMetrics") or {}).get(PARTITIONS_OBSERVATION) or {}
    watermark = _epoch_ms((progress.get("eventTime") or {}).get("watermark"))
    cutoff = watermark if late_before_ms is None else late_before_ms
    events: dict[int, int] = {}
    newest: dict[int, int | None] = {}
    behind: list[int] = []
    for name, value in observed.items():
        kind, _, part = name.partition("_")
        if not part.isdigit():
            continue
        p = int(part)
        if kind == "events" and value:
            events[p] = int(value)
        elif kind == "max" and value is not None:
            newest[p] = int(value)
        elif kind == "min" and value is not None and cutoff > 0 and int(value) < cutoff:
            behind.append(p)
    ops = progress.get("stateOperators") or []
    dropped = sum(int(op.get("numRowsDroppedByWatermark", 0) or 0) for op in ops) // max(1, rows_per_event)
    late = _share(dropped, {p: events.get(p, 0) for p in sorted(behind)})
    parts = {
        p: PartitionBatch(events.get(p, 0), newest.get(p), late.get(p, 0)) for p in sorted({*events, *newest, *late})
    }
    took_ms = int((progress.get("durationMs") or {}).get("triggerExecution") or 0)
    return BatchReading(
        at_ms=_epoch_ms(progress.get("timestamp")) + took_ms,
        records=int(progress.get("numInputRows") or 0),
        watermark_ms=watermark,
        partitions=parts,
    )


def _share(total: int, weights: Mapping[int, int]) -> dict[int, int]:
    """``total`` split over the keys in proportion to their weights (largest remainders)."""
    if total <= 0 or not weights:
        return {}
    sum_w = sum(weights.values())
    exact = {k: total * (w / sum_w if sum_w else 1 / len(weights)) for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - out[k], reverse=True)[: total - sum(out.values())]:
        out[k] += 1
    return {k: v for k, v in out.items() if v}


def _epoch_ms(iso: str | None) -> int:
    if not iso:
        return 0
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


__all__ = [
    "PARTITIONS_OBSERVATION",
    "BatchReading",
    "PartitionBatch",
    "StreamHealth",
    "StreamHealthSettings",
    "reading_from_progress",
]
