"""Grouping (Alertmanager's dispatcher): alerts of a grouped route become one notification per group.

A route with ``group_by`` holds its alerts in a group buffer keyed by the values of those
labels (:class:`GroupStore`: Redis for replicas, memory for tests); :class:`GroupFlusher`,
driven by the run loop's clock, sends a group ``group_wait`` after its first alert, then at most
every ``group_interval`` while it changes, and again every ``repeat_interval`` while it fires
unchanged. A notification lists every alert of the group; a flushed recovery leaves the
group, an empty group is dropped. The notification is one :class:`Alert` per group
(:func:`summary`) whose fingerprint is the group key, so each channel's own format applies:
one Slack message (with a bot token: updated in place, each change and repeat a thread reply
such as "+2 joined: US|banner, DE|native · 1 recovered: FR|video · 5 firing"; with a webhook a
new message starting with that line), one PagerDuty incident (``dedup_key`` = group key, resolved
when every alert of the group is), one email thread (later mails answer the first).
The group remembers its firing members and its first notification's time for those lines.

Delivery is at least once per group state: a replica claims a due group for a lease, a crash
mid-send sends that state again after the lease; a failed send is tried again
``group_interval`` later (never dropped).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
import redis

from adwatch.contracts import SEVERITIES, Alert, decode, make_alert_id
from adwatch_notifier.channels import BaseChannel
from adwatch_notifier.delivery import DeliveryError
from adwatch_notifier.formatting import Thread, duration_text
from adwatch_notifier.ledger import _guarded

logger = logging.getLogger(__name__)

MESSAGE_MAX = 4000


@dataclass(frozen=True)
class GroupSpec:
    """A route's grouping: labels and Alertmanager's three timers (seconds)."""

    by: tuple[str, ...]
    wait_s: float = 30.0
    interval_s: float = 300.0
    repeat_s: float = 4 * 3600.0


def group_key(route_index: int, spec: GroupSpec, labels: Mapping[str, str]) -> str:
    """``g<route>:<label>=<value>,...``: printable, no spaces (it is also the PagerDuty dedup_key)."""
    parts = ",".join(f"{name}={labels.get(name, '')}" for name in spec.by)
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


class GroupStore(Protocol):
    def add(self, key: str, target: str, fingerprint: str, alert: bytes, due_ms: int) -> None:
        """Put the alert's latest state in the group; a new group is due at ``due_ms``."""
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


class MemoryGroupStore:
    def __init__(self) -> None:
        self.groups: dict[str, GroupState] = {}
        self.schedule: dict[str, int] = {}
        self.locks: dict[str, str] = {}

    def add(self, key: str, target: str, fingerprint: str, alert: bytes, due_ms: int) -> None:
        state = self.groups.setdefault(key, GroupState(target, {}))
        assert state.alerts is not None
        state.alerts[fingerprint] = alert
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
        state.last_flush_ms, state.digest, state.ref = at_ms, digest, ref
        state.members, state.since_ms = tuple(members), state.since_ms or at_ms
        if not alerts:
            del self.groups[key]
            self.schedule.pop(key, None)
        elif due_ms is not None:
            self.schedule[key] = due_ms

    def reschedule(self, key: str, due_ms: int) -> None:
        self.schedule[key] = due_ms


_FORGET = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return redis.call('HLEN', KEYS[1])
"""


class RedisGroupStore:
    """``…:group:<channel>:<key>`` hash of alerts, ``…:groupmeta:<channel>:<key>`` hash, ``…:groups:<channel>`` due zset."""

    def __init__(self, client: redis.Redis, prefix: str, channel: str, ttl_s: int = 7 * 24 * 3600) -> None:
        self.r, self.base, self.ttl_s = client, f"{prefix}:{{kind}}:{channel}", ttl_s
        self.schedule_key = f"{prefix}:groups:{channel}"
        self._forget = client.register_script(_FORGET)

    def _k(self, kind: str, key: str) -> str:
        return f"{self.base.format(kind=kind)}:{key}"

    @_guarded
    def add(self, key: str, target: str, fingerprint: str, alert: bytes, due_ms: int) -> None:
        pipe = self.r.pipeline()
        pipe.hset(self._k("group", key), fingerprint, alert)
        pipe.expire(self._k("group", key), self.ttl_s)
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
        return GroupState(
            meta.get(b"target", b"").decode(),
            {k.decode(): v for k, v in alerts.items()},
            int(meta.get(b"last", b"0")),
            meta.get(b"digest", b"").decode(),
            meta[b"ref"].decode() if b"ref" in meta else None,
            tuple(meta.get(b"members", b"").decode().split()),
            int(meta.get(b"since", b"0")),
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
        left = int(self._forget(keys=[self._k("group", key)], args=args)) if args else 1
        if left == 0:
            self.r.delete(self._k("groupmeta", key))
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


def digest(alerts: Mapping[str, Alert]) -> str:
    """What the group says: which alerts, firing or resolved, at which severity (not their windows)."""
    text = ";".join(f"{fp}|{a.status}|{a.severity}" for fp, a in sorted(alerts.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def summary(key: str, alerts: Sequence[Alert], state_digest: str) -> Alert:
    """The group as one alert: fingerprint = group key, status firing while any member fires, top severity.

    The message lists every member (segment, deviation; the type when they differ), clipped at
    ``MESSAGE_MAX`` (about 150 segments).
    """
    ordered = sorted(alerts, key=lambda a: (a.status != "firing", -SEVERITIES.index(a.severity), a.fingerprint))
    firing = [a for a in ordered if a.status == "firing"]
    top = (firing or ordered)[0]
    status = "firing" if firing else "resolved"
    head = f"{len(firing)} firing, {len(ordered) - len(firing)} resolved in group {key.split(':', 1)[1]}: "
    one_type = len({a.alert_type for a in ordered}) == 1
    items = [
        f"{'' if one_type else a.alert_type + ' '}{a.country}|{a.ad_format} {a.deviation_pct:+.0f}%"
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
    )


def change_line(
    alerts: Mapping[str, Alert], before: Sequence[str], since_ms: int, now_ms: int, repeat: bool = False
) -> str:
    """What changed since the group's last notification, in one line (a thread reply, a mail's first line).

    ``+2 joined: US|banner, DE|native · 1 recovered: FR|video · 5 firing``; the same members at
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
    if not parts and not repeat:
        top = max((a.severity for a in firing), key=SEVERITIES.index)
        return f"severity changed · {len(firing)} firing, top {top}"
    if not parts:
        return f"still firing: {len(firing)} segment{'s' if len(firing) != 1 else ''}, for {duration_text(now_ms - since_ms)}"
    return " · ".join([*parts, f"{len(firing)} firing"])


def _names(alerts: Sequence[Alert], shown: int = 8) -> str:
    names = sorted(f"{a.country}|{a.ad_format}" for a in alerts)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@dataclass
class FlushResult:
    sent: int = 0
    failed: int = 0


class GroupFlusher:
    """Send the due groups of one channel; ``tick()`` is called by the run loop."""

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
    ) -> None:
        self.store, self.channel, self.specs, self.owner, self.now = store, channel, specs, owner, now
        self.lease_ms, self.on_sent, self.on_failure = int(lease_s * 1000), on_sent, on_failure

    def tick(self, limit: int = 20) -> FlushResult:
        result = FlushResult()
        for key in self.store.due(int(self.now() * 1000), limit):
            if not self.store.claim(key, self.owner, self.lease_ms):
                continue
            try:
                self._flush(key, result)
            finally:
                self.store.release(key, self.owner)
        return result

    def _flush(self, key: str, result: FlushResult) -> None:
        now_ms = int(self.now() * 1000)
        spec = self.specs.get(route_index(key))
        state = self.store.load(key)
        alerts = {fp: decode(v, Alert) for fp, v in (state.alerts or {}).items()}
        spec = spec or GroupSpec(())  # the route lost its grouping: the defaults' timers
        if not alerts:
            self.store.flushed(key, at_ms=now_ms, digest="", ref=None, gone={}, due_ms=None)
            return
        current = digest(alerts)
        interval_ms, repeat_ms = int(spec.interval_s * 1000), int(spec.repeat_s * 1000)
        if state.last_flush_ms and current == state.digest and now_ms < state.last_flush_ms + repeat_ms:
            self.store.reschedule(key, min(state.last_flush_ms + repeat_ms, now_ms + interval_ms))
            return
        notification = summary(key, list(alerts.values()), current)
        target = state.target or self.channel.default_target
        ref = state.ref  # the first notification: Slack updates it, email answers it; PagerDuty dedups on the key
        opened = not state.last_flush_ms
        repeat = current == state.digest
        thread = None if opened else Thread(change=change_line(alerts, state.members, state.since_ms, now_ms, repeat))
        try:
            payload = self.channel.render(notification, target, thread)
            delivery = self.channel.send(notification, target, ref, payload)
        except DeliveryError as err:
            self.on_failure(err)
            result.failed += 1
            logger.warning("group send failed: group=%s error=%s", key, err, extra={"group": key, "stage": "group"})
            self.store.reschedule(key, now_ms + max(interval_ms, 1000))
            return
        gone = {fp: (state.alerts or {})[fp] for fp, a in alerts.items() if a.status == "resolved"}
        self.store.flushed(
            key,
            at_ms=now_ms,
            digest=current,
            ref=delivery.provider_id or ref,
            gone=gone,
            due_ms=now_ms + interval_ms,
            members=sorted(fp for fp, a in alerts.items() if a.status == "firing"),
        )
        result.sent += 1
        self.on_sent(notification, len(alerts))
        logger.info(
            "group notified: group=%s alerts=%d status=%s",
            key,
            len(alerts),
            notification.status,
            extra={"group": key, "stage": "group", "alerts": len(alerts)},
        )
