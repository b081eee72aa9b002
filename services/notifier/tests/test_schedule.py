"""The run loop without a broker: a fake consumer, the real chain on the in-memory ledger.

Nothing stops the loop: a failing alert waits in the retry schedule while others flow, a
stage that raises parks its record, the ledger down defers (no commit), a failed commit is
survived. Real time, bounded: each test runs well under a second or two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from adwatch.contracts import Alert, encode
from adwatch_notifier.delivery import Delivery, DeliveryError
from adwatch_notifier.ledger import LedgerUnavailableError
from adwatch_notifier.loop import RecordProcessor, RunStats, consume
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.outcomes import DeadLetter, Delivered
from adwatch_notifier.routing import load_routes
from adwatch_notifier.schedule import RetrySchedule
from adwatch_notifier.settings import NotifierSettings
from adwatch_notifier.stages import Envelope, Lease, build_stages

from .conftest import make_alert
from .fakes import FuncChannel, ListDeadLetters, MemoryLedger

TOPIC = "alerts"


@dataclass
class FakeMessage:
    _value: bytes
    _key: bytes
    _partition: int
    _offset: int

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def headers(self) -> list[tuple[str, bytes]]:
        return [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]

    def error(self) -> None:
        return None


@dataclass
class FakeConsumer:
    """Hands out queued records; records commits; can fail the next commits like a rebalance would."""

    queue: list[FakeMessage] = field(default_factory=list)
    commits: list[tuple[int, int]] = field(default_factory=list)
    fail_commits: int = 0
    paused: list[Any] = field(default_factory=list)

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def poll(self, timeout: float) -> FakeMessage | None:
        if self.queue:
            return self.queue.pop(0)
        time.sleep(min(timeout, 0.01))
        return None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID))
        self.commits += [(tp.partition, tp.offset) for tp in offsets]

    def assignment(self) -> list[Any]:
        return []

    def pause(self, partitions: list[Any]) -> None:
        self.paused = partitions

    def resume(self, partitions: list[Any]) -> None:
        self.paused = []

    def get_watermark_offsets(self, tp: Any, cached: bool) -> tuple[int, int]:
        return 0, 0


def records(*alerts: Alert, partition: int = 0) -> list[FakeMessage]:
    return [FakeMessage(encode(a), a.fingerprint.encode(), partition, i) for i, a in enumerate(alerts)]


def run_loop(
    consumer: FakeConsumer,
    channel: FuncChannel,
    count: int,
    ledger: Any = None,
    timeout_s: float = 10.0,
    **settings: Any,
) -> tuple[RunStats, ListDeadLetters, CollectorRegistry]:
    values: dict[str, Any] = {
        "channel": "console",
        "max_alert_age_seconds": 0,
        "cooldown_seconds": 0,
        "retry_initial_seconds": 0.05,
        "retry_max_seconds": 0.1,
        "retry_deadline_seconds": 0.6,
        **settings,
    }
    ledger = ledger if ledger is not None else MemoryLedger(time.time)
    stop = threading.Event()
    stages = build_stages(NotifierSettings(**values), channel, load_routes(), ledger, Lease("me", 30), stop)
    letters, registry = ListDeadLetters(), CollectorRegistry()
    process = RecordProcessor(stages, channel.name, ledger, letters, NotifierMetrics(registry))
    stats = RunStats()
    timer = threading.Timer(timeout_s, stop.set)
    timer.start()
    try:
        consume(
            consumer,  # type: ignore[arg-type]
            process,
            topic=TOPIC,
            group="g",
            stop=stop,
            max_messages=count,
            stats=stats,
            schedule=RetrySchedule(100),
        )
    finally:
        timer.cancel()
    return stats, letters, registry


def sent_at(channel: FuncChannel) -> Callable[[Alert, str, str | None], Delivery]:
    """A send that fails forever for US alerts and records when each other alert got through."""
    channel.times = {}  # type: ignore[attr-defined]

    def send(alert: Alert, target: str, ref: str | None) -> Delivery:
        if alert.country == "US":
            raise DeliveryError("serverError", "HTTP 500", retryable=True)
        channel.times[alert.country] = time.monotonic()  # type: ignore[attr-defined]
        return Delivery("console", target)

    return send


def test_a_failing_alert_delays_no_other() -> None:
    """US keeps failing (retried until its deadline); DE, FR, GB behind it on the same partition flow at once."""
    channel = FuncChannel(name="console")
    channel.send_fn = sent_at(channel)
    alerts = [make_alert(country=c) for c in ("US", "DE", "FR", "GB")]
    consumer = FakeConsumer(records(*alerts))
    started = time.monotonic()
    stats, letters, _ = run_loop(consumer, channel, 4)
    delays = {c: t - started for c, t in channel.times.items()}  # type: ignore[attr-defined]
    assert set(delays) == {"DE", "FR", "GB"} and max(delays.values()) < 0.5, delays
    assert stats.outcomes == {Delivered(): 3, DeadLetter("deadline"): 1}
    assert letters.written[0][1] == DeadLetter("deadline") and letters.written[0][2] > 1
    # nothing is committed past the waiting US record until it is decided, then all of it
    assert all(offset == 0 for _, offset in consumer.commits[:-1]) and consumer.commits[-1] == (0, 4)


def test_records_of_one_key_keep_their_order_behind_a_retry() -> None:
    """The recovery of a fingerprint waits for its firing's retries: it is never sent first."""
    order: list[str] = []
    failures = [DeliveryError("serverError", "HTTP 503", retryable=True)] * 2

    def send(alert: Alert, target: str, ref: str | None) -> Delivery:
        if alert.status == "firing" and failures:
            raise failures.pop()
        order.append(alert.status)
        return Delivery("console", target)

    firing, resolved = make_alert(), make_alert(status="resolved")
    consumer = FakeConsumer(records(firing, resolved))
    stats, _, _ = run_loop(consumer, FuncChannel(send, name="console"), 2)
    assert order == ["firing", "resolved"] and stats.outcomes == {Delivered(): 2}


def test_a_stage_that_raises_parks_the_record_and_the_loop_goes_on() -> None:
    def send(alert: Alert, target: str, ref: str | None) -> Delivery:
        if alert.country == "US":
            raise ValueError("year 5138 is out of range https://hooks.example/T0KEN")
        return Delivery("console", target)

    consumer = FakeConsumer(records(make_alert(country="US"), make_alert(country="DE")))
    stats, letters, _ = run_loop(consumer, FuncChannel(send, name="console"), 2)
    assert stats.outcomes == {DeadLetter("internal"): 1, Delivered(): 1}
    [(stage, letter, _)] = letters.written
    assert stage == "deliver" and "ValueError" in letter.detail and "T0KEN" not in letter.detail


class DownLedger(MemoryLedger):
    """Redis down for the first ``down_calls`` calls, then back."""

    def __init__(self, down_calls: int) -> None:
        super().__init__(time.time)
        self.down_calls = down_calls

    def get(self, kind: Any, name: str) -> str | None:
        if self.down_calls > 0:
            self.down_calls -= 1
            raise LedgerUnavailableError("redis unavailable: ConnectionError")
        return super().get(kind, name)


def test_ledger_unavailable_backs_off_without_committing_then_delivers() -> None:
    channel = FuncChannel(name="console")
    consumer = FakeConsumer(records(make_alert()))
    stats, letters, registry = run_loop(consumer, channel, 1, ledger=DownLedger(2))
    assert stats.outcomes == {Delivered(): 1} and not letters.written and len(channel.calls) == 1
    deferred = registry.get_sample_value(
        "adwatch_notifier_deferred_total", {"channel": "console", "reason": "unavailable"}
    )
    assert deferred == 2
    assert consumer.commits == [(0, 1)]  # committed only once decided


def test_a_failed_commit_is_survived() -> None:
    consumer = FakeConsumer(records(make_alert(country="US"), make_alert(country="DE")), fail_commits=1)
    stats, _, registry = run_loop(consumer, FuncChannel(name="console"), 2)
    assert stats.outcomes == {Delivered(): 2}
    assert consumer.commits == [(0, 2)]  # the failed position is covered by the next commit
    assert registry.get_sample_value("adwatch_notifier_commit_failures_total", {"channel": "console"}) == 1


def test_schedule_watermark_and_key_queue() -> None:
    schedule = RetrySchedule(limit=2)
    a, b, c = (Envelope(b"", key, 0, offset) for key, offset in ((b"k1", 0), (b"k1", 1), (b"k2", 2)))
    assert schedule.admit(a) and not schedule.admit(b) and schedule.admit(c)
    schedule.hold(a, due=5.0)
    assert schedule.decide(c) is None and schedule.commit_position(0) == 0 and schedule.full
    assert schedule.pop_due(4.0) is None and schedule.pop_due(5.0) is a
    assert schedule.decide(a) is b and schedule.commit_position(0) == 1
    assert schedule.decide(b) is None and schedule.commit_position(0) == 3 and not schedule.full
