"""The notifier's stages: decode → lifecycle → inhibit → silence → group → route → render → dedup → deliver → mark_sent.

Each stage gets only what it uses (a :class:`~adwatch_notifier.ledger.Ledger`, its
channel, a clock, the retry policy) and returns an outcome
(:mod:`adwatch_notifier.outcomes`); none of them writes metrics, dead letters or offsets.
Stages share one :class:`Envelope` per record, on which each leaves what a later stage
or the run loop needs (the alert, its target, the claims it holds). :func:`build_stages`
builds the chain, like Alertmanager's ``createReceiverStage``.

No stage sleeps: a stage that must wait (a retry, the rate limit, another replica's claim)
returns :class:`~adwatch_notifier.outcomes.Defer` and the run loop calls it again later,
from that stage, while other records flow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import msgspec
from opentelemetry import trace

from adwatch.contracts import SEVERITIES, Alert, ContractError, decode, encode
from adwatch_notifier.channels import BaseChannel
from adwatch_notifier.dedup import SENT, claim_value, cooldown_decision, cooldown_value, idempotency_decision
from adwatch_notifier.delivery import Delivery, DeliveryError
from adwatch_notifier.formatting import Thread, reserved_fingerprint
from adwatch_notifier.grouping import GroupStore, group_key
from adwatch_notifier.inhibit import InhibitRule, InhibitStore, source_may_follow
from adwatch_notifier.ledger import Ledger
from adwatch_notifier.matchers import alert_labels
from adwatch_notifier.outcomes import (
    Continue,
    DeadLetter,
    Defer,
    Grouped,
    StageId,
    StageResult,
    Stop,
    Suppressed,
    SuppressReason,
)
from adwatch_notifier.retry import RetryPolicy, after_failure
from adwatch_notifier.routing import RoutingTable, route
from adwatch_notifier.settings import NotifierSettings
from adwatch_notifier.silences import MaintenanceWindow, Silence, SilenceStore

REPLAY_HEADER = "adwatch-replay-channel"
"""Set by ``adwatch-notifier replay``: the record is meant for this channel only."""

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

CONTINUE = Continue()
STOP = Stop()

Clock = Callable[[], float]
"""Seconds; ``time.time`` for leases and cooldowns (compared across replicas), ``time.monotonic`` for elapsed time."""
Wait = Callable[[float], bool]
"""Sleep up to N seconds; True when the run is stopping (``threading.Event.wait``)."""


@dataclass
class Envelope:
    """One consumed record on its way through the stages."""

    value: bytes
    key: bytes | None = None
    partition: int = 0
    offset: int = 0
    consumed_at: float = field(default_factory=time.monotonic)
    alert: Alert | None = None
    target: str = ""
    idem_held: str | None = None  # the idempotency claim we wrote, while we own the key
    cooldown_checked: bool = False  # the cooldown key was looked at (cleared again on recovery)
    cooldown_held: str | None = None  # the cooldown value we wrote for this alert
    attempts: int = 0
    delivery: Delivery | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    episode: Episode | None = None  # what this channel delivered for the fingerprint's open episode
    payload: Any = None  # what the channel will send, built by ``render`` before any claim
    retry_started: float | None = None  # monotonic time of the first failed attempt's start
    last_error: str = ""
    resume_at: int = 0  # index of the stage a deferred record resumes at
    unavailable: int = 0  # consecutive "dependency unavailable" deferrals (backoff exponent)
    pending_letter: tuple[StageId, DeadLetter] | None = None  # decided, its dead letter not yet acknowledged
    muted_by: str = ""  # the silence id, maintenance window or inhibiting source that muted the alert
    deferrals: int = 0  # times the loop held this record back (a retry's span says so)
    inhibit_until: float | None = None  # monotonic end of the record's wait for an inhibiting source
    clipped: tuple[str, ...] = ()  # free-text fields clipped by decode
    clipped_counted: bool = False  # the run loop counted them

    def header(self, name: str) -> str | None:
        return next((v.decode("utf-8", "replace") for k, v in self.headers if k == name), None)

    @property
    def decoded(self) -> Alert:
        """The alert, for stages after ``decode`` (which sets it or dead-letters the record)."""
        if self.alert is None:
            raise RuntimeError("stage ran before decode")
        return self.alert


@dataclass(frozen=True)
class Episode:
    """The delivery record of a fingerprint's open episode on one channel (``episode`` key, JSON).

    Written when a firing is delivered, read by the recovery: it is routed to the same target
    and carries the highest severity delivered, whatever its own in-band severity, and the
    firing's evidence (first detection ``since_ms``; ``current``/``expected`` of the firing
    delivered at that highest severity), so the recovery can say what fired and for how long.
    """

    severity: str
    target: str
    delivered_at_ms: int = 0
    since_ms: int = 0
    current: float | None = None
    expected: float | None = None

    def encode(self) -> str:
        data: dict[str, object] = {"severity": self.severity, "target": self.target, "at": self.delivered_at_ms}
        if self.since_ms:
            data["since"] = self.since_ms
        if self.current is not None and self.expected is not None:
            data["cur"], data["exp"] = self.current, self.expected
        return json.dumps(data, separators=(",", ":"))

    @staticmethod
    def parse(value: str | None) -> Episode | None:
        if not value:
            return None
        try:
            data = json.loads(value)
            cur, exp = data.get("cur"), data.get("exp")
            return Episode(
                str(data["severity"]),
                str(data["target"]),
                int(data.get("at", 0)),
                int(data.get("since", 0)),
                float(cur) if cur is not None else None,
                float(exp) if exp is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    @staticmethod
    def after_firing(episode: Episode | None, alert: Alert, target: str, at_ms: int) -> Episode:
        """The record once ``alert`` (a firing) is delivered: opened, raised to its severity, or kept."""
        if episode is None:
            return Episode(alert.severity, target, at_ms, alert.detected_at_ms, alert.current, alert.expected)
        if severity_rank(alert.severity) > severity_rank(episode.severity):
            return Episode(alert.severity, target, at_ms, episode.since_ms, alert.current, alert.expected)
        return dataclasses.replace(episode, target=target, delivered_at_ms=at_ms)


def escalated_from(env: Envelope) -> str:
    """The severity this channel delivered for the open episode, when the firing is more severe ("" else)."""
    alert, episode = env.decoded, env.episode
    if alert.status != "firing" or episode is None:
        return ""
    return episode.severity if severity_rank(alert.severity) > severity_rank(episode.severity) else ""


def thread_of(env: Envelope) -> Thread | None:
    """How the record follows its episode's first notification: an escalation, a recovery with the
    firing's evidence; None when it opens the episode or repeats it (a new notification)."""
    alert, episode = env.decoded, env.episode
    if episode is None:
        return None
    if alert.status == "resolved":
        return Thread(
            peak=episode.severity,
            since_ms=episode.since_ms,
            fired_current=episode.current,
            fired_expected=episode.expected,
        )
    previous = escalated_from(env)
    return Thread(escalated_from=previous) if previous else None


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


class Stage(Protocol):
    """One step of the chain; ``id`` is its stable name in logs, spans and dead letters."""

    @property
    def id(self) -> StageId: ...

    def __call__(self, env: Envelope) -> StageResult: ...


@dataclass(frozen=True)
class Lease:
    """Who we are in the ledger and how long a claim of ours stays live without renewal."""

    owner: str
    seconds: float

    def until_ms(self, now_s: float, extra_s: float = 0.0) -> int:
        return int(now_s * 1000) + int((self.seconds + extra_s) * 1000)


FREE_TEXT_LIMITS: dict[str, tuple[int, str]] = {"message": (4096, " …[clipped]"), "rule_set": (255, "…")}
"""Free-text fields of the alert contract: their length limit and the mark a clipped value ends with."""


def decode_alert(value: bytes) -> tuple[Alert, tuple[str, ...]]:
    """The alert, and the names of the free-text fields clipped to fit the contract.

    A message or rule set over its limit (a producer's 600 KB field) is clipped, not refused:
    the rest of the alert is good, and an alert lost on every channel for its prose is worse than
    a clipped text. Any other violation (or one left after clipping) raises :class:`ContractError`.
    """
    try:
        return decode(value, Alert), ()
    except ContractError as exc:
        if exc.field not in FREE_TEXT_LIMITS:
            raise
        try:
            raw = msgspec.json.decode(value)
        except msgspec.DecodeError:
            raise exc from None
        if not isinstance(raw, dict):
            raise
        clipped = []
        for name, (limit, mark) in FREE_TEXT_LIMITS.items():
            text = raw.get(name)
            if isinstance(text, str) and len(text) > limit:
                raw[name] = text[: limit - len(mark)] + mark
                clipped.append(name)
        if not clipped:
            raise
        return decode(msgspec.json.encode(raw), Alert), tuple(clipped)


class DecodeStage:
    """Bytes → :class:`Alert`; a record that breaks the contract is dead-lettered as is.

    Over-long free-text fields are clipped (:func:`decode_alert`) and named in ``env.clipped``
    (the run loop counts them); the record's original bytes stay in ``env.value``.
    """

    id: ClassVar[StageId] = "decode"

    def __call__(self, env: Envelope) -> StageResult:
        try:
            env.alert, env.clipped = decode_alert(env.value)
        except ContractError as exc:
            return DeadLetter("contract", f"ContractError: {_clip(str(exc), 500)}")
        if reserved_fingerprint(env.alert.fingerprint):  # it would share a group's PagerDuty incident
            return DeadLetter("contract", "ContractError: fingerprint in the reserved group namespace")
        if env.clipped:
            logger.warning(
                "clipped over-long fields: alert_id=%s fields=%s",
                env.alert.alert_id,
                ",".join(env.clipped),
                extra={"alert_id": env.alert.alert_id, "stage": self.id},
            )
        return CONTINUE


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


class LifecycleStage:
    """Order and age: drop what would page history or reopen what is closed; recoveries carry the episode.

    - a replay (``adwatch-notifier replay``) meant for another channel is skipped;
    - a firing older than ``max_age_s`` (by ``detected_at_ms``) is ``too_old``: a new consumer
      group does not page a week of history; so is a recovery that old of an episode this
      channel has no record of (PagerDuty takes recoveries it never sent: a new group would
      send every historic one);
    - a firing whose window is not after its fingerprint's last recovery is ``stale`` (replayed
      or out of order: it would reopen a closed incident);
    - a recovery records its window as the fingerprint's last one, and takes the severity of
      the episode this channel delivered.
    """

    id: ClassVar[StageId] = "lifecycle"

    def __init__(self, ledger: Ledger, channel: str, *, max_age_s: float, ttl_s: int, now: Clock) -> None:
        self.ledger, self.channel, self.max_age_s, self.ttl_s, self.now = ledger, channel, max_age_s, ttl_s, now

    def __call__(self, env: Envelope) -> StageResult:
        alert = env.decoded
        meant_for = env.header(REPLAY_HEADER)
        if meant_for and meant_for != self.channel:
            return Suppressed("other_channel")
        env.episode = Episode.parse(self.ledger.get("episode", alert.fingerprint))
        last_resolved = _int(self.ledger.get("resolved", alert.fingerprint))
        if alert.status == "firing":
            if self._too_old(alert):
                return Suppressed("too_old")
            if last_resolved is not None and alert.window_start_ms <= last_resolved:
                return Suppressed("stale")
            return CONTINUE
        if last_resolved is None or alert.window_start_ms > last_resolved:
            self.ledger.put("resolved", alert.fingerprint, str(alert.window_start_ms), self.ttl_s)
        if env.episode is None and self._too_old(alert) and self.ledger.get("ref", alert.fingerprint) is None:
            return Suppressed("too_old")
        if env.episode is not None and env.episode.severity != alert.severity:
            env.alert = msgspec.structs.replace(alert, severity=env.episode.severity)
        return CONTINUE

    def _too_old(self, alert: Alert) -> bool:
        return self.max_age_s > 0 and alert.detected_at_ms < (self.now() - self.max_age_s) * 1000


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class InhibitStage:
    """Record firing sources of the inhibition rules; mute a firing target while a source fires (``inhibited``).

    Runs on every channel's consumer (each sees every alert), so the sources are recorded
    wherever they are routed. A recovery removes its fingerprint from every rule, whatever its
    in-band severity. Recoveries are never muted: the episode they close was delivered or not.

    A target with no firing source yet is held ``wait_s`` (``INHIBIT_WAIT_SECONDS``, a
    :class:`Defer` the loop keeps polling through) and checked again: the detector writes a
    window's CTR/eCPM alerts before its traffic alert, keyed to other partitions, so the source
    of an outage arrives just after the first alerts it mutes. Only a target whose source could
    still follow it waits (:func:`~adwatch_notifier.inhibit.source_may_follow`): with the default
    rules, CTR and eCPM alerts; a traffic or a critical alert, or one the ``critical`` rule alone
    targets (its source has the same fingerprint, so it came first), is sent at once.
    """

    id: ClassVar[StageId] = "inhibit"

    def __init__(
        self,
        store: InhibitStore,
        rules: Sequence[InhibitRule],
        *,
        source_ttl_s: float,
        now: Clock,
        wait_s: float = 0.0,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.store, self.rules, self.source_ttl_s, self.now = store, tuple(rules), source_ttl_s, now
        self.wait_s, self.monotonic = wait_s, monotonic

    def __call__(self, env: Envelope) -> StageResult:
        alert = env.decoded
        if not self.rules:
            return CONTINUE
        labels, now_ms = alert_labels(alert), int(self.now() * 1000)
        if env.inhibit_until is None:  # sources are recorded once per record, not on each look again
            for rule in self.rules:
                if alert.status == "resolved":
                    self.store.clear(rule.id, rule.group(labels), alert.fingerprint)
                elif rule.is_source(labels):
                    until_ms = now_ms + int(self.source_ttl_s * 1000)
                    self.store.mark(rule.id, rule.group(labels), alert.fingerprint, until_ms)
        if alert.status != "firing":
            return CONTINUE
        targeted = [rule for rule in self.rules if rule.is_target(labels)]
        if not targeted:
            return CONTINUE
        found = self.store.firing([(rule.id, rule.group(labels)) for rule in targeted], now_ms)
        for rule, sources in zip(targeted, found, strict=True):
            if rule.is_source(labels):  # two-sided match: an alert never inhibits itself
                sources = [fp for fp in sources if fp != alert.fingerprint]
            if sources:
                env.muted_by = sources[0]
                logger.info(
                    "inhibited: alert_id=%s by=%s rule=%s",
                    alert.alert_id,
                    sources[0],
                    rule.id,
                    extra={"alert_id": alert.alert_id, "stage": self.id, "inhibited_by": sources[0], "rule": rule.id},
                )
                return Suppressed("inhibited")
        if self.wait_s > 0 and any(source_may_follow(rule, labels) for rule in targeted):
            if env.inhibit_until is None:
                env.inhibit_until = self.monotonic() + self.wait_s
            left = env.inhibit_until - self.monotonic()
            if left > 0:
                return Defer(left, "inhibit_wait")
        return CONTINUE


class SilenceStage:
    """Mute a firing that a maintenance window (``maintenance``) or an active silence (``silenced``) matches.

    The silences are read from the shared store at most every ``refresh_s`` (0: every record).
    Recoveries are never muted (an incident opened before the silence still closes).
    """

    id: ClassVar[StageId] = "silence"

    def __init__(
        self,
        store: SilenceStore,
        windows: Sequence[MaintenanceWindow] = (),
        *,
        now: Clock,
        refresh_s: float = 1.0,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.store, self.windows, self.now = store, tuple(windows), now
        self.refresh_s, self.monotonic = refresh_s, monotonic
        self._cached: list[Silence] = []
        self._read_at: float | None = None

    def silences(self) -> list[Silence]:
        at = self.monotonic()
        if self._read_at is None or self.refresh_s <= 0 or at - self._read_at >= self.refresh_s:
            now = self.now()
            self._cached = [s for s in self.store.all() if s.ends_at > now]
            self._read_at = at
        return self._cached

    def muted(self, alert: Alert) -> tuple[SuppressReason, str] | None:
        """Why the alert is muted now (``maintenance``/``silenced``) and by what; None when it is not.

        Also the group flusher's check at send time: a member buffered before a silence is not notified.
        """
        if alert.status != "firing":
            return None
        labels, now = alert_labels(alert), self.now()
        for window in self.windows:
            if window.mutes(labels, now):
                return "maintenance", f"maintenance:{window.name}"
        for silence in self.silences():
            if silence.mutes(labels, now):
                return "silenced", silence.id
        return None

    def __call__(self, env: Envelope) -> StageResult:
        alert = env.decoded
        found = self.muted(alert)
        if found is None:
            return CONTINUE
        reason, env.muted_by = found
        fields = {"alert_id": alert.alert_id, "stage": self.id}
        if reason == "maintenance":
            logger.info("in maintenance: alert_id=%s window=%s", alert.alert_id, env.muted_by[12:], extra=fields)
        else:
            logger.info(
                "silenced: alert_id=%s silence_id=%s",
                alert.alert_id,
                env.muted_by,
                extra={**fields, "silence_id": env.muted_by},
            )
        return Suppressed(reason)


class GroupStage:
    """An alert whose route groups (``group_by``) goes into its group's buffer (``Grouped``); others continue.

    The group's notification is sent by :class:`~adwatch_notifier.grouping.GroupFlusher` from the
    run loop. A recovery joins the group holding its firing; with none it is ``never_notified``.
    Grouped routes have no per-alert cooldown: ``group_interval`` and ``repeat_interval`` pace them.
    """

    id: ClassVar[StageId] = "group"

    def __init__(self, table: RoutingTable, channel: BaseChannel, store: GroupStore, *, now: Clock) -> None:
        self.table, self.channel, self.store, self.now = table, channel, store, now

    def __call__(self, env: Envelope) -> StageResult:
        alert = env.decoded
        resolved = alert.status == "resolved"
        chosen = route(self.table, alert, self.channel.name, notified_firing=resolved)
        if chosen is None or chosen.group is None:
            return CONTINUE
        key = group_key(self.table.routes.index(chosen), chosen.group, alert_labels(alert))
        if resolved and not self.store.has(key, alert.fingerprint):
            return Suppressed("never_notified")
        due_ms = int((self.now() + chosen.group.wait_s) * 1000)
        value = encode(alert) if env.clipped else env.value  # a clipped alert is buffered clipped
        target = chosen.target or self.channel.default_target
        self.store.add(key, target, alert.fingerprint, value, due_ms, env.header("traceparent") or "")
        return Grouped()


class RouteStage:
    """Is the alert for this channel, and to which target? A recovery follows its delivered firing.

    A recovery goes where its episode's firing went (the ``episode`` record); without one it is
    not sent (``never_notified``), except to a channel that dedups on its side (PagerDuty: a
    resolve for an unknown ``dedup_key`` is a no-op), which gets it whenever its routes would have
    taken the firing at any severity, so an incident never stays open after the ledger is lost.
    """

    id: ClassVar[StageId] = "route"

    def __init__(self, table: RoutingTable, channel: BaseChannel, ledger: Ledger) -> None:
        self.table, self.channel, self.ledger = table, channel, ledger

    def __call__(self, env: Envelope) -> StageResult:
        alert = env.decoded
        if alert.status == "resolved":
            if env.episode is not None:
                env.target = env.episode.target
                return CONTINUE
            notified = self.ledger.get("ref", alert.fingerprint) is not None
            if not notified and not self.channel.provider_dedup:
                return Suppressed("never_notified")
            chosen = route(self.table, alert, self.channel.name, notified_firing=True)
        else:
            chosen = route(self.table, alert, self.channel.name)
        if chosen is None:
            return Suppressed("unrouted")
        env.target = chosen.target or self.channel.default_target
        if env.episode is not None and alert.status == "firing":
            env.target = env.episode.target  # an escalation updates the episode where it is (one PagerDuty incident)
        return CONTINUE


class RenderStage:
    """Build the provider payload before anything is claimed: an alert no payload can be made of is parked."""

    id: ClassVar[StageId] = "render"

    def __init__(self, channel: BaseChannel) -> None:
        self.channel = channel

    def __call__(self, env: Envelope) -> StageResult:
        try:
            env.payload = self.channel.render(env.decoded, env.target, thread_of(env))
        except DeliveryError as err:
            return DeadLetter("render", f"render {err}")
        except (ValueError, TypeError, OverflowError, OSError) as exc:
            return DeadLetter("render", f"render {type(exc).__name__}: {str(exc)[:200]}")
        return CONTINUE


class DedupStage:
    """Claim the (alert, channel) idempotency key, then the fingerprint's cooldown.

    ``in_doubt_ok``: resend an alert whose previous owner died mid-request (the provider
    dedups, or ``RESEND_IN_DOUBT``) instead of parking it.
    """

    id: ClassVar[StageId] = "dedup"
    poll_s = 0.2  # how often to look again while another live replica holds the claim

    def __init__(
        self,
        ledger: Ledger,
        lease: Lease,
        *,
        cooldown_s: float,
        sent_ttl_s: int,
        in_doubt_ok: bool,
        now: Clock,
    ) -> None:
        self.ledger, self.lease = ledger, lease
        self.cooldown_s, self.sent_ttl_s, self.in_doubt_ok = cooldown_s, sent_ttl_s, in_doubt_ok
        self.now = now

    def __call__(self, env: Envelope) -> StageResult:
        alert = env.decoded
        with tracer.start_as_current_span("idempotency check") as span:
            while True:
                current = self.ledger.get("idem", alert.alert_id)
                decision = idempotency_decision(current, self.lease.owner, self._now_ms(), self.in_doubt_ok)
                span.set_attribute("adwatch.dedup.decision", decision.reason)
                if decision.action == "skip":
                    return Suppressed("duplicate")
                if decision.action == "park":
                    self._record_episode_in_doubt(env)
                    return DeadLetter("in_doubt", "in_doubt: a previous owner died while sending")
                if decision.action == "wait":  # another live replica holds it (rebalance): look again later
                    return Defer(self.poll_s, "held_by_replica")
                claim = claim_value("claimed", self.lease.owner, self.lease.until_ms(self.now()))
                if self.ledger.swap("idem", alert.alert_id, current, claim, self.sent_ttl_s):
                    env.idem_held = claim
                    break
        if self.cooldown_s <= 0:
            return CONTINUE
        env.cooldown_checked = True
        with tracer.start_as_current_span("cooldown check") as span:
            while True:
                current = self.ledger.get("cooldown", alert.fingerprint)
                escalated = bool(escalated_from(env))
                decision = cooldown_decision(alert.status, current, alert.alert_id, self._now_ms(), escalated)
                span.set_attribute("adwatch.cooldown.decision", decision.reason)
                if decision.action == "skip":
                    return Suppressed("cooldown")
                if decision.reason in ("resolved", "own"):
                    env.cooldown_held = current if decision.reason == "own" else None
                    return CONTINUE
                value = cooldown_value(alert.alert_id, self._now_ms() + int(self.cooldown_s * 1000))
                if self.ledger.swap("cooldown", alert.fingerprint, current, value, math.ceil(self.cooldown_s) + 1):
                    env.cooldown_held = value
                    return CONTINUE

    def _now_ms(self) -> int:
        return int(self.now() * 1000)

    def _record_episode_in_doubt(self, env: Envelope) -> None:
        """A firing that may have reached the provider opens its episode all the same.

        It is parked, not resent (no duplicate page), but its recovery must still follow to the
        same target: a resolve for a firing the reader never saw is noise, an incident that never
        closes is a wrong state.
        """
        alert = env.decoded
        if alert.status != "firing" or env.episode is not None:
            return
        if self.ledger.get("ref", alert.fingerprint) is None:
            self.ledger.put("ref", alert.fingerprint, SENT, self.sent_ttl_s)
        episode = Episode.after_firing(None, alert, env.target, self._now_ms())
        self.ledger.put("episode", alert.fingerprint, episode.encode(), self.sent_ttl_s)


class DeliverStage:
    """One attempt per call; a retryable failure is a :class:`Defer` (backoff + jitter, Retry-After honoured).

    Nothing here sleeps: the run loop calls the stage again when the delay is over, while other
    records flow; the deadline (``RETRY_DEADLINE_SECONDS``) counts from the first attempt. A
    busy shared rate-limit slot is a ``Defer("rate_limit")`` too.

    Before each attempt the claim turns ``inflight`` (so a crash mid-request is seen as
    *in doubt*), after a failure back to ``claimed`` with a lease that outlives the backoff.
    ``on_failure`` counts every failed attempt as it happens.
    """

    id: ClassVar[StageId] = "deliver"

    def __init__(
        self,
        channel: BaseChannel,
        ledger: Ledger,
        lease: Lease,
        policy: RetryPolicy,
        *,
        sent_ttl_s: int,
        now: Clock,
        monotonic: Clock = time.monotonic,
        rand: Callable[[], float] = random.random,
        on_failure: Callable[[DeliveryError], None] = lambda _err: None,
    ) -> None:
        self.channel, self.ledger, self.lease, self.policy = channel, ledger, lease, policy
        self.sent_ttl_s, self.now = sent_ttl_s, now
        self.monotonic, self.rand, self.on_failure = monotonic, rand, on_failure

    def __call__(self, env: Envelope) -> StageResult:
        alert, name = env.decoded, self.channel.name
        follows = alert.status == "resolved" or bool(escalated_from(env))  # updates the episode's message
        ref = self.ledger.get("ref", alert.fingerprint) if follows else None
        ref = None if ref == SENT else ref
        if env.retry_started is None:
            env.retry_started = self.monotonic()
        slot_wait = self.ledger.acquire_slot(env.target, self.channel.min_interval_ms)
        if slot_wait > 0:
            return Defer(slot_wait, "rate_limit")
        env.attempts += 1
        inflight = claim_value("inflight", self.lease.owner, self.lease.until_ms(self.now()))
        if not self.ledger.swap("idem", alert.alert_id, env.idem_held, inflight, self.sent_ttl_s):
            # Our lease ran out and another replica took over: it sends, under our cooldown claim.
            env.idem_held = env.cooldown_held = None
            return Suppressed("duplicate")
        env.idem_held = inflight
        try:
            with tracer.start_as_current_span(f"{name} send", kind=trace.SpanKind.CLIENT) as span:
                span.set_attribute("adwatch.attempt", env.attempts)
                env.delivery = self.channel.send(alert, env.target, ref, env.payload)
            return CONTINUE
        except DeliveryError as err:
            self.on_failure(err)
            claimed = claim_value("claimed", self.lease.owner, self.lease.until_ms(self.now(), self.policy.max_s))
            if self.ledger.swap("idem", alert.alert_id, env.idem_held, claimed, self.sent_ttl_s):
                env.idem_held = claimed
            if str(err) != env.last_error:  # log a failure only when it differs from the previous one
                logger.warning(
                    "send failed: channel=%s attempt=%d error=%s",
                    name,
                    env.attempts,
                    err,
                    extra={"channel": name, "alert_id": alert.alert_id, "stage": self.id},
                )
                env.last_error = str(err)
            return after_failure(self.policy, err, env.attempts, self.monotonic() - env.retry_started, self.rand())


class MarkSentStage:
    """Record the delivery at once (the in-doubt window is one round trip plus this write)."""

    id: ClassVar[StageId] = "mark_sent"

    def __init__(self, ledger: Ledger, *, sent_ttl_s: int, now: Clock = time.time) -> None:
        self.ledger, self.sent_ttl_s, self.now = ledger, sent_ttl_s, now

    def __call__(self, env: Envelope) -> StageResult:
        alert, delivery = env.decoded, env.delivery
        if delivery is None:
            raise RuntimeError("mark_sent ran before deliver")
        self.ledger.put("idem", alert.alert_id, SENT, self.sent_ttl_s)
        env.idem_held = None
        if alert.status == "firing":  # also marks "this channel notified the episode" for routing
            self.ledger.put("ref", alert.fingerprint, delivery.provider_id or SENT, self.sent_ttl_s)
            episode = Episode.after_firing(env.episode, alert, env.target, int(self.now() * 1000))  # highest severity
            self.ledger.put("episode", alert.fingerprint, episode.encode(), self.sent_ttl_s)
        elif alert.status == "resolved":  # recovery closes the episode: the next firing notifies at once
            self.ledger.delete("ref", alert.fingerprint)
            self.ledger.delete("episode", alert.fingerprint)
            if env.cooldown_checked:
                self.ledger.delete("cooldown", alert.fingerprint)
        return CONTINUE


def build_stages(
    settings: NotifierSettings,
    channel: BaseChannel,
    table: RoutingTable,
    ledger: Ledger,
    lease: Lease,
    stop: threading.Event,
    *,
    now: Clock = time.time,
    monotonic: Clock = time.monotonic,
    on_failure: Callable[[DeliveryError], None] = lambda _err: None,
    silences: SilenceStore | None = None,
    inhibitions: InhibitStore | None = None,
    groups: GroupStore | None = None,
) -> Sequence[Stage]:
    """The chain of one channel, in order (Alertmanager's ``createReceiverStage``).

    Without ``inhibitions`` or ``silences`` (stores shared by the channels) that stage is left out;
    the ``group`` stage is there with ``groups`` when a route of the channel groups. ``monotonic``
    measures waits (retry deadline, inhibition wait, silence refresh); tests pass a fake clock.
    """
    ttl = settings.idempotency_ttl_seconds
    muting: list[Stage] = []
    if inhibitions is not None:
        muting.append(
            InhibitStage(
                inhibitions,
                table.inhibit_rules,
                source_ttl_s=settings.inhibit_source_ttl_seconds,
                now=now,
                wait_s=settings.inhibit_wait_seconds,
                monotonic=monotonic,
            )
        )
    if silences is not None:
        refresh_s = settings.silence_refresh_seconds
        muting.append(SilenceStage(silences, table.maintenance, now=now, refresh_s=refresh_s, monotonic=monotonic))
    if groups is not None and any(r.group is not None for r in table.routes if r.channel == channel.name):
        muting.append(GroupStage(table, channel, groups, now=now))
    return (
        DecodeStage(),
        LifecycleStage(ledger, channel.name, max_age_s=settings.max_alert_age_seconds, ttl_s=ttl, now=now),
        *muting,
        RouteStage(table, channel, ledger),
        RenderStage(channel),
        DedupStage(
            ledger,
            lease,
            cooldown_s=settings.cooldown_seconds,
            sent_ttl_s=ttl,
            in_doubt_ok=settings.resend_in_doubt or channel.provider_dedup,
            now=now,
        ),
        DeliverStage(
            channel,
            ledger,
            lease,
            settings.retry_policy,
            sent_ttl_s=ttl,
            now=now,
            monotonic=monotonic,
            on_failure=on_failure,
        ),
        MarkSentStage(ledger, sent_ttl_s=ttl, now=now),
    )
