"""Tiny fakes for stage and loop unit tests: no broker, no Redis, no sleeping.

- :class:`MemoryLedger` implements the :class:`~adwatch_notifier.ledger.Ledger` protocol on a dict,
  with expiry on a :class:`FakeClock`.
- :class:`FuncChannel` is a channel built from a plain function (Alertmanager's ``notifierFunc``).
- :class:`FakeClock` is ``now``, ``monotonic`` and ``wait`` at once: waiting advances it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from adwatch.contracts import Alert
from adwatch_notifier.delivery import Delivery, DeliveryError
from adwatch_notifier.formatting import Thread
from adwatch_notifier.ledger import KeyKind
from adwatch_notifier.outcomes import DeadLetter, Defer, StageId, StageResult, Stop
from adwatch_notifier.stages import Envelope, Stage

T0_S = 2_000_000_000.0


@dataclass
class FakeClock:
    """Seconds. ``wait(s)`` advances time by ``s`` and returns ``stop_after_waits`` exhaustion."""

    s: float = T0_S
    waits: list[float] = field(default_factory=list)
    stop_after_waits: int | None = None

    def __call__(self) -> float:
        return self.s

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.s += seconds
        return self.stop_after_waits is not None and len(self.waits) >= self.stop_after_waits


class MemoryLedger:
    """The ledger protocol on a dict: ``(kind, name) -> (value, expires_at_s)``."""

    def __init__(self, clock: Callable[[], float] = lambda: T0_S) -> None:
        self.clock = clock
        self.data: dict[tuple[str, str], tuple[str, float]] = {}

    def get(self, kind: KeyKind, name: str) -> str | None:
        item = self.data.get((kind, name))
        if item is None or item[1] <= self.clock():
            return None
        return item[0]

    def swap(self, kind: KeyKind, name: str, expected: str | None, value: str, ttl_s: int) -> bool:
        if self.get(kind, name) != expected:
            return False
        self.put(kind, name, value, ttl_s)
        return True

    def delete_if(self, kind: KeyKind, name: str, expected: str) -> bool:
        if self.get(kind, name) != expected:
            return False
        self.delete(kind, name)
        return True

    def put(self, kind: KeyKind, name: str, value: str, ttl_s: int) -> None:
        self.data[(kind, name)] = (value, self.clock() + max(1, ttl_s))

    def delete(self, kind: KeyKind, name: str) -> None:
        self.data.pop((kind, name), None)

    def acquire_slot(self, target: str, interval_ms: int) -> float:
        if interval_ms <= 0:
            return 0.0
        key, now = ("rate", target), self.clock()
        held = self.data.get(key)
        if held is not None and held[1] > now:
            return held[1] - now
        self.data[key] = ("1", now + interval_ms / 1000)
        return 0.0

    def value(self, kind: KeyKind, name: str) -> str | None:
        """For assertions: what the key holds now."""
        return self.get(kind, name)


Send = Callable[[Alert, str, str | None], Delivery]


@dataclass
class FuncChannel:
    """A channel whose ``send`` is a plain function; records every call."""

    send_fn: Send = lambda alert, target, ref: Delivery("func", target)
    name: str = "func"
    min_interval_ms: int = 0
    provider_dedup: bool = False
    default_target: str = "default-target"
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)

    rendered: list[Alert] = field(default_factory=list)
    threads: list[Thread | None] = field(default_factory=list)  # the ``thread`` of each render, in order

    def render(self, alert: Alert, target: str, thread: Thread | None = None) -> object:
        self.rendered.append(alert)
        self.threads.append(thread)
        return {"alert": alert.alert_id, "severity": alert.severity}

    def send(self, alert: Alert, target: str, ref: str | None = None, payload: object = None) -> Delivery:
        self.calls.append((alert.alert_id, target, ref))
        return self.send_fn(alert, target, ref)

    def close(self) -> None:
        return None


def failing(*errors: DeliveryError, then: Delivery | None = None) -> Send:
    """A send function raising ``errors`` in turn, then returning ``then`` (or raising the last forever)."""
    queue = list(errors)

    def send(alert: Alert, target: str, ref: str | None) -> Delivery:
        if queue:
            raise queue.pop(0)
        if then is None:
            raise errors[-1]
        return then

    return send


@dataclass
class ListDeadLetters:
    """The dead-letter sink as a list."""

    written: list[tuple[StageId, DeadLetter, int]] = field(default_factory=list)
    fail: bool = False

    def write(self, env: Envelope, stage: StageId, letter: DeadLetter, channel: str) -> None:
        if self.fail:
            raise RuntimeError("dead letter not acknowledged")
        self.written.append((stage, letter, env.attempts))


def drive(stage: Stage, env: Envelope, clock: FakeClock) -> StageResult:
    """Call ``stage`` as the run loop does: on :class:`Defer`, let the delay pass on ``clock`` and call again."""
    while True:
        result = stage(env)
        if not isinstance(result, Defer):
            return result
        if clock.wait(result.delay_s):
            return Stop()
