"""The run loop's one place for outcomes: claims released, dead letters written, metrics recorded.

Stages here are plain functions or the real ones on an in-memory ledger; metrics live on a fresh registry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from adwatch.contracts import encode
from adwatch_notifier.dedup import SENT
from adwatch_notifier.delivery import DeliveryError
from adwatch_notifier.loop import RecordProcessor, failure_counter, run_chain
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
