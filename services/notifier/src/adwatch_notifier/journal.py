"""The delivery journal: each channel's episode records, durable outside Redis.

Redis holds, per channel and fingerprint, what the channel delivered for the open episode
(``episode``: severity and target; ``ref``: the provider's message id). A recovery follows that
record; without it Slack and email do not send the recovery (``never_notified``) and the
incident looks open forever. Redis can lose it (``FLUSHALL``, a restart without persistence, a
failover to a stale replica), so every change of an episode record also goes to a log-compacted
Kafka topic (``alerts.deliveries``, :data:`adwatch.contracts.TOPIC_ALERTS_DELIVERIES`):

- **write**: key ``<channel>|<fingerprint>``, value a :class:`DeliveryRecord` (the episode JSON
  as Redis holds it, the ref) when a firing is delivered or parked in doubt, a tombstone (no
  value) when its recovery closes the episode. :class:`JournaledLedger` wraps the Redis ledger
  and journals each ``episode`` write or delete right after Redis took it, acknowledged before
  the stage goes on (so before the offset of the alert is committed). A write the broker does not
  acknowledge is logged and counted (``journal_writes_total{outcome="failed"}``), never raised:
  Redis stays the record the stages read, the journal is its backup.
- **compaction** keeps the last record per key, so the topic holds the open episodes of every
  channel (closed ones leave with their tombstone a day later): reading it is bounded.
- **restore**: a marker key (``<prefix>:journal:<channel>:marker``) says "this Redis holds the
  channel's records". When it is missing (a fresh or flushed Redis, a restart that lost data),
  the topic is read from the beginning to its end (``restore_timeout_seconds`` at most), the last
  record per key of this channel kept, and every open episode written back with ``SET NX`` and
  the TTL it had left: a record Redis already has is the same or newer (Redis is written first)
  and is never overwritten. Then the marker is set. Restoring is idempotent, so replicas may
  race to do it.
- **when**: at start-up before the first poll, and whenever an ``episode`` or ``ref`` lookup
  misses while the marker is gone, so the very record that needs the episode (the recovery after
  a flush) finds it. A miss with the marker present costs one ``EXISTS``. While the journal
  cannot be read the lookup raises :class:`~adwatch_notifier.ledger.LedgerUnavailableError`: the
  record is deferred, never decided on missing data.

Not journaled: idempotency claims, cooldowns, the last recovery's window and group buffers (a
flush forgets them; committed offsets keep the alerts from being sent again). One topic serves one
Redis namespace (``REDIS_PREFIX``). A replica restoring while another closes the same episode may
write the episode back after its tombstone; the stale record only raises the next episode's
severity floor and expires with the idempotency TTL.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from adwatch.errors import AdwatchError
from adwatch.kafka import make_consumer, make_producer
from adwatch_notifier.ledger import KeyKind, LedgerUnavailableError, RedisLedger, _guarded
from adwatch_notifier.metrics import NotifierMetrics

logger = logging.getLogger(__name__)

RESTORED_KINDS: frozenset[KeyKind] = frozenset({"episode", "ref"})


class JournalError(AdwatchError):
    """The journal topic could not be written or read to its end."""


class DeliveryRecord(msgspec.Struct, frozen=True):
    """One channel's open episode of one fingerprint, as Redis holds it."""

    channel: str
    fingerprint: str
    episode: str  # the ``episode`` key's value (JSON of :class:`~adwatch_notifier.stages.Episode`)
    ref: str | None = None  # the ``ref`` key's value: the provider message a recovery answers
    written_at_ms: int = 0


def record_key(channel: str, fingerprint: str) -> bytes:
    return f"{channel}|{fingerprint}".encode()


class KafkaJournal:
    """Writes records acknowledged; reads one channel's last record per fingerprint."""

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 10.0) -> None:
        self.bootstrap, self.topic, self.timeout_s = bootstrap, topic, timeout_s
        self.errors: list[str] = []
        self.producer = make_producer(bootstrap, on_delivery=self._on_delivery, **{"linger.ms": 0})
        self.closed = False

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def write(self, key: bytes, value: bytes | None) -> None:
        """Produce and wait for the acknowledgement (``value=None``: a tombstone)."""
        self.producer.produce(self.topic, value=value, key=key)
        if self.producer.flush(self.timeout_s) > 0 or self.errors:
            errors, self.errors[:] = list(self.errors), []
            raise JournalError(f"journal record not acknowledged: {errors or 'timeout'}")

    def read(self, channel: str) -> dict[str, DeliveryRecord | None]:
        """Fingerprint -> the channel's last record (None: a tombstone), from the beginning to the end."""
        consumer = make_consumer(
            self.bootstrap, f"journal-restore-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
        )
        prefix = f"{channel}|".encode()
        found: dict[str, DeliveryRecord | None] = {}
        deadline = time.monotonic() + self.timeout_s
        try:
            meta = consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise JournalError(f"journal topic {self.topic!r} not found: {getattr(meta, 'error', None)}")
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions])
            left = set(meta.partitions)
            while left:
                if time.monotonic() > deadline:
                    raise JournalError(f"journal not read to its end in {self.timeout_s:.0f}s")
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        left.discard(msg.partition() or 0)
                    elif error.fatal():
                        raise JournalError(f"journal read failed: {error}")
                    continue
                key = msg.key() or b""
                if not key.startswith(prefix):
                    continue
                fingerprint, value = key[len(prefix) :].decode("utf-8", "replace"), msg.value()
                try:
                    found[fingerprint] = None if value is None else msgspec.json.decode(value, type=DeliveryRecord)
                except msgspec.DecodeError:
                    logger.warning(
                        "journal record skipped (not a DeliveryRecord): key=%s", key.decode("utf-8", "replace")
                    )
        finally:
            consumer.close()
        return found

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.producer.flush(5)


class JournaledLedger:
    """The Redis ledger, whose episode records are journaled and restored (see the module docstring)."""

    def __init__(
        self,
        inner: RedisLedger,
        journal: KafkaJournal,
        channel: str,
        *,
        ttl_s: int,
        metrics: NotifierMetrics | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.inner, self.journal, self.channel, self.ttl_s = inner, journal, channel, ttl_s
        self.metrics, self.now = metrics, now
        self.marker = inner.key("journal", "marker")

    # --- the Ledger protocol -----------------------------------------------------------------
    def get(self, kind: KeyKind, name: str) -> str | None:
        value = self.inner.get(kind, name)
        if value is None and kind in RESTORED_KINDS and self.ensure_restored():
            value = self.inner.get(kind, name)
        return value

    def swap(self, kind: KeyKind, name: str, expected: str | None, value: str, ttl_s: int) -> bool:
        return self.inner.swap(kind, name, expected, value, ttl_s)

    def delete_if(self, kind: KeyKind, name: str, expected: str) -> bool:
        return self.inner.delete_if(kind, name, expected)

    def put(self, kind: KeyKind, name: str, value: str, ttl_s: int) -> None:
        self.inner.put(kind, name, value, ttl_s)
        if kind == "episode":
            ref = self.inner.get("ref", name)
            record = DeliveryRecord(self.channel, name, value, ref, int(self.now() * 1000))
            self._journal(name, msgspec.json.encode(record))

    def delete(self, kind: KeyKind, name: str) -> None:
        self.inner.delete(kind, name)
        if kind == "episode":
            self._journal(name, None)

    def acquire_slot(self, target: str, interval_ms: int) -> float:
        return self.inner.acquire_slot(target, interval_ms)

    # --- journal and restore -----------------------------------------------------------------
    def _journal(self, fingerprint: str, value: bytes | None) -> None:
        outcome = "written"
        try:
            self.journal.write(record_key(self.channel, fingerprint), value)
        except Exception as exc:
            outcome = "failed"
            logger.warning(
                "episode record not journaled: channel=%s fingerprint=%s %s",
                self.channel,
                fingerprint,
                exc,
                extra={"channel": self.channel, "fingerprint": fingerprint},
            )
        if self.metrics is not None:
            self.metrics.journal_writes.labels(self.channel, outcome).inc()

    @_guarded
    def _marked(self) -> bool:
        return bool(self.inner.r.exists(self.marker))

    @_guarded
    def _mark(self) -> None:
        self.inner.r.set(self.marker, str(int(self.now() * 1000)))

    def ensure_restored(self) -> bool:
        """Restore the channel's open episodes when Redis lost them (no marker); True when it ran."""
        if self._marked():
            return False
        try:
            records = self.journal.read(self.channel)
        except Exception as exc:
            raise LedgerUnavailableError(f"episode records not restored: {type(exc).__name__}: {exc}") from None
        restored = self.restore(records)
        self._mark()
        if self.metrics is not None:
            self.metrics.episodes_restored.labels(self.channel).inc(restored)
        logger.info(
            "episode records restored from the journal: channel=%s restored=%d open=%d",
            self.channel,
            restored,
            sum(r is not None for r in records.values()),
            extra={"channel": self.channel},
        )
        return True

    @_guarded
    def restore(self, records: dict[str, DeliveryRecord | None]) -> int:
        """Write back each open episode Redis lacks (``SET NX``, the TTL it had left); how many were written."""
        now_ms, restored = int(self.now() * 1000), 0
        for fingerprint, record in records.items():
            if record is None:
                continue
            ttl_s = self.ttl_s - (now_ms - record.written_at_ms) // 1000
            if ttl_s <= 0:
                continue
            if self.inner.r.set(self.inner.key("episode", fingerprint), record.episode, nx=True, ex=ttl_s):
                restored += 1
                if record.ref is not None:
                    self.inner.r.set(self.inner.key("ref", fingerprint), record.ref, nx=True, ex=ttl_s)
        return restored
