"""The notifier as a pipeline of named stages: decode → route → dedup → deliver (retry) → mark-sent.

Each stage takes the envelope of one consumed record and returns True to pass it on or
False when it is finished with it (skipped, parked, or stopped); ``env.outcome`` says
which. Only ``stopped`` leaves the offset uncommitted. :func:`build_pipeline` builds the chain.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Producer
from opentelemetry import trace

from adwatch.contracts import Alert, ContractError, decode
from adwatch.kafka import dead_letter
from adwatch.telemetry import trace_id_exemplar
from adwatch_notifier import metrics
from adwatch_notifier.channels import BaseChannel
from adwatch_notifier.dedup import SENT, claim_value, cooldown_decision, cooldown_value, idempotency_decision
from adwatch_notifier.delivery import Delivery, DeliveryError
from adwatch_notifier.ledger import Ledger
from adwatch_notifier.retry import RetryPolicy, next_delay
from adwatch_notifier.routing import RoutingTable, route

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class DeadLetterError(Exception):
    """The DLQ write was not acknowledged: the offset must not be committed."""


@dataclass
class Envelope:
    """One consumed record on its way through the stages."""

    value: bytes
    key: bytes | None
    partition: int
    offset: int
    consumed_at: float = field(default_factory=time.monotonic)
    alert: Alert | None = None
    target: str = ""
    idem_key: str = ""
    idem_held: str | None = None  # the claim value we wrote, while we own the key
    cooldown_key: str = ""
    cooldown_held: str | None = None  # the cooldown value we wrote for this alert
    attempts: int = 0
    delivery: Delivery | None = None
    outcome: str = ""


class Stage(Protocol):
    name: str

    def __call__(self, env: Envelope) -> bool: ...


@dataclass
class Context:
    """What the stages share: one channel, its ledger, the DLQ producer and the clocks."""

    channel: BaseChannel
    ledger: Ledger
    producer: Producer
    source_topic: str
    dlq_topic: str
    owner: str
    lease_s: float
    cooldown_s: float
    sent_ttl_s: int
    resend_in_doubt: bool
    policy: RetryPolicy
    stop: threading.Event
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000)
    rand: Callable[[], float] = random.random
    dlq_errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.channel.name

    def lease_until(self, extra_s: float = 0.0) -> int:
        return self.now_ms() + int((self.lease_s + extra_s) * 1000)

    def suppress(self, env: Envelope, reason: str) -> bool:
        metrics.SUPPRESSED.labels(self.name, reason).inc()
        metrics.NOTIFICATIONS.labels(self.name, "suppressed").inc()
        env.outcome = f"suppressed:{reason}"
        return False

    def release(self, env: Envelope) -> None:
        """Give up our claims so that a replay of the parked record may send it later."""
        if env.idem_held:
            self.ledger.delete_if(env.idem_key, env.idem_held)
            env.idem_held = None
        if env.cooldown_held:
            self.ledger.delete_if(env.cooldown_key, env.cooldown_held)
            env.cooldown_held = None

    def park(self, env: Envelope, stage: str, label: str, reason: str) -> bool:
        """Dead-letter the original bytes with the reason, wait for the broker's ack."""
        with tracer.start_as_current_span(f"send {self.dlq_topic}", kind=trace.SpanKind.PRODUCER) as span:
            span.set_attribute("adwatch.dlq.reason", label)
            self.release(env)
            dead_letter(
                self.producer,
                self.dlq_topic,
                source_topic=self.source_topic,
                stage=stage,
                reason=reason,
                payload=env.value,
                key=env.key,
                partition=env.partition,
                offset=env.offset,
                channel=self.name,
                attempts=env.attempts,
            )
            if self.producer.flush(30) > 0 or self.dlq_errors:
                errors, self.dlq_errors[:] = list(self.dlq_errors), []
                raise DeadLetterError(f"dead letter not acknowledged: {errors or 'timeout'}")
        metrics.DEAD_LETTERS.labels(self.name, label).inc()
        metrics.NOTIFICATIONS.labels(self.name, "dead_lettered").inc()
        logger.warning("parked alert in %s: channel=%s stage=%s reason=%s", self.dlq_topic, self.name, stage, reason)
        env.outcome = f"dead_lettered:{label}"
        return False


class DecodeStage:
    name = "decode"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __call__(self, env: Envelope) -> bool:
        try:
            env.alert = decode(env.value, Alert)
        except ContractError as exc:
            return self.ctx.park(env, self.name, "contract", f"ContractError: {exc}")
        return True


class RouteStage:
    name = "route"

    def __init__(self, ctx: Context, table: RoutingTable) -> None:
        self.ctx, self.table = ctx, table

    def __call__(self, env: Envelope) -> bool:
        assert env.alert is not None
        chosen = route(self.table, env.alert, self.ctx.name)
        if chosen is None and env.alert.status == "resolved":
            notified = self.ctx.ledger.get(self.ctx.ledger.key("ref", env.alert.fingerprint)) is not None
            chosen = route(self.table, env.alert, self.ctx.name, notified_firing=notified)
        if chosen is None:
            return self.ctx.suppress(env, "unrouted")
        env.target = chosen.target or self.ctx.channel.default_target
        return True


class DedupStage:
    """Claim the (alert, channel) idempotency key, then the fingerprint's cooldown."""

    name = "dedup"
    poll_s = 0.2

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __call__(self, env: Envelope) -> bool:
        ctx, alert = self.ctx, env.alert
        assert alert is not None
        env.idem_key = ctx.ledger.key("idem", alert.alert_id)
        with tracer.start_as_current_span("idempotency check") as span:
            while True:
                current = ctx.ledger.get(env.idem_key)
                decision = idempotency_decision(
                    current, ctx.owner, ctx.now_ms(), ctx.resend_in_doubt or ctx.channel.provider_dedup
                )
                span.set_attribute("adwatch.dedup.decision", decision.reason)
                if decision.action == "skip":
                    return ctx.suppress(env, "duplicate")
                if decision.action == "park":
                    return ctx.park(env, self.name, "in_doubt", "in_doubt: a previous owner died while sending")
                if decision.action == "wait":  # another live replica holds it (rebalance): wait for its verdict
                    if ctx.stop.wait(self.poll_s):
                        env.outcome = "stopped"
                        return False
                    continue
                claim = claim_value("claimed", ctx.owner, ctx.lease_until())
                if ctx.ledger.swap(env.idem_key, current, claim, ctx.sent_ttl_s):
                    env.idem_held = claim
                    break
        if ctx.cooldown_s <= 0:
            return True
        env.cooldown_key = ctx.ledger.key("cooldown", alert.fingerprint)
        with tracer.start_as_current_span("cooldown check") as span:
            while True:
                current = ctx.ledger.get(env.cooldown_key)
                decision = cooldown_decision(alert.status, current, alert.alert_id, ctx.now_ms())
                span.set_attribute("adwatch.cooldown.decision", decision.reason)
                if decision.action == "skip":
                    ctx.release(env)
                    return ctx.suppress(env, "cooldown")
                if decision.reason in ("resolved", "own"):
                    env.cooldown_held = current if decision.reason == "own" else None
                    return True
                value = cooldown_value(alert.alert_id, ctx.now_ms() + int(ctx.cooldown_s * 1000))
                if ctx.ledger.swap(env.cooldown_key, current, value, math.ceil(ctx.cooldown_s) + 1):
                    env.cooldown_held = value
                    return True


class DeliverStage:
    """Send with retries: backoff + jitter to the deadline, Retry-After honoured, shared rate limit."""

    name = "deliver"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __call__(self, env: Envelope) -> bool:
        ctx, alert = self.ctx, env.alert
        assert alert is not None
        ref = ctx.ledger.get(ctx.ledger.key("ref", alert.fingerprint)) if alert.status == "resolved" else None
        ref = None if ref == SENT else ref
        started, last_error = time.monotonic(), ""
        while True:
            if not self._wait_for_slot(env):
                return self._stopped(env)
            env.attempts += 1
            inflight = claim_value("inflight", ctx.owner, ctx.lease_until())
            if not ctx.ledger.swap(env.idem_key, env.idem_held, inflight, ctx.sent_ttl_s):
                env.idem_held = None  # our lease ran out and another replica took over: it sends
                return ctx.suppress(env, "duplicate")
            env.idem_held = inflight
            try:
                with tracer.start_as_current_span(f"{ctx.name} send", kind=trace.SpanKind.CLIENT) as span:
                    span.set_attribute("adwatch.attempt", env.attempts)
                    env.delivery = ctx.channel.send(alert, env.target, ref)
                return True
            except DeliveryError as err:
                metrics.FAILURES.labels(ctx.name, err.reason).inc()
                claimed = claim_value("claimed", ctx.owner, ctx.lease_until(ctx.policy.max_s))
                if ctx.ledger.swap(env.idem_key, env.idem_held, claimed, ctx.sent_ttl_s):
                    env.idem_held = claimed
                if str(err) != last_error:
                    logger.warning("send failed: channel=%s attempt=%d error=%s", ctx.name, env.attempts, err)
                    last_error = str(err)
                if not err.retryable:
                    return ctx.park(env, self.name, "permanent", f"permanent {err}")
                delay = next_delay(ctx.policy, env.attempts, time.monotonic() - started, ctx.rand(), err.retry_after)
                if delay is None:
                    return ctx.park(
                        env, self.name, "deadline", f"deadline exceeded after {env.attempts} attempts: {err}"
                    )
                with tracer.start_as_current_span("retry wait") as span:
                    span.set_attribute("adwatch.retry.delay_s", delay)
                    if ctx.stop.wait(delay):
                        return self._stopped(env)

    def _wait_for_slot(self, env: Envelope) -> bool:
        while (wait := self.ctx.ledger.acquire_slot(f"{env.target}", self.ctx.channel.min_interval_ms)) > 0:
            if self.ctx.stop.wait(wait):
                return False
        return True

    def _stopped(self, env: Envelope) -> bool:
        self.ctx.release(env)
        env.outcome = "stopped"
        return False


class MarkSentStage:
    """Record the delivery at once (the in-doubt window is one round trip plus this write)."""

    name = "mark_sent"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __call__(self, env: Envelope) -> bool:
        ctx, alert, delivery = self.ctx, env.alert, env.delivery
        assert alert is not None and delivery is not None
        ctx.ledger.put(env.idem_key, SENT, ctx.sent_ttl_s)
        env.idem_held = None
        ref_key = ctx.ledger.key("ref", alert.fingerprint)
        if alert.status == "firing":  # also marks "this channel notified the episode" for routing
            ctx.ledger.put(ref_key, delivery.provider_id or SENT, ctx.sent_ttl_s)
        elif alert.status == "resolved":  # recovery closes the episode: the next firing notifies at once
            ctx.ledger.delete(ref_key)
            if env.cooldown_key:
                ctx.ledger.delete(env.cooldown_key)
        exemplar = trace_id_exemplar()
        metrics.DELIVERY_LATENCY.labels(ctx.name).observe(time.monotonic() - env.consumed_at, exemplar)
        e2e = max(0.0, (time.time() * 1000 - alert.window_end_ms) / 1000)
        metrics.END_TO_END_LATENCY.labels(ctx.name).observe(e2e, exemplar)
        metrics.NOTIFICATIONS.labels(ctx.name, "delivered").inc()
        log = logger.info if env.attempts > 1 else logger.debug
        log("delivered: channel=%s alert_id=%s attempts=%d", ctx.name, alert.alert_id, env.attempts)
        env.outcome = "delivered"
        return True


def build_pipeline(ctx: Context, table: RoutingTable) -> list[Stage]:
    return [DecodeStage(ctx), RouteStage(ctx, table), DedupStage(ctx), DeliverStage(ctx), MarkSentStage(ctx)]


def run_pipeline(stages: Sequence[Stage], env: Envelope) -> str:
    """Run the stages in order; return the outcome."""
    for stage in stages:
        if not stage(env):
            break
    return env.outcome


def dlq_delivery_callback(ctx_errors: list[str]) -> Callable[[Any, Any], None]:
    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            ctx_errors.append(str(err))

    return on_delivery
