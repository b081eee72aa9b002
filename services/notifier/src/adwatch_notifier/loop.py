"""The run loop: poll ``alerts``, run the stage chain on each record, act on its outcome, commit.

Everything a stage only *says* happens here, in one place: claims are released, dead
letters written (and acknowledged before the commit), metrics recorded, the outcome
logged. :class:`RecordProcessor` does it for one record and needs no broker;
:func:`consume` is the Kafka side around it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, TopicPartition
from opentelemetry import trace

from adwatch.kafka import dead_letter, make_producer
from adwatch.telemetry import (
    MESSAGING_CONSUMER_GROUP,
    MESSAGING_DESTINATION,
    MESSAGING_KAFKA_KEY,
    MESSAGING_KAFKA_OFFSET,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_PARTITION,
    MESSAGING_SYSTEM,
    extract_context,
    trace_id_exemplar,
)
from adwatch_notifier.delivery import DeliveryError
from adwatch_notifier.ledger import Ledger
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.outcomes import Continue, DeadLetter, Delivered, Outcome, StageId, Stop, Suppressed
from adwatch_notifier.stages import Clock, Envelope, Stage

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

DELIVERED = Delivered()


class DeadLetterError(Exception):
    """The DLQ write was not acknowledged: the offset must not be committed."""


class DeadLetterSink(Protocol):
    """Where parked records go; ``write`` returns only once the record is durable."""

    def write(self, env: Envelope, stage: StageId, letter: DeadLetter, channel: str) -> None: ...


class KafkaDeadLetters:
    """``<topic>.dlq`` records (``adwatch.contracts.DeadLetter``) with the original bytes, acknowledged."""

    def __init__(self, bootstrap: str, source_topic: str, dlq_topic: str) -> None:
        self.source_topic, self.dlq_topic = source_topic, dlq_topic
        self.errors: list[str] = []
        self.producer = make_producer(bootstrap, on_delivery=self._on_delivery)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def write(self, env: Envelope, stage: StageId, letter: DeadLetter, channel: str) -> None:
        with tracer.start_as_current_span(f"send {self.dlq_topic}", kind=trace.SpanKind.PRODUCER) as span:
            span.set_attribute("adwatch.dlq.reason", letter.reason)
            dead_letter(
                self.producer,
                self.dlq_topic,
                source_topic=self.source_topic,
                stage=stage,
                reason=letter.detail,
                payload=env.value,
                key=env.key,
                partition=env.partition,
                offset=env.offset,
                channel=channel,
                attempts=env.attempts,
            )
            if self.producer.flush(30) > 0 or self.errors:
                errors, self.errors[:] = list(self.errors), []
                raise DeadLetterError(f"dead letter not acknowledged: {errors or 'timeout'}")

    def close(self) -> None:
        self.producer.flush(5)


def run_chain(stages: Sequence[Stage], env: Envelope) -> tuple[Outcome, StageId | None]:
    """Run the stages in order until one does not say continue; that stage's id comes back too."""
    for stage in stages:
        result = stage(env)
        if not isinstance(result, Continue):
            return result, stage.id
    return DELIVERED, None


def release(ledger: Ledger, env: Envelope) -> None:
    """Give up our claims so that a replay of the record (or a parked one's) may send it later."""
    if env.alert is None:
        return
    if env.idem_held:
        ledger.delete_if("idem", env.alert.alert_id, env.idem_held)
        env.idem_held = None
    if env.cooldown_held:
        ledger.delete_if("cooldown", env.alert.fingerprint, env.cooldown_held)
        env.cooldown_held = None


class RecordProcessor:
    """Runs the chain on one record and acts on the outcome: the one place for metrics and dead letters."""

    def __init__(
        self,
        stages: Sequence[Stage],
        channel: str,
        ledger: Ledger,
        dead_letters: DeadLetterSink,
        metrics: NotifierMetrics,
        *,
        wall_clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.stages, self.channel, self.ledger = stages, channel, ledger
        self.dead_letters, self.metrics = dead_letters, metrics
        self.wall_clock, self.monotonic = wall_clock, monotonic

    def __call__(self, env: Envelope) -> Outcome:
        outcome, stage = run_chain(self.stages, env)
        fields: dict[str, Any] = {"channel": self.channel, "stage": stage, "outcome": outcome.label}
        if env.alert is not None:
            fields["alert_id"] = env.alert.alert_id
        match outcome:
            case Delivered():
                self._delivered(env, fields)
            case Suppressed(reason=reason):
                release(self.ledger, env)
                self.metrics.suppressed.labels(self.channel, reason).inc()
                self.metrics.notifications.labels(self.channel, outcome.kind).inc()
            case DeadLetter(reason=reason):
                assert stage is not None
                release(self.ledger, env)
                self.dead_letters.write(env, stage, outcome, self.channel)
                self.metrics.dead_letters.labels(self.channel, reason).inc()
                self.metrics.notifications.labels(self.channel, outcome.kind).inc()
                logger.warning(
                    "parked alert: channel=%s stage=%s reason=%s",
                    self.channel,
                    stage,
                    outcome.detail,
                    extra=fields,
                )
            case Stop():
                release(self.ledger, env)
        return outcome

    def _delivered(self, env: Envelope, fields: dict[str, Any]) -> None:
        alert = env.decoded
        exemplar = trace_id_exemplar()
        self.metrics.delivery_latency.labels(self.channel).observe(self.monotonic() - env.consumed_at, exemplar)
        e2e = max(0.0, (self.wall_clock() * 1000 - alert.window_end_ms) / 1000)
        self.metrics.end_to_end_latency.labels(self.channel).observe(e2e, exemplar)
        self.metrics.notifications.labels(self.channel, "delivered").inc()
        log = logger.info if env.attempts > 1 else logger.debug  # a success after retries is news
        log("delivered: channel=%s alert_id=%s attempts=%d", self.channel, alert.alert_id, env.attempts, extra=fields)


def failure_counter(metrics: NotifierMetrics, channel: str) -> Callable[[DeliveryError], None]:
    """The deliver stage's ``on_failure``: counts each failed attempt as it happens, not per record."""

    def count(err: DeliveryError) -> None:
        metrics.failures.labels(channel, err.reason).inc()

    return count


@dataclass
class RunStats:
    """What one run did: committed records by outcome (``Delivered()``, ``Suppressed("cooldown")``, ...)."""

    processed: int = 0
    outcomes: Counter[Outcome] = field(default_factory=Counter)


@dataclass
class Hooks:
    """Test seams: ``before_commit(env)`` may raise to simulate a crash after sending."""

    before_commit: Callable[[Envelope], None] | None = None
    on_ready: Callable[[RunStats], None] | None = None


def consume(
    consumer: Consumer,
    process: RecordProcessor,
    *,
    topic: str,
    group: str,
    stop: threading.Event,
    max_messages: int | None,
    stats: RunStats,
    hooks: Hooks,
) -> None:
    """Poll, process, commit; until ``stop`` is set or ``max_messages`` records are committed.

    Only a :class:`Stop` outcome leaves the offset uncommitted (the record is redelivered).
    """
    channel = process.channel
    lags: dict[int, int] = {}
    while not stop.is_set() and (max_messages is None or stats.processed < max_messages):
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        error = msg.error()
        if error is not None:
            if error.fatal():
                raise RuntimeError(f"fatal Kafka error: {error}")
            if error.code() != KafkaError._PARTITION_EOF:
                logger.warning("consumer error: %s", error)
            continue
        env = Envelope(msg.value() or b"", msg.key(), msg.partition() or 0, msg.offset() or 0)
        with tracer.start_as_current_span(
            f"process {topic}",
            context=extract_context(msg.headers()),  # type: ignore[arg-type]
            kind=trace.SpanKind.CONSUMER,
            attributes={
                MESSAGING_SYSTEM: "kafka",
                MESSAGING_OPERATION_TYPE: "process",
                MESSAGING_DESTINATION: topic,
                MESSAGING_PARTITION: str(env.partition),
                MESSAGING_CONSUMER_GROUP: group,
                MESSAGING_KAFKA_OFFSET: env.offset,
                MESSAGING_KAFKA_KEY: (env.key or b"").decode("utf-8", "replace"),
                "adwatch.channel": channel,
            },
        ) as span:
            outcome = process(env)
            span.set_attribute("adwatch.outcome", outcome.label)
        if isinstance(outcome, Stop):
            break  # not committed: the record is redelivered after restart
        if hooks.before_commit:
            hooks.before_commit(env)
        consumer.commit(message=msg, asynchronous=False)
        stats.processed += 1
        stats.outcomes[outcome] += 1
        _update_lag(consumer, topic, env, lags, process.metrics, channel)


def _update_lag(
    consumer: Consumer, topic: str, env: Envelope, lags: dict[int, int], metrics: NotifierMetrics, channel: str
) -> None:
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, env.partition), cached=True)
    except Exception:
        return
    lags[env.partition] = max(0, high - env.offset - 1)
    metrics.consumer_lag.labels(channel).set(sum(lags.values()))
