"""The run loop: poll ``alerts``, run the stage chain on each record, act on its outcome, commit.

Everything a stage only *says* happens here, in one place: claims are released, dead
letters written (and acknowledged before the commit), metrics recorded, the outcome
logged. :class:`RecordProcessor` does it for one record and needs no broker;
:func:`consume` is the Kafka side around it.

Nothing stops the loop: an exception in a stage becomes a classified outcome (the ledger
unavailable: ``Defer``, anything else: ``DeadLetter("internal")``); a deferred record waits in
the :class:`~adwatch_notifier.schedule.RetrySchedule` while the loop keeps polling, so one
failing alert delays no other and no wait outlives ``max.poll.interval.ms``; a failed
commit is counted and logged, not raised: the group moved on, the consumer rejoins (``on_revoke``
forgets the held records of partitions no longer ours, their offsets uncommitted so they are
redelivered) and what stays ours is committed with the next decided record. Nothing is rewound
by hand.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from opentelemetry import trace

from adwatch.kafka import dead_letter, make_producer
from adwatch.service import Heartbeat
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
from adwatch_notifier.ledger import Ledger, LedgerUnavailableError
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.outcomes import (
    Continue,
    DeadLetter,
    Defer,
    Delivered,
    Grouped,
    Outcome,
    StageId,
    Stop,
    Suppressed,
)
from adwatch_notifier.schedule import RetrySchedule
from adwatch_notifier.stages import Clock, Envelope, Stage
from adwatch_notifier.workers import DeliveryWorkers

INFLIGHT_POLL_S = 0.005  # while workers send: wait this long for a result, then poll this long
UNAVAILABLE_BACKOFF_S = (0.5, 30.0)  # first and longest wait while Redis or the DLQ does not answer

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

DELIVERED = Delivered()
CONTINUE = Continue()


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
        self.closed = False
        self._lock = threading.Lock()  # delivery workers park concurrently: one write and its flush at a time

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def write(self, env: Envelope, stage: StageId, letter: DeadLetter, channel: str) -> None:
        with self._lock, tracer.start_as_current_span(f"send {self.dlq_topic}", kind=trace.SpanKind.PRODUCER) as span:
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
                headers=env.headers,
                target=env.target,
                reason_code=letter.reason,
            )
            if self.producer.flush(30) > 0 or self.errors:
                errors, self.errors[:] = list(self.errors), []
                raise DeadLetterError(f"dead letter not acknowledged: {errors or 'timeout'}")

    def close(self) -> None:
        """Flush and close once: a live producer keeps reconnecting after the broker is gone."""
        if not self.closed:
            self.closed = True
            self.producer.flush(5)
            self.producer.close()


def run_chain(
    stages: Sequence[Stage], env: Envelope, stop_at: int | None = None
) -> tuple[Outcome | Continue, StageId | None]:
    """Run the stages in order (from ``env.resume_at``) until one does not say continue.

    That stage's id comes back too. An exception is classified here, never raised: the ledger
    not answering is a :class:`Defer` (retry later, no commit); anything else parks the record
    with the exception's type (its text may hold a URL, so only a clipped, URL-free part).
    ``stop_at``: run only the stages before that index; ``Continue`` when all of them continued.
    """
    end = len(stages) if stop_at is None else stop_at
    for index in range(env.resume_at, end):
        stage = stages[index]
        try:
            result = stage(env)
        except LedgerUnavailableError as exc:
            result = Defer(unavailable_delay(env), "unavailable", str(exc))
        except Exception as exc:
            logger.exception("stage %s raised", stage.id, extra={"stage": stage.id})
            result = DeadLetter("internal", f"internal {stage.id}: {type(exc).__name__}: {_scrub(str(exc))}")
        if isinstance(result, Defer):
            env.resume_at = index
            if result.reason != "unavailable":
                env.unavailable = 0
            return result, stage.id
        if not isinstance(result, Continue):
            return result, stage.id
    if end < len(stages):
        env.resume_at = end
        return CONTINUE, None
    return DELIVERED, None


def first_remote(stages: Sequence[Stage]) -> int:
    """The index of the first stage that talks to the provider (``deliver``): where a worker takes over."""
    return next((i for i, stage in enumerate(stages) if stage.id == "deliver"), len(stages))


def unavailable_delay(env: Envelope) -> float:
    """Exponential backoff while a dependency does not answer: 0.5 s, 1 s, 2 s ... 30 s."""
    first, longest = UNAVAILABLE_BACKOFF_S
    env.unavailable += 1
    return float(min(longest, first * 2 ** (env.unavailable - 1)))


def _scrub(text: str) -> str:
    """No URL (they may carry tokens) and no more than 200 characters of an exception's text."""
    return re.sub(r"\w+://\S+", "<url>", text)[:200]


def release(ledger: Ledger, env: Envelope) -> None:
    """Give up our claims so that a replay of the record (or a parked one's) may send it later.

    Best effort: with the ledger down the claims lapse with their lease.
    """
    if env.alert is None:
        return
    try:
        if env.idem_held:
            ledger.delete_if("idem", env.alert.alert_id, env.idem_held)
        if env.cooldown_held:
            ledger.delete_if("cooldown", env.alert.fingerprint, env.cooldown_held)
    except LedgerUnavailableError:
        logger.warning("claims not released (ledger unavailable): they lapse with their lease")
    env.idem_held = env.cooldown_held = None


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

    def prepare(self, env: Envelope) -> Outcome | None:
        """The stages before ``deliver``, on the loop thread in offset order; None: ready for a worker.

        Decode, lifecycle, inhibition, silences, grouping, routing, render and dedup read and write
        the shared state (an inhibiting source recorded, a group joined) in the order of the records,
        as a single thread would; only the send, which may take seconds, runs elsewhere.
        """
        if env.pending_letter is not None:  # its dead letter waits for the broker: a worker writes it
            return None
        split = first_remote(self.stages)
        if env.resume_at >= split:
            return None
        outcome, stage = run_chain(self.stages, env, stop_at=split)
        if isinstance(outcome, Continue):
            return None
        return self._act(env, outcome, stage)

    def __call__(self, env: Envelope) -> Outcome:
        if env.pending_letter is not None:  # decided before; only its dead letter was not acknowledged
            parked_at, letter = env.pending_letter
            return self._park(env, parked_at, letter, {"channel": self.channel, "stage": parked_at})
        outcome, stage = run_chain(self.stages, env)
        assert not isinstance(outcome, Continue)
        return self._act(env, outcome, stage)

    def _act(self, env: Envelope, outcome: Outcome, stage: StageId | None) -> Outcome:
        """Metrics, claims and dead letters for the outcome ``stage`` gave: the one place they happen."""
        if env.clipped and not env.clipped_counted:  # decode runs once per record: counted once
            env.clipped_counted = True
            for name in env.clipped:
                self.metrics.clipped_fields.labels(self.channel, name).inc()
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
            case Grouped():
                self.metrics.notifications.labels(self.channel, outcome.kind).inc()
            case DeadLetter():
                assert stage is not None
                release(self.ledger, env)
                return self._park(env, stage, outcome, fields)
            case Defer(reason=reason):
                self.metrics.deferred.labels(self.channel, reason).inc()
                if reason == "unavailable":
                    logger.warning("deferred: channel=%s %s", self.channel, outcome.detail, extra=fields)
            case Stop():
                release(self.ledger, env)
        return outcome

    def _park(self, env: Envelope, stage: StageId, letter: DeadLetter, fields: dict[str, Any]) -> Outcome:
        """Write the dead letter; not acknowledged: keep the record and try the write again later."""
        try:
            self.dead_letters.write(env, stage, letter, self.channel)
        except Exception as exc:
            env.pending_letter = (stage, letter)
            return Defer(unavailable_delay(env), "unavailable", f"dead letter not written: {type(exc).__name__}")
        env.pending_letter = None
        self.metrics.dead_letters.labels(self.channel, letter.reason).inc()
        self.metrics.notifications.labels(self.channel, letter.kind).inc()
        logger.warning("parked alert: channel=%s stage=%s reason=%s", self.channel, stage, letter.detail, extra=fields)
        return letter

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


def group_parker(
    sink: DeadLetterSink, metrics: NotifierMetrics, channel: str
) -> Callable[[str, str, bytes, DeadLetter, int, str], None]:
    """The group flusher's ``park``: a member's dead letter (stage ``group``), counted once written.

    The record key is the member's fingerprint (as on the alerts topic); raises when not acknowledged.
    """

    def park(key: str, fingerprint: str, value: bytes, letter: DeadLetter, attempts: int, target: str) -> None:
        env = Envelope(value, (fingerprint or key).encode(), attempts=attempts, target=target)
        sink.write(env, "group", letter, channel)
        metrics.dead_letters.labels(channel, letter.reason).inc()
        metrics.notifications.labels(channel, letter.kind).inc()
        logger.warning(
            "parked group member: channel=%s group=%s reason=%s",
            channel,
            key,
            letter.detail,
            extra={"channel": channel, "stage": "group", "group": key},
        )

    return park


@dataclass
class RunStats:
    """What one run did: committed records by outcome (``Delivered()``, ``Suppressed("cooldown")``, ...)."""

    processed: int = 0
    outcomes: Counter[Outcome] = field(default_factory=Counter)


def consume(
    consumer: Consumer,
    process: RecordProcessor,
    *,
    topic: str,
    group: str,
    stop: threading.Event,
    max_messages: int | None,
    stats: RunStats,
    schedule: RetrySchedule | None = None,
    heartbeat: Heartbeat | None = None,
    monotonic: Clock = time.monotonic,
    poll_s: float = 0.2,
    tick: Callable[[], object] | None = None,
    tick_s: float = 0.25,
    workers: int = 0,
    drain_s: float = 10.0,
) -> None:
    """Subscribe, poll, process, commit; until ``stop`` is set or ``max_messages`` records are decided.

    ``tick`` (the group flusher) runs every ``tick_s`` on the loop's clock; its failures are logged.
    A deferred record goes to the schedule and the loop polls on; it runs again when due, and
    the offsets of each partition are committed up to its lowest undecided record. A
    :class:`Stop` outcome, the end of the run, or a revoked partition leaves the undecided
    records uncommitted (redelivered later; what was sent meanwhile is skipped as duplicate).

    ``workers`` > 0: the stages before ``deliver`` run here, in offset order
    (:meth:`RecordProcessor.prepare`), the rest of each pass on one of that many
    :class:`DeliveryWorkers` threads: a provider that hangs holds one worker while the loop polls,
    commits and prepares other records (0: the whole chain here, as the fake-clock tests drive it).
    At the end of the run the records in flight get ``drain_s`` to finish and be decided.
    """
    channel, metrics = process.channel, process.metrics
    schedule = schedule or RetrySchedule()
    lags: dict[int, int] = {}
    paused: list[TopicPartition] = []

    def commit(partition: int) -> None:
        position = schedule.commit_position(partition)
        if position is None:
            return
        try:
            consumer.commit(offsets=[TopicPartition(topic, partition, position)], asynchronous=False)
        except KafkaException as exc:
            # UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS...: the group moved on. The consumer rejoins
            # (on_revoke forgets what is no longer ours); what stays ours is committed next time.
            metrics.commit_failures.labels(channel).inc()
            logger.warning("commit failed, handled as a rebalance: %s", exc.args[0] if exc.args else exc)
            return
        schedule.committed(partition, position)

    def forget(partitions: set[int] | None) -> None:
        for env in schedule.drop(partitions):
            if pool is None or not pool.is_inflight(env):  # a worker still uses its claims: see stale results
                release(process.ledger, env)
        if pool is not None:
            pool.disown(partitions)
        metrics.held_records.labels(channel).set(schedule.undecided)

    def on_revoke(_consumer: Any, revoked: list[TopicPartition]) -> None:
        mine = {tp.partition for tp in revoked if tp.topic == topic}
        for partition in mine:
            commit(partition)
        forget(mine)

    consumer.subscribe([topic], on_revoke=on_revoke)

    def open_span(env: Envelope) -> trace.Span:
        """The span of one pass of ``env``, begun on the loop thread, ended where the pass ends."""
        # The first pass is the record's one "process" span; a deferred record's later passes are
        # "retry" spans in the same trace, so each attempt shows without faking a second delivery.
        return tracer.start_span(
            f"retry {topic}" if env.deferrals else f"process {topic}",
            context=extract_context(env.headers),
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
                "adwatch.deferrals": env.deferrals,
            },
        )

    def send(env: Envelope, span: trace.Span) -> Outcome:
        """The rest of the pass from ``deliver`` on, in its span (a worker thread)."""
        with trace.use_span(span, end_on_exit=True):
            outcome = process(env)
            span.set_attribute("adwatch.outcome", outcome.label)
        return outcome

    pool = DeliveryWorkers(workers, f"deliver-{channel}") if workers > 0 else None

    def settle(env: Envelope) -> bool:
        """One pass of ``env``: here up to ``deliver``, then on a worker (or all here without workers).

        False when the run must stop (nothing committed).
        """
        span = open_span(env)
        try:
            with trace.use_span(span, end_on_exit=False):
                outcome = process(env) if pool is None else process.prepare(env)
        except BaseException:
            span.end()
            raise
        if outcome is None:  # ready to send: a worker takes it on
            assert pool is not None
            pool.submit(env, lambda: send(env, span))
            return True
        span.set_attribute("adwatch.outcome", outcome.label)
        span.end()
        return decide(env, outcome)

    def decide(env: Envelope, outcome: Outcome) -> bool:
        """Act on a record's outcome (loop thread only): hold it for later, or decide and commit it."""
        if isinstance(outcome, Stop):
            return False
        if isinstance(outcome, Defer):
            env.deferrals += 1
            schedule.hold(env, monotonic() + outcome.delay_s)
            metrics.held_records.labels(channel).set(schedule.undecided)
            return True
        following = schedule.decide(env)
        commit(env.partition)
        stats.processed += 1
        stats.outcomes[outcome] += 1
        metrics.held_records.labels(channel).set(schedule.undecided)
        if following is not None:
            schedule.hold(following, monotonic())  # its key is free: due now
        _update_lag(consumer, topic, env, lags, metrics, channel)
        return True

    def collect(wait_s: float = 0.0) -> bool:
        """Decide what the workers finished; False when the run must stop."""
        if pool is None:
            return True
        finished = pool.done(wait_s)
        for env, result in pool.stale:  # its partition was revoked while it ran: nothing to decide
            if isinstance(result, Defer):
                release(process.ledger, env)
        pool.stale.clear()
        for env, result in finished:
            if isinstance(result, BaseException):
                raise result
            if not decide(env, result):
                return False
        return True

    def room() -> bool:
        """May another record start? Not once the records decided and in flight reach ``max_messages``."""
        inflight = pool.inflight if pool is not None else 0
        return max_messages is None or stats.processed + inflight < max_messages

    ticked = [monotonic()]

    def run_tick() -> None:
        if tick is None or monotonic() - ticked[0] < tick_s:
            return
        ticked[0] = monotonic()
        try:
            tick()
        except LedgerUnavailableError as exc:
            logger.warning("group flush deferred: %s", exc)
        except Exception:
            logger.exception("group flush failed")

    try:
        while not stop.is_set() and (max_messages is None or stats.processed < max_messages):
            if heartbeat is not None:
                heartbeat.beat()  # /healthz: the loop goes round (a wedged send or poll stops it)
            run_tick()
            if not collect():
                return
            while room() and (due := schedule.pop_due(monotonic())) is not None:
                if not settle(due):
                    return
                if stop.is_set() or (max_messages is not None and stats.processed >= max_messages):
                    return
            if schedule.full and not paused:
                paused = list(consumer.assignment())
                consumer.pause(paused)
                logger.warning("%d records undecided: consumption paused", schedule.undecided)
            elif paused and not schedule.full:
                consumer.resume(paused)
                paused = []
            if not room():  # the rest of the run is in flight: wait for it, poll nothing more
                if not collect(poll_s):
                    return
                continue
            next_due = schedule.next_due()
            timeout = poll_s if next_due is None else min(poll_s, max(0.0, next_due - monotonic()))
            if pool is not None and pool.inflight:
                # wake on a worker's result (its key's next record may start), then a short poll
                if not collect(INFLIGHT_POLL_S):
                    return
                timeout = min(timeout, INFLIGHT_POLL_S)
            msg = consumer.poll(timeout)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise RuntimeError(f"fatal Kafka error: {error}")
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("consumer error: %s", error)
                continue
            env = Envelope(
                msg.value() or b"",
                msg.key(),
                msg.partition() or 0,
                msg.offset() or 0,
                headers=_headers(msg.headers()),
            )
            if schedule.admit(env) and not settle(env):
                return
    finally:
        if pool is not None:
            _finish_inflight(pool, decide, drain_s)
        forget(None)  # undecided records stay uncommitted: claims released, redelivered later


def _finish_inflight(pool: DeliveryWorkers, decide: Callable[[Envelope, Outcome], bool], drain_s: float) -> None:
    """The run ends: let the sends under way finish (up to ``drain_s``) and commit what they decided.

    A send still under way after that keeps its ``inflight`` claim: the next owner sees it in doubt.
    """
    try:
        for env, result in pool.drain(drain_s):
            if not isinstance(result, BaseException):
                decide(env, result)
    except Exception:
        logger.exception("records in flight at the end of the run not decided")
    finally:
        pool.close()


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    return [(str(h[0]), h[1]) for h in (raw or []) if isinstance(h, tuple) and isinstance(h[1], bytes)]


def _update_lag(
    consumer: Consumer, topic: str, env: Envelope, lags: dict[int, int], metrics: NotifierMetrics, channel: str
) -> None:
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, env.partition), cached=True)
    except Exception:
        return
    lags[env.partition] = max(0, high - env.offset - 1)
    metrics.consumer_lag.labels(channel).set(sum(lags.values()))
