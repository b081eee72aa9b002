"""The delivery journal: each channel's episode records, durable outside Redis.

Redis holds, per channel and fingerprint, what the channel delivered for the open episode
(``episode``: severity, target and the firing's evidence; ``ref``: the provider's message id). A recovery follows that
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
- **groups**: a grouped route's recovery looks for its firing in the group buffer, not in an
  episode, so :class:`JournaledGroupStore` journals the buffer the same way: each member
  (``<channel>|member|<group>|<fingerprint>``: target and the alert's latest state, a tombstone
  when a flushed recovery leaves) and each group's last notification (``<channel>|group|<group>``:
  when, its digest, the provider ref it updates; a tombstone when the group is dropped).
- **compaction** keeps the last record per key, so the topic holds the open episodes of every
  channel (closed ones leave with their tombstone a day later): reading it is bounded.
- **restore**: a marker key (``<prefix>:journal:<channel>:marker``) says "this Redis holds the
  channel's records". When it is missing (a fresh or flushed Redis, a restart that lost data),
  the topic is read from the beginning to its end (``restore_timeout_seconds`` at most), the last
  record per key of this channel kept, and every open episode written back with ``SET NX`` and
  the TTL it had left (group members and flushes with ``HSETNX``, the group due at once: its
  restored digest keeps an unchanged group from being sent again): a record Redis already has is
  the same or newer (Redis is written first) and is never overwritten. Then the marker is set. Restoring is idempotent, so replicas may
  race to do it.
- **when**: at start-up before the first poll, whenever an ``episode``, ``ref`` or group-member
  lookup misses while the marker is gone, so the very record that needs it (the recovery after
  a flush) finds it, and on each tick of the group flusher (a buffered group is sent all the
  same). A look at the marker costs one ``EXISTS``. While the journal
  cannot be read the lookup raises :class:`~adwatch_notifier.ledger.LedgerUnavailableError`: the
  record is deferred, never decided on missing data.

- **last recovery and silences**: a fingerprint's last recovery window (``<channel>|resolved|<fp>``,
  the ``resolved`` key: a firing replayed after a flush is still ``stale``, it does not reopen the
  incident) and the shared silences (``silence|<id>``, every add and expire, written by the
  notifier's HTTP routes and the ``silence`` CLI through :class:`JournaledSilenceStore`), restored
  with the rest (a silence kept while it lasts plus ``RETENTION_S``, whatever the ledger's TTL).

Not journaled: idempotency claims, cooldowns, rate slots (a flush forgets them; committed offsets
keep the alerts from being sent again) and inhibition sources (renewed by the next firing window). One topic serves one
Redis namespace (``REDIS_PREFIX``). A replica restoring while another closes the same episode may
write the episode back after its tombstone; the stale record only raises the next episode's
severity floor and expires with the idempotency TTL.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from adwatch.errors import AdwatchError
from adwatch.kafka import make_consumer, make_producer
from adwatch_notifier.grouping import GroupState, RedisGroupStore
from adwatch_notifier.ledger import KeyKind, LedgerUnavailableError, RedisLedger, _guarded
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.silences import RETENTION_S, RedisSilenceStore, Silence

logger = logging.getLogger(__name__)

RESTORED_KINDS: frozenset[KeyKind] = frozenset({"episode", "ref", "resolved"})


class JournalError(AdwatchError):
    """The journal topic could not be written or read to its end."""


class DeliveryRecord(msgspec.Struct, frozen=True, tag="episode"):
    """One channel's open episode of one fingerprint, as Redis holds it."""

    channel: str
    fingerprint: str
    episode: str  # the ``episode`` key's value (JSON of :class:`~adwatch_notifier.stages.Episode`)
    ref: str | None = None  # the ``ref`` key's value: the provider message a recovery answers
    written_at_ms: int = 0


class GroupMemberRecord(msgspec.Struct, frozen=True, tag="member"):
    """An alert held in a group buffer of a grouped route (``group_by``), as Redis holds it."""

    group: str
    fingerprint: str
    target: str
    alert: str  # the alert's JSON (the buffer keeps the latest state of each member)
    written_at_ms: int = 0
    traceparent: str = ""  # the member record's trace (the group notification links it)


class GroupFlushRecord(msgspec.Struct, frozen=True, tag="group"):
    """A group's last notification: when, what it said (digest), the provider ref it updates, the
    members firing then and the group's first notification (for the next one's change line)."""

    group: str
    last_flush_ms: int
    digest: str
    ref: str | None = None
    written_at_ms: int = 0
    members: list[str] = []
    since_ms: int = 0


class ResolvedRecord(msgspec.Struct, frozen=True, tag="resolved"):
    """A fingerprint's last recovery window on one channel (the ``resolved`` key): a firing replayed
    after a Redis flush that is not after it is still ``stale``, it does not reopen the incident."""

    fingerprint: str
    window_start_ms: int
    written_at_ms: int = 0


class SilenceRecord(msgspec.Struct, frozen=True, tag="silence"):
    """A silence as the shared ``…:silences`` hash holds it (key ``silence|<id>``, for every channel)."""

    id: str
    silence: str  # :meth:`Silence.encode`
    written_at_ms: int = 0


Record = DeliveryRecord | GroupMemberRecord | GroupFlushRecord | ResolvedRecord | SilenceRecord

SILENCE_PREFIX = "silence|"


def record_key(channel: str, fingerprint: str) -> bytes:
    """``<channel>|<fingerprint>`` (episodes); groups: ``<channel>|member|<group>|<fp>``, ``<channel>|group|<group>``."""
    return f"{channel}|{fingerprint}".encode()


def resolved_key(channel: str, fingerprint: str) -> bytes:
    return record_key(channel, f"resolved|{fingerprint}")


def silence_key(silence_id: str) -> bytes:
    """Silences are shared by the channels: no channel in the key."""
    return f"{SILENCE_PREFIX}{silence_id}".encode()


def member_key(channel: str, group: str, fingerprint: str) -> bytes:
    return record_key(channel, f"member|{group}|{fingerprint}")


def group_key_of(channel: str, group: str) -> bytes:
    return record_key(channel, f"group|{group}")


class KafkaJournal:
    """Writes records acknowledged; reads one channel's last record per fingerprint.

    ``timeout_s`` bounds a read to the end of the topic; ``write_timeout_s`` the wait for one
    acknowledgement (a broker that does not answer delays the record that many seconds, once).
    """

    def __init__(self, bootstrap: str, topic: str, *, timeout_s: float = 30.0, write_timeout_s: float = 5.0) -> None:
        self.bootstrap, self.topic, self.timeout_s, self.write_timeout_s = bootstrap, topic, timeout_s, write_timeout_s
        self.errors: list[str] = []
        self.producer = make_producer(bootstrap, on_delivery=self._on_delivery, **{"linger.ms": 0})
        self.closed = False
        self._lock = threading.Lock()  # delivery workers write concurrently: one record and its flush at a time

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def write(self, key: bytes, value: bytes | None) -> None:
        """Produce and wait for the acknowledgement (``value=None``: a tombstone)."""
        with self._lock:
            self.producer.produce(self.topic, value=value, key=key)
            if self.producer.flush(self.write_timeout_s) > 0 or self.errors:
                errors, self.errors[:] = list(self.errors), []
                raise JournalError(f"journal record not acknowledged: {errors or 'timeout'}")

    def read(self, channel: str) -> dict[str, Record | None]:
        """Key after ``<channel>|`` -> the channel's last record (None: a tombstone), from the beginning to the end.

        The shared silences come too, under their whole key (``silence|<id>``).
        """
        consumer = make_consumer(
            self.bootstrap, f"journal-restore-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
        )
        prefix, shared = f"{channel}|".encode(), SILENCE_PREFIX.encode()
        found: dict[str, Record | None] = {}
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
                if key.startswith(prefix):
                    name = key[len(prefix) :].decode("utf-8", "replace")
                elif key.startswith(shared):
                    name = key.decode("utf-8", "replace")
                else:
                    continue
                value = msg.value()
                try:
                    found[name] = None if value is None else msgspec.json.decode(value, type=Record)
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
        groups: RedisGroupStore | None = None,
        silences: RedisSilenceStore | None = None,
    ) -> None:
        self.inner, self.journal, self.channel, self.ttl_s = inner, journal, channel, ttl_s
        self.metrics, self.now, self.groups, self.silences = metrics, now, groups, silences
        self.marker = inner.key("journal", "marker")
        self._restoring = threading.Lock()

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
        elif kind == "resolved":
            window = int(value)
            encoded = msgspec.json.encode(ResolvedRecord(name, window, int(self.now() * 1000)))
            self.journal_key(resolved_key(self.channel, name), encoded)

    def delete(self, kind: KeyKind, name: str) -> None:
        self.inner.delete(kind, name)
        if kind == "episode":
            self._journal(name, None)

    def acquire_slot(self, target: str, interval_ms: int) -> float:
        return self.inner.acquire_slot(target, interval_ms)

    # --- journal and restore -----------------------------------------------------------------
    def _journal(self, fingerprint: str, value: bytes | None) -> None:
        self.journal_key(record_key(self.channel, fingerprint), value)

    def journal_key(self, key: bytes, value: bytes | None) -> None:
        """Write one record (None: a tombstone); a failure is logged and counted, never raised."""
        fingerprint = key.decode("utf-8", "replace").split("|", 1)[-1]
        outcome = "written"
        try:
            self.journal.write(key, value)
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
        """Restore the channel's open episodes when Redis lost them (no marker); True when it ran.

        One restore at a time (delivery workers miss together after a flush): the others find the marker.
        """
        if self._marked():
            return False
        with self._restoring:
            if self._marked():
                return False
            return self._restore_now()

    def _restore_now(self) -> bool:
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
    def restore(self, records: dict[str, Record | None]) -> int:
        """Write back what Redis lacks (``SET NX``/``HSETNX``, the TTL it had left); how many records were written.

        Episodes get their ``episode`` and ``ref`` keys; group members go back into their buffer,
        the group due at once (its restored digest keeps an unchanged group from being sent again).
        """
        now_ms, restored = int(self.now() * 1000), 0
        for record in records.values():
            if record is None:
                continue
            if isinstance(record, SilenceRecord):  # kept for as long as it lasts, not the ledger's TTL
                restored += self._restore_silence(record, now_ms)
                continue
            ttl_s = self.ttl_s - (now_ms - record.written_at_ms) // 1000
            if ttl_s <= 0:
                continue
            if isinstance(record, DeliveryRecord):
                fingerprint = record.fingerprint
                if self.inner.r.set(self.inner.key("episode", fingerprint), record.episode, nx=True, ex=ttl_s):
                    restored += 1
                    if record.ref is not None:
                        self.inner.r.set(self.inner.key("ref", fingerprint), record.ref, nx=True, ex=ttl_s)
            elif isinstance(record, ResolvedRecord):
                key = self.inner.key("resolved", record.fingerprint)
                restored += bool(self.inner.r.set(key, str(record.window_start_ms), nx=True, ex=ttl_s))
            elif self.groups is not None:
                restored += self._restore_group(self.groups, record, now_ms)
        return restored

    def _restore_silence(self, record: SilenceRecord, now_ms: int) -> int:
        silence = Silence.parse(record.silence)
        if self.silences is None or silence is None or silence.ends_at < now_ms / 1000 - RETENTION_S:
            return 0
        return int(self.silences.r.hsetnx(self.silences.key, record.id, record.silence))

    def _restore_group(self, groups: RedisGroupStore, record: GroupMemberRecord | GroupFlushRecord, now_ms: int) -> int:
        meta = groups._k("groupmeta", record.group)
        if isinstance(record, GroupFlushRecord):
            fields = {
                "last": str(record.last_flush_ms),
                "digest": record.digest,
                "members": " ".join(record.members),
                **({"ref": record.ref} if record.ref else {}),
                **({"since": str(record.since_ms)} if record.since_ms else {}),
            }
            for name, value in fields.items():
                self.inner.r.hsetnx(meta, name, value)
            return 0
        buffer = groups._k("group", record.group)
        written = int(self.inner.r.hsetnx(buffer, record.fingerprint, record.alert))
        self.inner.r.expire(buffer, groups.ttl_s)
        if record.traceparent:
            traces = groups._k("grouptrace", record.group)
            self.inner.r.hsetnx(traces, record.fingerprint, record.traceparent)
            self.inner.r.expire(traces, groups.ttl_s)
        self.inner.r.hsetnx(meta, "target", record.target)
        self.inner.r.expire(meta, groups.ttl_s)
        self.inner.r.zadd(groups.schedule_key, {record.group: now_ms}, nx=True)
        return written


class JournaledGroupStore:
    """The Redis group buffer, journaled like the episodes: members, flushes, and restored from the journal."""

    def __init__(self, inner: RedisGroupStore, ledger: JournaledLedger) -> None:
        self.inner, self.ledger, self.channel = inner, ledger, ledger.channel

    def add(self, key: str, target: str, fingerprint: str, alert: bytes, due_ms: int, trace: str = "") -> None:
        self.inner.add(key, target, fingerprint, alert, due_ms, trace)
        now_ms = int(self.ledger.now() * 1000)
        record = GroupMemberRecord(key, fingerprint, target, alert.decode("utf-8", "replace"), now_ms, trace)
        self.ledger.journal_key(member_key(self.channel, key, fingerprint), msgspec.json.encode(record))

    def has(self, key: str, fingerprint: str) -> bool:
        return self.inner.has(key, fingerprint) or (self.ledger.ensure_restored() and self.inner.has(key, fingerprint))

    def due(self, now_ms: int, limit: int) -> list[str]:
        self.ledger.ensure_restored()  # the flusher's tick: a group buffered before a loss is sent all the same
        return self.inner.due(now_ms, limit)

    def claim(self, key: str, owner: str, lease_ms: int) -> bool:
        return self.inner.claim(key, owner, lease_ms)

    def release(self, key: str, owner: str) -> None:
        self.inner.release(key, owner)

    def load(self, key: str) -> GroupState:
        return self.inner.load(key)

    def flushed(
        self,
        key: str,
        *,
        at_ms: int,
        digest: str,
        ref: str | None,
        gone: Mapping[str, bytes],
        due_ms: int | None,
        members: Sequence[str] = (),
    ) -> None:
        self.inner.flushed(key, at_ms=at_ms, digest=digest, ref=ref, gone=gone, due_ms=due_ms, members=members)
        for fingerprint in gone:
            if not self.inner.has(key, fingerprint):  # it left (a member changed since stays)
                self.ledger.journal_key(member_key(self.channel, key, fingerprint), None)
        state = self.inner.load(key)
        if not state.alerts:
            self.ledger.journal_key(group_key_of(self.channel, key), None)
            return
        now_ms = int(self.ledger.now() * 1000)
        record = GroupFlushRecord(key, at_ms, digest, ref, now_ms, list(members), state.since_ms or at_ms)
        self.ledger.journal_key(group_key_of(self.channel, key), msgspec.json.encode(record))

    def reschedule(self, key: str, due_ms: int) -> None:
        self.inner.reschedule(key, due_ms)

    def drop(self, key: str) -> None:
        try:
            fingerprints = self.inner.fingerprints(key)
        except LedgerUnavailableError:
            raise
        except Exception:  # not a hash any more: nothing to tombstone member by member
            fingerprints = []
        self.inner.drop(key)
        for fingerprint in fingerprints:
            self.ledger.journal_key(member_key(self.channel, key, fingerprint), None)
        self.ledger.journal_key(group_key_of(self.channel, key), None)


class JournaledSilenceStore:
    """The shared silences, each change also journaled (``silence|<id>``), restored with the episodes.

    A write the broker does not acknowledge is logged, never raised: the silence is in Redis.
    """

    def __init__(self, inner: RedisSilenceStore, journal: KafkaJournal, now: Callable[[], float] = time.time) -> None:
        self.inner, self.journal, self.now = inner, journal, now

    def add(self, silence: Silence) -> None:
        self.inner.add(silence)
        self._journal(silence)

    def all(self) -> list[Silence]:
        return self.inner.all()

    def expire(self, silence_id: str, now_s: float) -> bool:
        if not self.inner.expire(silence_id, now_s):
            return False
        ended = next((s for s in self.inner.all() if s.id == silence_id), None)
        if ended is not None:
            self._journal(ended)
        return True

    def collect(self, now_s: float) -> int:
        return self.inner.collect(now_s)

    def _journal(self, silence: Silence) -> None:
        record = SilenceRecord(silence.id, silence.encode(), int(self.now() * 1000))
        try:
            self.journal.write(silence_key(silence.id), msgspec.json.encode(record))
        except Exception as exc:
            logger.warning("silence not journaled: silence_id=%s %s", silence.id, exc, extra={"silence_id": silence.id})
