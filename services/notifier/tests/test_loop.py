"""The run loop's one place for outcomes: claims released, dead letters written, metrics recorded.

Stages here are plain functions or the real ones on an in-memory ledger; metrics live on a fresh registry.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from adwatch.contracts import Alert, encode
from adwatch.service import Heartbeat
from adwatch_notifier.dedup import SENT
from adwatch_notifier.delivery import Delivery, DeliveryError
from adwatch_notifier.loop import RecordProcessor, RunStats, consume, failure_counter, run_chain
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.outcomes import (
    Continue,
    DeadLetter,
    Defer,
    Delivered,
    Outcome,
    StageId,
    StageResult,
    Stop,
    Suppressed,
)
from adwatch_notifier.routing import load_routes
from adwatch_notifier.settings import NotifierSettings
from adwatch_notifier.stages import Envelope, Lease, Stage, build_stages

from .conftest import make_alert
from .fakes import FakeClock, FuncChannel, ListDeadLetters, MemoryLedger, failing

ALERT = make_alert()


class FuncStage:
    """A stage from a function (Alertmanager's ``StageFunc``)."""

    def __init__(self, stage_id: StageId, fn: Callable[[Envelope], StageResult]) -> None:
        self.id, self.fn = stage_id, fn

    def __call__(self, env: Envelope) -> StageResult:
        return self.fn(env)


def claims(env: Envelope) -> StageResult:
    """What dedup leaves behind: both claims held."""
    env.alert, env.idem_held, env.cooldown_held = ALERT, "claimed|me|9", "a|9"
    return Continue()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"adwatch_notifier_{name}", {"channel": "func", **labels}) or 0.0


@pytest.mark.parametrize(
    ("last", "outcome", "stage", "metric", "labels"),
    [
        pytest.param(Continue(), Delivered(), None, "notifications_total", {"outcome": "delivered"}, id="delivered"),
        pytest.param(
            Suppressed("cooldown"),
            Suppressed("cooldown"),
            "deliver",
            "suppressed_total",
            {"reason": "cooldown"},
            id="suppressed",
        ),
        pytest.param(
            DeadLetter("permanent", "permanent clientError: HTTP 400"),
            DeadLetter("permanent"),
            "deliver",
            "dead_letters_total",
            {"reason": "permanent"},
            id="dead-letter",
        ),
        pytest.param(Stop(), Stop(), "deliver", None, {}, id="stop"),
    ],
)
def test_outcome_is_acted_on_in_one_place(
    last: StageResult, outcome: Outcome, stage: StageId | None, metric: str | None, labels: dict[str, str]
) -> None:
    registry, ledger, letters = CollectorRegistry(), MemoryLedger(), ListDeadLetters()
    ledger.put("idem", ALERT.alert_id, "claimed|me|9", 60)
    ledger.put("cooldown", ALERT.fingerprint, "a|9", 60)

    def deliver(env: Envelope) -> StageResult:
        env.attempts = 2
        return last

    chain: list[Stage] = [FuncStage("dedup", claims), FuncStage("deliver", deliver)]
    process = RecordProcessor(chain, "func", ledger, letters, NotifierMetrics(registry))
    env = Envelope(encode(ALERT))
    assert process(env) == outcome
    assert run_chain(chain, Envelope(b""))[1] == stage
    released = not isinstance(outcome, Delivered)
    assert (ledger.value("idem", ALERT.alert_id) is None) is released
    assert (ledger.value("cooldown", ALERT.fingerprint) is None) is released
    assert letters.written == ([("deliver", outcome, 2)] if isinstance(outcome, DeadLetter) else [])
    if metric:
        assert sample(registry, metric, **labels) == 1
        assert sample(registry, "notifications_total", outcome=outcome.kind) == 1
    else:
        assert sample(registry, "notifications_total", outcome="stopped") == 0


def test_unacknowledged_dead_letter_stops_before_metrics_and_commit() -> None:
    registry = CollectorRegistry()
    chain: list[Stage] = [FuncStage("decode", lambda env: DeadLetter("contract", "ContractError: x"))]
    letters = ListDeadLetters(fail=True)
    process = RecordProcessor(chain, "func", MemoryLedger(), letters, NotifierMetrics(registry))
    env = Envelope(b"x")
    outcome = process(env)  # not a crash: the record waits (uncommitted) and the write is tried again
    assert isinstance(outcome, Defer) and outcome.reason == "unavailable"
    assert sample(registry, "dead_letters_total", reason="contract") == 0
    letters.fail = False
    assert process(env) == DeadLetter("contract")  # the decision is kept; only the write is redone
    assert sample(registry, "dead_letters_total", reason="contract") == 1 and len(letters.written) == 1


def test_failed_attempts_are_counted_as_they_happen() -> None:
    registry = CollectorRegistry()
    count = failure_counter(NotifierMetrics(registry), "func")
    count(DeliveryError("rateLimited", "HTTP 429", retryable=True))
    count(DeliveryError("rateLimited", "HTTP 429", retryable=True))
    assert sample(registry, "failures_total", reason="rateLimited") == 2


def chain_for(ledger: MemoryLedger, channel: FuncChannel, clock: FakeClock, **settings: object) -> RecordProcessor:
    """The real chain (``build_stages``) on the in-memory ledger."""
    values: dict[str, object] = {
        "channel": "console",
        "retry_initial_seconds": 0.01,
        "max_alert_age_seconds": 0,
        **settings,
    }
    stages = build_stages(
        NotifierSettings(**values),  # type: ignore[arg-type]
        channel,
        load_routes(),
        ledger,
        Lease("me", 30),
        threading.Event(),
        now=clock,
    )
    return RecordProcessor(stages, channel.name, ledger, ListDeadLetters(), NotifierMetrics(CollectorRegistry()))


def test_redelivered_record_is_not_sent_twice() -> None:
    """Crash after send, before commit: the replay finds the key ``sent`` (the in-memory twin of the broker test)."""
    clock = FakeClock()
    ledger, channel = MemoryLedger(clock), FuncChannel(name="console")
    process = chain_for(ledger, channel, clock)
    assert process(Envelope(encode(ALERT))) == Delivered()
    assert process(Envelope(encode(ALERT))) == Suppressed("duplicate")
    assert len(channel.calls) == 1 and ledger.value("idem", ALERT.alert_id) == SENT


def test_cooldown_then_recovery_through_the_chain() -> None:
    clock = FakeClock()
    ledger, channel = MemoryLedger(clock), FuncChannel(name="console")
    process = chain_for(ledger, channel, clock, cooldown_seconds=600)
    repeat = make_alert(window_start_ms=ALERT.window_start_ms + 60_000)
    outcomes = [process(Envelope(encode(a))) for a in (ALERT, repeat, make_alert(status="resolved"), repeat)]
    assert outcomes == [Delivered(), Suppressed("cooldown"), Delivered(), Delivered()]
    assert ledger.value("idem", repeat.alert_id) == SENT  # the recovery cleared the cooldown


def test_permanent_failure_through_the_chain_releases_the_claim() -> None:
    clock = FakeClock()
    ledger = MemoryLedger(clock)
    refused = DeliveryError("clientError", "HTTP 400", retryable=False)
    process = chain_for(ledger, FuncChannel(failing(refused), name="console"), clock)
    assert process(Envelope(encode(ALERT))) == DeadLetter("permanent")
    assert ledger.value("idem", ALERT.alert_id) is None  # a replay of the parked record may send it
    letters = process.dead_letters
    assert isinstance(letters, ListDeadLetters) and letters.written[0][:1] == ("deliver",)


class FakeMessage:
    def __init__(self, value: bytes, key: bytes, partition: int, offset: int) -> None:
        self._value, self._key, self._partition, self._offset = value, key, partition, offset

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def headers(self) -> None:
        return None


class FakeConsumer:
    """The consumer side of ``consume`` on a fake clock: ``poll`` waits by advancing the clock."""

    def __init__(self, clock: FakeClock, arrivals: list[tuple[float, int, Alert]]) -> None:
        self.clock, self.offsets = clock, {0: 0, 1: 0, 2: 0}
        self.pending = sorted(arrivals, key=lambda a: a[0])
        self.polls: list[float] = []
        self.commits: list[tuple[float, int, int]] = []  # (when, partition, position)

    def subscribe(self, topics: list[str], on_revoke: object = None) -> None:
        return None

    def poll(self, timeout: float) -> FakeMessage | None:
        self.polls.append(self.clock())
        if self.pending and self.pending[0][0] <= self.clock():
            _, partition, alert = self.pending.pop(0)
            offset, self.offsets[partition] = self.offsets[partition], self.offsets[partition] + 1
            return FakeMessage(encode(alert), alert.fingerprint.encode(), partition, offset)
        self.clock.s += timeout
        return None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits += [(self.clock(), tp.partition, tp.offset) for tp in offsets]

    def assignment(self) -> list[TopicPartition]:
        return []

    def pause(self, partitions: list[TopicPartition]) -> None:
        raise AssertionError("never paused: far fewer records than MAX_HELD_RECORDS")

    def resume(self, partitions: list[TopicPartition]) -> None:
        return None

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return 0, self.offsets[tp.partition]


def test_ten_minutes_of_500s_for_one_alert_while_others_flow_past_max_poll_interval() -> None:
    """Slack answers 500 for one alert for 10 minutes (twice librdkafka's max.poll.interval.ms): the loop keeps
    polling, every other alert is delivered within a second and committed, the failing one is dead-lettered at its
    600 s deadline, and then its partition's commits catch up."""
    clock = FakeClock()
    start = clock()
    sent_at: dict[str, float] = {}

    def send(alert: Alert, target: str, ref: str | None) -> Delivery:
        if alert.country == "US":
            raise DeliveryError("serverError", "HTTP 500 internal_error", retryable=True)
        sent_at[alert.alert_id] = clock()
        return Delivery("console", target)

    ledger, channel = MemoryLedger(clock), FuncChannel(send, name="console")
    settings = NotifierSettings(
        channel="console",
        max_alert_age_seconds=0,
        cooldown_seconds=0,
        retry_initial_seconds=1,
        retry_max_seconds=60,
        retry_deadline_seconds=600,
    )
    stages = build_stages(
        settings, channel, load_routes(), ledger, Lease("me", 30), threading.Event(), now=clock, monotonic=clock
    )
    letters = ListDeadLetters()
    process = RecordProcessor(
        stages, "console", ledger, letters, NotifierMetrics(CollectorRegistry()), wall_clock=clock, monotonic=clock
    )
    failing_alert = make_alert(country="US")
    countries = [a + b for a in "ABCDEFGH" for b in "IJKLMNOP"]  # 64 other segments, one every 10 s
    others = [(start + 5 + 10 * i, i % 3, make_alert(country=c)) for i, c in enumerate(countries[:64])]
    consumer = FakeConsumer(clock, [(start, 0, failing_alert), *others])
    stop, stats = threading.Event(), RunStats()
    end = start + 660
    beats: list[float] = []

    class RecordedHeartbeat(Heartbeat):
        def beat(self) -> None:
            beats.append(clock())
            super().beat()

    heartbeat = RecordedHeartbeat(clock=clock)
    consume(
        consumer,  # type: ignore[arg-type]
        process,
        topic="alerts",
        group="notifier-console",
        stop=stop,
        max_messages=None,
        stats=stats,
        monotonic=clock,
        tick=lambda: stop.set() if clock() >= end else None,
        heartbeat=heartbeat,
    )
    # the loop never stopped polling: far below max.poll.interval.ms (300 s)
    assert max(b - a for a, b in itertools.pairwise(consumer.polls)) <= 1.0
    # and /healthz saw it turn the whole time: a failing provider is no reason to restart the pod
    assert max(b - a for a, b in itertools.pairwise(beats)) <= 1.0 and heartbeat.stale(120, "loop") is None
    # every other alert was delivered within a second of its arrival, while the failing one was retried
    assert len(sent_at) == 64
    arrival = {a.alert_id: t for t, _, a in others}
    assert max(sent_at[i] - arrival[i] for i in sent_at) <= 1.0
    # one dead letter, at the deadline, after retries with backoff
    [(stage, letter, attempts)] = letters.written
    assert (stage, letter.reason) == ("deliver", "deadline") and 10 <= attempts <= 30
    assert stats.outcomes == {Delivered(): 64, DeadLetter("deadline"): 1}
    # commits went on for the other partitions the whole time; partition 0 waited for the failing record only
    for partition in (1, 2):
        times = [t - start for t, p, _ in consumer.commits if p == partition]
        assert len(times) == len([o for o in others if o[1] == partition])
        assert max(b - a for a, b in itertools.pairwise(times)) <= 31
    zero = [(t - start, pos) for t, p, pos in consumer.commits if p == 0]
    moved = [t for t, pos in zero if pos > 0]  # past the failing record (offset 0)
    assert moved and 540 <= moved[0] <= 601  # only once it was dead-lettered, near its deadline
    assert zero[-1][1] == consumer.offsets[0]  # then caught up to the end
