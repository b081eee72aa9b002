"""Grouping (Alertmanager's dispatcher): alerts of a grouped route become one notification per group.

A route with ``group_by`` holds its alerts in a group buffer keyed by the values of those
labels (:class:`GroupStore`: Redis for replicas, memory for tests); :class:`GroupFlusher`,
driven by the run loop's clock, sends a group ``group_wait`` after its first alert, then at most
every ``group_interval`` while it changes, and again every ``repeat_interval`` while it fires
unchanged. A notification lists every alert of the group; a flushed recovery leaves the
group, an empty group is dropped. The notification is one :class:`Alert` per group
(:func:`summary`) whose fingerprint is the group key, so each channel's own format applies:
one Slack message (with a bot token: updated in place, each change and repeat a thread reply
such as "+2 joined: US banner, DE native · 1 recovered: FR app_id=com.x · 5 firing"; with a webhook a
new message starting with that line), one PagerDuty incident (``dedup_key`` = group key, resolved
when every alert of the group is), one email thread (later mails answer the first).
The group remembers its firing members and its first notification's time for those lines.

Delivery is at least once per group state: a replica claims a due group for a lease, a crash
mid-send sends that state again after the lease. A group's send follows the rules of a single
delivery (the shared rate limit, backoff with Retry-After and deadline, dead letters on a
permanent failure); a group that cannot be read or rendered is dead-lettered, never blocks the others.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

import msgspec
import redis
from opentelemetry import context as otel_context
from opentelemetry import trace

from adwatch.contracts import SEVERITIES, Alert, decode, duration_text, make_alert_id
from adwatch.telemetry import extract_context
from adwatch_notifier.channels import BaseChannel
from adwatch_notifier.delivery import DeliveryError
from adwatch_notifier.formatting import Thread, child_name
from adwatch_notifier.ledger import LedgerUnavailableError, _guarded
from adwatch_notifier.outcomes import DeadLetter, Defer
from adwatch_notifier.retry import RetryPolicy, after_failure

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

MESSAGE_MAX = 4000


@dataclass(frozen=True)
class GroupSpec:
    """A route's grouping: labels and Alertmanager's three timers (seconds)."""

    by: tuple[str, ...]
    wait_s: float = 30.0
    interval_s: float = 300.0
    repeat_s: float = 4 * 3600.0


def group_key(route_index: int, spec: GroupSpec, labels: Mapping[str, str]) -> str:
    """``g<route>:<label>=<value>,...``: printable ASCII, no spaces (it is also the PagerDuty
    dedup_key): values are percent-encoded, as in a segment id (a dimension value is any text)."""
    parts = ",".join(f"{name}={quote(labels.get(name, ''), safe='')}" for name in spec.by)
    return f"g{route_index}:{parts}"


def route_index(key: str) -> int:
    return int(key.split(":", 1)[0][1:])


@dataclass
class GroupState:
    """One group as stored: its target, alerts (fingerprint -> encoded alert) and last flush."""

    target: str = ""
    alerts: dict[str, bytes] | None = None
    last_flush_ms: int = 0
    digest: str = ""
    ref: str | None = None
    members: tuple[str, ...] = ()  # the fingerprints firing at the last flush
    since_ms: int = 0  # the group's first notification (notifier clock)
    traces: dict[str, str] | None = None  # fingerprint -> the traceparent of the member's latest record


class GroupStore(Protocol):
    def add(self, key: str, target: str, fingerprint: str, alert: bytes, due_ms: int, trace: str = "") -> None:
        """Put the alert's latest state (and its record's ``traceparent``) in the group; a new group is due at ``due_ms``."""
        ...

    def has(self, key: str, fingerprint: str) -> bool: ...

    def due(self, now_ms: int, limit: int) -> list[str]: ...

    def claim(self, key: str, owner: str, lease_ms: int) -> bool: ...

    def release(self, key: str, owner: str) -> None: ...

    def load(self, key: str) -> GroupState: ...

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
        """After a send: forget ``gone`` alerts (if unchanged), note the flush and the firing
        ``members``, next due (None: drop if empty); the first flush's time is kept."""
        ...

    def reschedule(self, key: str, due_ms: int) -> None: ...

    def drop(self, key: str) -> None:
        """Forget the group (members, flush record, schedule): it was dead-lettered."""
        ...


class MemoryGroupStore:
    def __init__(self) -> None:
        self.groups: dict[str, GroupState] = {}
        self.schedule: dict[str, int] = {}
        self.locks: dict[str, str] = {}

    def add(self, key: str, target: str, fingerprint: str, alert: bytes, due_ms: int, trace: str = "") -> None:
        state = self.groups.setdefault(key, GroupState(target, {}, traces={}))
        assert state.alerts is not None and state.traces is not None
        state.alerts[fingerprint] = alert
        if trace:
            state.traces[fingerprint] = trace
        else:
            state.traces.pop(fingerprint, None)
        self.schedule.setdefault(key, due_ms)

    def has(self, key: str, fingerprint: str) -> bool:
        state = self.groups.get(key)
        return state is not None and fingerprint in (state.alerts or {})

    def due(self, now_ms: int, limit: int) -> list[str]:
        return sorted((k for k, at in self.schedule.items() if at <= now_ms), key=self.schedule.__getitem__)[:limit]

    def claim(self, key: str, owner: str, lease_ms: int) -> bool:
        return self.locks.setdefault(key, owner) == owner

    def release(self, key: str, owner: str) -> None:
        if self.locks.get(key) == owner:
            del self.locks[key]

    def load(self, key: str) -> GroupState:
        state = self.groups.get(key)
        if state is None:
            return GroupState(alerts={})
        return GroupState(
            state.target,
            dict(state.alerts or {}),
            state.last_flush_ms,
            state.digest,
            state.ref,
            state.members,
            state.since_ms,
            dict(state.traces or {}),
        )

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
        state = self.groups[key]
        alerts = state.alerts or {}
        for fp, value in gone.items():
            if alerts.get(fp) == value:
                del alerts[fp]
                (state.traces or {}).pop(fp, None)
        state.last_flush_ms, state.digest, state.ref = at_ms, digest, ref
        state.members, state.since_ms = tuple(members), state.since_ms or at_ms
        if not alerts:
            del self.groups[key]
            self.schedule.pop(key, None)
        elif due_ms is not None:
            self.schedule[key] = due_ms

    def reschedule(self, key: str, due_ms: int) -> None:
        self.schedule[key] = due_ms

    def drop(self, key: str) -> None:
        self.groups.pop(key, None)
        self.schedule.pop(key, None)


_FORGET = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return redis.call('HLEN', KEYS[1])
"""


class RedisGroupStore:
    """``…:group:<channel>:<key>`` hash of alerts, ``…:groupmeta:<channel>:<key>`` hash, ``…:groups:<channel>`` due zset;
    ``…:grouptrace:<channel>:<key>``: each member's traceparent (the group notification's span links)."""

    def __init__(self, client: redis.Redis, prefix: str, channel: str, ttl_s: int = 7 * 24 * 3600) -> None:
        self.r, self.base, self.ttl_s = client, f"{prefix}:{{kind}}:{channel}", ttl_s
        self.schedule_key = f"{prefix}:groups:{channel}"
        self._forget = client.register_script(_FORGET)

    def _k(self, kind: str, key: str) -> str:
        return f"{self.base.format(kind=kind)}:{key}"

    @_guarded
    def add(self, key: str, target: str, fingerprint: str, alert: bytes, due_ms: int, trace: str = "") -> None:
        pipe = self.r.pipeline()
        pipe.hset(self._k("group", key), fingerprint, alert)
        pipe.expire(self._k("group", key), self.ttl_s)
        if trace:
            pipe.hset(self._k("grouptrace", key), fingerprint, trace)
            pipe.expire(self._k("grouptrace", key), self.ttl_s)
        else:
            pipe.hdel(self._k("grouptrace", key), fingerprint)
        pipe.hsetnx(self._k("groupmeta", key), "target", target)
        pipe.expire(self._k("groupmeta", key), self.ttl_s)
        pipe.zadd(self.schedule_key, {key: due_ms}, nx=True)
        pipe.execute()

    @_guarded
    def has(self, key: str, fingerprint: str) -> bool:
        return bool(self.r.hexists(self._k("group", key), fingerprint))

    @_guarded
    def due(self, now_ms: int, limit: int) -> list[str]:
        raw: list[bytes] = self.r.zrangebyscore(self.schedule_key, "-inf", now_ms, start=0, num=limit)  # type: ignore[assignment]
        return [v.decode() for v in raw]

    @_guarded
    def claim(self, key: str, owner: str, lease_ms: int) -> bool:
        return bool(self.r.set(self._k("grouplock", key), owner, nx=True, px=lease_ms))

    @_guarded
    def release(self, key: str, owner: str) -> None:
        lock = self._k("grouplock", key)
        if self.r.get(lock) == owner.encode():
            self.r.delete(lock)

    @_guarded
    def load(self, key: str) -> GroupState:
        alerts: dict[bytes, bytes] = self.r.hgetall(self._k("group", key))  # type: ignore[assignment]
        meta: dict[bytes, bytes] = self.r.hgetall(self._k("groupmeta", key))  # type: ignore[assignment]
        traces: dict[bytes, bytes] = self.r.hgetall(self._k("grouptrace", key))  # type: ignore[assignment]
        return GroupState(
            meta.get(b"target", b"").decode(),
            {k.decode(): v for k, v in alerts.items()},
            int(meta.get(b"last", b"0")),
            meta.get(b"digest", b"").decode(),
            meta[b"ref"].decode() if b"ref" in meta else None,
            tuple(meta.get(b"members", b"").decode().split()),
            int(meta.get(b"since", b"0")),
            {k.decode(): v.decode("utf-8", "replace") for k, v in traces.items()},
        )

    @_guarded
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
        args: list[str | bytes] = []
        for fp, value in gone.items():
            args += [fp, value]
        left = int(self._forget(keys=[self._k("group", key), self._k("grouptrace", key)], args=args)) if args else 1
        if left == 0:
            self.r.delete(self._k("groupmeta", key), self._k("grouptrace", key))
            self.r.zrem(self.schedule_key, key)
            return
        meta: dict[str, str] = {"last": str(at_ms), "digest": digest, "members": " ".join(members)}
        if ref:
            meta["ref"] = ref
        self.r.hset(self._k("groupmeta", key), mapping=meta)  # type: ignore[arg-type]
        self.r.hsetnx(self._k("groupmeta", key), "since", str(at_ms))
        if due_ms is not None:
            self.r.zadd(self.schedule_key, {key: due_ms})

    @_guarded
    def reschedule(self, key: str, due_ms: int) -> None:
        self.r.zadd(self.schedule_key, {key: due_ms})

    @_guarded
    def fingerprints(self, key: str) -> list[str]:
        """The members' fingerprints (readable even when their values are not)."""
        raw: list[bytes] = self.r.hkeys(self._k("group", key))  # type: ignore[assignment]
        return [v.decode("utf-8", "replace") for v in raw]

    @_guarded
    def drop(self, key: str) -> None:
        pipe = self.r.pipeline()
        pipe.delete(self._k("group", key), self._k("groupmeta", key), self._k("grouptrace", key))
        pipe.zrem(self.schedule_key, key)
        pipe.execute()


def digest(alerts: Mapping[str, Alert]) -> str:
    """What the group says: which alerts, firing or resolved, at which severity (not their windows)."""
    text = ";".join(f"{fp}|{a.status}|{a.severity}" for fp, a in sorted(alerts.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def summary(key: str, alerts: Sequence[Alert], state_digest: str) -> Alert:
    """The group as one alert: fingerprint = group key, status firing while any member fires, top severity.

    The message lists every member (its segment's dimensions, deviation, the child alerts folded
    into it; the type when they differ), clipped at ``MESSAGE_MAX`` (about 150 segments).
    """
    ordered = sorted(alerts, key=lambda a: (a.status != "firing", -SEVERITIES.index(a.severity), a.fingerprint))
    firing = [a for a in ordered if a.status == "firing"]
    top = (firing or ordered)[0]
    status = "firing" if firing else "resolved"
    head = f"{len(firing)} firing, {len(ordered) - len(firing)} resolved in group {key.split(':', 1)[1]}: "
    one_type = len({a.alert_type for a in ordered}) == 1
    items = [
        f"{'' if one_type else a.alert_type + ' '}{segment_name(a)} {a.deviation_pct:+.0f}%"
        + _cause(a)
        + ("" if a.status == "firing" else " ok")
        for a in ordered
    ]
    text = head + "; ".join(items)
    if len(text) > MESSAGE_MAX:
        shown, size = [], len(head)
        for item in items:
            if size + len(item) + 40 > MESSAGE_MAX:
                break
            shown.append(item)
            size += len(item) + 2
        text = head + "; ".join(shown) + f"; ... and {len(items) - len(shown)} more"
    return msgspec.structs.replace(
        top,
        alert_id=make_alert_id(key, top.window_start_ms, f"{status}-{state_digest}"),
        fingerprint=key,
        status=status,
        severity=max((a.severity for a in ordered), key=SEVERITIES.index),
        window_start_ms=min(a.window_start_ms for a in ordered),
        window_end_ms=max(a.window_end_ms for a in ordered),
        detected_at_ms=max(a.detected_at_ms for a in ordered),
        message=text,
        # one member: its drill-down is the group's; several: each line names its own cause
        contributors=top.contributors if len(ordered) == 1 else [],
        folded=top.folded if len(ordered) == 1 else 0,
    )


def _cause(alert: Alert) -> str:
    """`` (91% from app_id=com.x, +2 folded)``: a firing member's top contributor and folded children."""
    if alert.status != "firing":
        return ""
    parts = [f"{c.share:.0%} from {child_name(alert, c)}" for c in alert.contributors[:1]]
    if alert.folded:
        parts.append(f"+{alert.folded} folded")
    return f" ({', '.join(parts)})" if parts else ""


def change_line(
    alerts: Mapping[str, Alert],
    before: Sequence[str],
    since_ms: int,
    now_ms: int,
    repeat: bool = False,
    muted: int = 0,
) -> str:
    """What changed since the group's last notification, in one line (a thread reply, a mail's first line).

    ``+2 joined: US banner, DE native · 1 recovered: FR app_id=com.x · 5 firing``; the same members at
    another severity: ``severity changed · 5 firing, top high``; unchanged (a ``repeat``):
    ``still firing: 5 segments, for 1 h 5 min``; nothing left firing: ``all recovered after 40 min``.
    """
    firing = [a for a in alerts.values() if a.status == "firing"]
    recovered = [a for a in alerts.values() if a.status == "resolved"]
    if not firing:
        return f"all recovered after {duration_text(now_ms - since_ms)}"
    was = set(before)
    joined = [a for a in firing if a.fingerprint not in was]
    parts = []
    if joined:
        parts.append(f"+{len(joined)} joined: {_names(joined)}")
    if recovered:
        parts.append(f"{len(recovered)} recovered: {_names(recovered)}")
    left = len(was - {a.fingerprint for a in alerts.values()})
    if muted and left and not repeat:  # members notified before, silenced since
        parts.append(f"{min(left, muted)} muted (silence or maintenance)")
    if not parts and not repeat:
        top = max((a.severity for a in firing), key=SEVERITIES.index)
        return f"severity changed · {len(firing)} firing, top {top}"
    if not parts:
        return f"still firing: {len(firing)} segment{'s' if len(firing) != 1 else ''}, for {duration_text(now_ms - since_ms)}"
    return " · ".join([*parts, f"{len(firing)} firing"])


def segment_name(alert: Alert) -> str:
    """A member's segment in a group's lines: its dimensions for people (``US banner``,
    ``US app_id=com.example.game``, ``all traffic``; see :func:`adwatch.contracts.describe_segment`)."""
    return alert.where


def _names(alerts: Sequence[Alert], shown: int = 8) -> str:
    names = sorted(segment_name(a) for a in alerts)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@dataclass
class FlushResult:
    sent: int = 0
    failed: int = 0
    deferred: int = 0  # the shared rate-limit slot was busy: due again when it frees
    dead_lettered: int = 0  # groups given up (permanent failure, deadline, a poisoned buffer)


class SlotLimiter(Protocol):
    """The per-target rate limit shared with single deliveries (:meth:`Ledger.acquire_slot`)."""

    def acquire_slot(self, target: str, interval_ms: int) -> float: ...


Park = Callable[[str, str, bytes, DeadLetter, int, str], None]
"""Write one dead letter of a group: ``(group key, fingerprint, the member's original bytes, letter,
attempts, target)``; raises when not acknowledged."""


@dataclass
class _Retry:
    started: float  # monotonic time of the first failed attempt's start
    attempts: int = 0
    last_error: str = ""


PARK_RETRY_MS = 5_000  # a dead letter not acknowledged: the group is looked at again this much later


class GroupFlusher:
    """Send the due groups of one channel; ``tick()`` is called by the run loop.

    A group's notification goes through the same delivery rules as a single alert: the target's
    shared rate-limit slot (``slots``), the retry policy (backoff, Retry-After, deadline; the
    group is due again when the delay is over, the loop never waits) and, on a permanent failure
    or past the deadline, a dead letter per member (``park``) after which the group's state counts
    as notified (a later change or ``repeat_interval`` tries again). A group that raises anything
    else (an unreadable buffer, a render bug) is dead-lettered and dropped; the others go on.
    """

    def __init__(
        self,
        store: GroupStore,
        channel: BaseChannel,
        specs: Mapping[int, GroupSpec],
        *,
        owner: str,
        now: Callable[[], float],
        lease_s: float = 30.0,
        on_sent: Callable[[Alert, int], None] = lambda _alert, _count: None,
        on_failure: Callable[[DeliveryError], None] = lambda _err: None,
        on_deferred: Callable[[str], None] = lambda _reason: None,
        slots: SlotLimiter | None = None,
        policy: RetryPolicy | None = None,
        park: Park | None = None,
        muted: Callable[[Alert], tuple[str, str] | None] = lambda _alert: None,
        on_suppressed: Callable[[str], None] = lambda _reason: None,
        monotonic: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        pool: Executor | None = None,
    ) -> None:
        self.store, self.channel, self.specs, self.owner, self.now = store, channel, specs, owner, now
        self.pool, self._busy = pool, set[str]()
        self.lease_ms, self.on_sent, self.on_failure = int(lease_s * 1000), on_sent, on_failure
        self.on_deferred, self.slots, self.policy = on_deferred, slots, policy or RetryPolicy()
        self.park, self.monotonic, self.rand = park, monotonic, rand
        self.muted, self.on_suppressed = muted, on_suppressed
        self._retries: dict[str, _Retry] = {}

    def tick(self, limit: int = 20) -> FlushResult:
        """Flush the due groups: here, or each on a ``pool`` worker (then the result counts nothing).

        With a pool a group whose provider hangs holds one worker: the run loop and the other
        groups go on; a group still being sent is not started again.
        """
        result = FlushResult()
        for key in self.store.due(int(self.now() * 1000), limit + len(self._busy)):
            if key in self._busy or not self.store.claim(key, self.owner, self.lease_ms):
                continue
            if self.pool is None:
                self._flush_claimed(key, result)
                continue
            self._busy.add(key)
            try:
                self.pool.submit(self._flush_on_worker, key)
            except RuntimeError:  # the pool is shut down: the run is ending
                self._busy.discard(key)
                self.store.release(key, self.owner)
        return result

    def _flush_claimed(self, key: str, result: FlushResult) -> None:
        try:
            self._flush(key, result)
        except LedgerUnavailableError:
            raise  # Redis does not answer: the whole tick again later
        except Exception as exc:
            self._poisoned(key, exc, result)
        finally:
            self.store.release(key, self.owner)

    def _flush_on_worker(self, key: str) -> None:
        try:
            self._flush_claimed(key, FlushResult())
        except LedgerUnavailableError as exc:
            logger.warning("group flush deferred: %s", exc, extra={"group": key})
        except Exception:
            logger.exception("group flush failed", extra={"group": key})
        finally:
            self._busy.discard(key)

    def close(self, timeout_s: float = 0.0) -> None:
        """The run ends: groups being sent get ``timeout_s`` to finish; no new one starts."""
        deadline = time.monotonic() + timeout_s
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _flush(self, key: str, result: FlushResult) -> None:
        now_ms = int(self.now() * 1000)
        spec = self.specs.get(route_index(key))
        state = self.store.load(key)
        buffered = {fp: decode(v, Alert) for fp, v in (state.alerts or {}).items()}
        spec = spec or GroupSpec(())  # the route lost its grouping: the defaults' timers
        if not buffered:
            self._retries.pop(key, None)
            self.store.flushed(key, at_ms=now_ms, digest="", ref=None, gone={}, due_ms=None)
            return
        interval_ms, repeat_ms = int(spec.interval_s * 1000), int(spec.repeat_s * 1000)
        # Silences and maintenance windows as of now: a muted firing stays buffered (notified when
        # the silence ends: the group changes) but is not in this notification.
        muted = {fp: found for fp, a in buffered.items() if (found := self.muted(a)) is not None}
        alerts = {fp: a for fp, a in buffered.items() if fp not in muted}
        if not alerts:
            self.store.reschedule(key, now_ms + interval_ms)
            return
        current = digest(alerts)
        if state.last_flush_ms and current == state.digest and now_ms < state.last_flush_ms + repeat_ms:
            self._retries.pop(key, None)
            self.store.reschedule(key, min(state.last_flush_ms + repeat_ms, now_ms + interval_ms))
            return
        notification = summary(key, list(alerts.values()), current)
        target = state.target or self.channel.default_target
        ref = state.ref  # the first notification: Slack updates it, email answers it; PagerDuty dedups on the key
        opened = not state.last_flush_ms
        repeat = current == state.digest
        change = change_line(alerts, state.members, state.since_ms, now_ms, repeat, muted=len(muted))
        thread = None if opened else Thread(change=change)
        payload = self.channel.render(notification, target, thread)
        slot_wait = self.slots.acquire_slot(target, self.channel.min_interval_ms) if self.slots is not None else 0.0
        if slot_wait > 0:
            result.deferred += 1
            self.on_deferred("rate_limit")
            self.store.reschedule(key, now_ms + max(1, math.ceil(slot_wait * 1000)))
            return
        for reason, by in muted.values():
            self.on_suppressed(reason)
            logger.info("group member muted: group=%s by=%s", key, by, extra={"group": key, "stage": "group"})
        retry = self._retries.setdefault(key, _Retry(self.monotonic()))
        retry.attempts += 1
        gone = {fp: (state.alerts or {})[fp] for fp, a in alerts.items() if a.status == "resolved"}
        members = sorted(fp for fp, a in alerts.items() if a.status == "firing")
        try:
            with tracer.start_as_current_span(
                f"{self.channel.name} group send",
                context=otel_context.Context(),  # its own trace, linked to each member's
                kind=trace.SpanKind.CLIENT,
                links=member_links(state.traces or {}, alerts),
                attributes={
                    "adwatch.group": key,
                    "adwatch.group.alerts": len(alerts),
                    "adwatch.attempt": retry.attempts,
                },
            ):
                delivery = self.channel.send(notification, target, ref, payload)
        except DeliveryError as err:
            self.on_failure(err)
            result.failed += 1
            if str(err) != retry.last_error:  # log a failure only when it differs from the previous one
                logger.warning(
                    "group send failed: group=%s attempt=%d error=%s",
                    key,
                    retry.attempts,
                    err,
                    extra={"group": key, "stage": "group", "channel": self.channel.name},
                )
                retry.last_error = str(err)
            outcome = after_failure(self.policy, err, retry.attempts, self.monotonic() - retry.started, self.rand())
            if isinstance(outcome, Defer):
                self.on_deferred("retry")
                self.store.reschedule(key, now_ms + max(1, math.ceil(outcome.delay_s * 1000)))
                return
            if not self._park_all(key, state, outcome, retry.attempts, target):
                return
            result.dead_lettered += 1
            self._retries.pop(key, None)
            # this state is given up: a change of the group or repeat_interval tries again
            self.store.flushed(
                key, at_ms=now_ms, digest=current, ref=ref, gone=gone, due_ms=now_ms + interval_ms, members=members
            )
            return
        self._retries.pop(key, None)
        self.store.flushed(
            key,
            at_ms=now_ms,
            digest=current,
            ref=delivery.provider_id or ref,
            gone=gone,
            due_ms=now_ms + interval_ms,
            members=members,
        )
        result.sent += 1
        self.on_sent(notification, len(alerts))
        logger.info(
            "group notified: group=%s alerts=%d status=%s attempts=%d",
            key,
            len(alerts),
            notification.status,
            retry.attempts,
            extra={"group": key, "stage": "group", "alerts": len(alerts)},
        )

    def _poisoned(self, key: str, exc: Exception, result: FlushResult) -> None:
        """A group that cannot be sent for a reason no retry fixes: dead-letter what it holds, drop it."""
        logger.exception("group %s raised: dead-lettered", key, extra={"group": key, "stage": "group"})
        letter = DeadLetter("internal", f"internal group: {type(exc).__name__}: {_scrub(str(exc))}")
        try:
            state = self.store.load(key)
        except LedgerUnavailableError:
            raise
        except Exception:  # not even readable: one dead letter naming the group
            state = GroupState(alerts={})
        attempts = self._retries.pop(key, _Retry(0.0)).attempts
        if not self._park_all(key, state, letter, attempts, state.target or self.channel.default_target):
            return
        self.store.drop(key)
        result.dead_lettered += 1

    def _park_all(self, key: str, state: GroupState, letter: DeadLetter, attempts: int, target: str) -> bool:
        """One dead letter per member (its original bytes: ``replay`` puts it back in its group); False when
        the dead-letter topic did not acknowledge (the group is looked at again a little later)."""
        if self.park is None:
            logger.error("group %s given up (%s): no dead-letter sink", key, letter.detail, extra={"group": key})
            return True
        try:
            for fingerprint, value in (state.alerts or {"": b""}).items():
                self.park(key, fingerprint, value, letter, attempts, target)
        except Exception as exc:
            logger.warning("group %s: dead letter not written (%s), again later", key, type(exc).__name__)
            self.store.reschedule(key, int(self.now() * 1000) + PARK_RETRY_MS)
            return False
        return True


def member_links(traces: Mapping[str, str], alerts: Mapping[str, Alert]) -> list[trace.Link]:
    """A span link to the trace of each member in the notification (by its record's ``traceparent``).

    The group's notification is sent outside any one alert's trace; the links let each alert's
    trace lead to it, and it to them. Members without a (valid) traceparent are left out.
    """
    links = []
    for fingerprint in sorted(alerts):
        parent = traces.get(fingerprint)
        if not parent:
            continue
        context = trace.get_current_span(extract_context([("traceparent", parent)])).get_span_context()
        if context.is_valid:
            links.append(trace.Link(context, {"adwatch.fingerprint": fingerprint}))
    return links


def _scrub(text: str) -> str:
    """No URL (they may carry tokens) and no more than 200 characters of an exception's text."""
    return re.sub(r"\w+://\S+", "<url>", text)[:200]
