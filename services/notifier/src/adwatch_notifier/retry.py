"""Retry policy as pure arithmetic: exponential backoff with jitter, bounded by a deadline; what a failure becomes."""

from __future__ import annotations

from dataclasses import dataclass

from adwatch_notifier.delivery import DeliveryError
from adwatch_notifier.outcomes import DeadLetter, Defer


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: first backoff, its cap, and the overall deadline per alert."""

    initial_s: float = 1.0
    max_s: float = 60.0
    deadline_s: float = 300.0
    multiplier: float = 2.0


def backoff_delay(policy: RetryPolicy, attempt: int, rand: float) -> float:
    """Delay after failed attempt ``attempt`` (1-based): "equal jitter" in [d/2, d].

    ``rand`` in [0, 1) comes from the caller so the function stays deterministic in tests.
    """
    ceiling = min(policy.max_s, policy.initial_s * policy.multiplier ** max(0, attempt - 1))
    return ceiling / 2 + ceiling / 2 * rand


def next_delay(
    policy: RetryPolicy, attempt: int, elapsed_s: float, rand: float, retry_after: float | None = None
) -> float | None:
    """Seconds to wait before the next attempt, or None when the deadline forbids one.

    A provider's ``Retry-After`` wins over our own backoff when it asks for longer.
    """
    delay = backoff_delay(policy, attempt, rand)
    if retry_after is not None:
        delay = max(delay, retry_after)
    if elapsed_s + delay > policy.deadline_s:
        return None
    return delay


def after_failure(
    policy: RetryPolicy, err: DeliveryError, attempts: int, elapsed_s: float, rand: float
) -> DeadLetter | Defer:
    """What a failed send becomes, for single alerts and group notifications alike.

    Permanent: dead letter at once; retryable: a :class:`Defer` for the backoff (Retry-After
    honoured), or a dead letter once the deadline forbids another attempt.
    """
    if not err.retryable:
        return DeadLetter("permanent", f"permanent {err}")
    delay = next_delay(policy, attempts, elapsed_s, rand, err.retry_after)
    if delay is None:
        return DeadLetter("deadline", f"deadline exceeded after {attempts} attempts: {err}")
    return Defer(delay, "retry", str(err))
