"""The notifier's stages: decode → route → dedup → deliver (retry) → mark_sent, one record at a time.

Each stage gets only what it uses (a :class:`~adwatch_notifier.ledger.Ledger`, its
channel, a clock, the retry policy) and returns an outcome
(:mod:`adwatch_notifier.outcomes`); none of them writes metrics, dead letters or offsets.
Stages share one :class:`Envelope` per record, on which each leaves what a later stage
or the run loop needs (the alert, its target, the claims it holds). :func:`build_stages`
builds the chain, like Alertmanager's ``createReceiverStage``.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from opentelemetry import trace

from adwatch.contracts import Alert, ContractError, decode
from adwatch_notifier.channels import BaseChannel
from adwatch_notifier.dedup import SENT, claim_value, cooldown_decision, cooldown_value, idempotency_decision
from adwatch_notifier.delivery import Delivery, DeliveryError
from adwatch_notifier.ledger import Ledger
from adwatch_notifier.outcomes import Continue, DeadLetter, StageId, StageResult, Stop, Suppressed
from adwatch_notifier.retry import RetryPolicy, next_delay
from adwatch_notifier.routing import RoutingTable, route
from adwatch_notifier.settings import NotifierSettings

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

    @property
    def decoded(self) -> Alert:
        """The alert, for stages after ``decode`` (which sets it or dead-letters the record)."""
        if self.alert is None:
            raise RuntimeError("stage ran before decode")
        return self.alert


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


class DecodeStage:
    """Bytes → :class:`Alert`; a record that breaks the contract is dead-lettered as is."""

    id: ClassVar[StageId] = "decode"

    def __call__(self, env: Envelope) -> StageResult:
        try:
            env.alert = decode(env.value, Alert)
        except ContractError as exc:
            return DeadLetter("contract", f"ContractError: {exc}")
        return CONTINUE


class RouteStage:
    """Is the alert for this channel, and to which target? A recovery follows its notified firing."""

    id: ClassVar[StageId] = "route"

    def __init__(self, table: RoutingTable, channel: BaseChannel, ledger: Ledger) -> None:
        self.table, self.channel, self.ledger = table, channel, ledger

    def __call__(self, env: Envelope) -> StageResult:
        alert = env.decoded
        chosen = route(self.table, alert, self.channel.name)
        if chosen is None and alert.status == "resolved":
            notified = self.ledger.get("ref", alert.fingerprint) is not None
            chosen = route(self.table, alert, self.channel.name, notified_firing=notified)
        if chosen is None:
            return Suppressed("unrouted")
        env.target = chosen.target or self.channel.default_target
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
        wait: Wait,
    ) -> None:
        self.ledger, self.lease = ledger, lease
        self.cooldown_s, self.sent_ttl_s, self.in_doubt_ok = cooldown_s, sent_ttl_s, in_doubt_ok
        self.now, self.wait = now, wait

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
                    return DeadLetter("in_doubt", "in_doubt: a previous owner died while sending")
                if decision.action == "wait":  # another live replica holds it (rebalance): wait for its verdict
                    if self.wait(self.poll_s):
                        return STOP
                    continue
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
                decision = cooldown_decision(alert.status, current, alert.alert_id, self._now_ms())
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


class DeliverStage:
    """Send with retries: backoff + jitter to the deadline, Retry-After honoured, shared rate limit.

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
        wait: Wait,
        monotonic: Clock = time.monotonic,
        rand: Callable[[], float] = random.random,
        on_failure: Callable[[DeliveryError], None] = lambda _err: None,
    ) -> None:
        self.channel, self.ledger, self.lease, self.policy = channel, ledger, lease, policy
        self.sent_ttl_s, self.now, self.wait = sent_ttl_s, now, wait
        self.monotonic, self.rand, self.on_failure = monotonic, rand, on_failure

    def __call__(self, env: Envelope) -> StageResult:
        alert, name = env.decoded, self.channel.name
        ref = self.ledger.get("ref", alert.fingerprint) if alert.status == "resolved" else None
        ref = None if ref == SENT else ref
        started, last_error = self.monotonic(), ""
        while True:
            if not self._wait_for_slot(env.target):
                return STOP
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
                    env.delivery = self.channel.send(alert, env.target, ref)
                return CONTINUE
            except DeliveryError as err:
                self.on_failure(err)
                claimed = claim_value("claimed", self.lease.owner, self.lease.until_ms(self.now(), self.policy.max_s))
                if self.ledger.swap("idem", alert.alert_id, env.idem_held, claimed, self.sent_ttl_s):
                    env.idem_held = claimed
                if str(err) != last_error:  # log a failure only when it differs from the previous one
                    logger.warning(
                        "send failed: channel=%s attempt=%d error=%s",
                        name,
                        env.attempts,
                        err,
                        extra={"channel": name, "alert_id": alert.alert_id, "stage": self.id},
                    )
                    last_error = str(err)
                if not err.retryable:
                    return DeadLetter("permanent", f"permanent {err}")
                elapsed = self.monotonic() - started
                delay = next_delay(self.policy, env.attempts, elapsed, self.rand(), err.retry_after)
                if delay is None:
                    return DeadLetter("deadline", f"deadline exceeded after {env.attempts} attempts: {err}")
                with tracer.start_as_current_span("retry wait") as span:
                    span.set_attribute("adwatch.retry.delay_s", delay)
                    if self.wait(delay):
                        return STOP

    def _wait_for_slot(self, target: str) -> bool:
        while (wait := self.ledger.acquire_slot(target, self.channel.min_interval_ms)) > 0:
            if self.wait(wait):
                return False
        return True


class MarkSentStage:
    """Record the delivery at once (the in-doubt window is one round trip plus this write)."""

    id: ClassVar[StageId] = "mark_sent"

    def __init__(self, ledger: Ledger, *, sent_ttl_s: int) -> None:
        self.ledger, self.sent_ttl_s = ledger, sent_ttl_s

    def __call__(self, env: Envelope) -> StageResult:
        alert, delivery = env.decoded, env.delivery
        if delivery is None:
            raise RuntimeError("mark_sent ran before deliver")
        self.ledger.put("idem", alert.alert_id, SENT, self.sent_ttl_s)
        env.idem_held = None
        if alert.status == "firing":  # also marks "this channel notified the episode" for routing
            self.ledger.put("ref", alert.fingerprint, delivery.provider_id or SENT, self.sent_ttl_s)
        elif alert.status == "resolved":  # recovery closes the episode: the next firing notifies at once
            self.ledger.delete("ref", alert.fingerprint)
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
    on_failure: Callable[[DeliveryError], None] = lambda _err: None,
) -> Sequence[Stage]:
    """The chain of one channel, in order (Alertmanager's ``createReceiverStage``)."""
    ttl = settings.idempotency_ttl_seconds
    return (
        DecodeStage(),
        RouteStage(table, channel, ledger),
        DedupStage(
            ledger,
            lease,
            cooldown_s=settings.cooldown_seconds,
            sent_ttl_s=ttl,
            in_doubt_ok=settings.resend_in_doubt or channel.provider_dedup,
            now=now,
            wait=stop.wait,
        ),
        DeliverStage(
            channel,
            ledger,
            lease,
            settings.retry_policy,
            sent_ttl_s=ttl,
            now=now,
            wait=stop.wait,
            on_failure=on_failure,
        ),
        MarkSentStage(ledger, sent_ttl_s=ttl),
    )
