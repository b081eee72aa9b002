"""What a stage says about a record, as data: continue, suppressed, dead letter or stop.

A stage never writes metrics, dead letters or offsets itself; it returns one of these and
the run loop (:mod:`adwatch_notifier.loop`) acts on it in one place. Reasons are closed
sets (``Literal``), so a dashboard label or a test can never drift from the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

StageId = Literal[
    "decode", "lifecycle", "inhibit", "silence", "group", "route", "render", "dedup", "deliver", "mark_sent"
]
"""Stable stage ids: the ``stage`` of log lines, dead-letter records and spans."""

SuppressReason = Literal[
    "unrouted",
    "duplicate",
    "cooldown",
    "never_notified",
    "stale",
    "too_old",
    "other_channel",
    "inhibited",
    "silenced",
    "maintenance",
]
"""Skipped on purpose: not for this channel, already sent, inside the fingerprint's cooldown, a
recovery of a firing this channel never delivered, a firing older than its fingerprint's last
recovery, a firing older than ``MAX_ALERT_AGE_SECONDS``, a replay meant for another channel,
muted by a firing source alert (inhibition rule), by a silence, by a maintenance window."""

DeadLetterReason = Literal["contract", "in_doubt", "permanent", "deadline", "render", "internal"]
"""Parked in the DLQ: undecodable, maybe sent by a dead owner, refused by the provider, out of
time, no payload could be built from it, or a stage raised an unexpected exception."""

DeferReason = Literal["retry", "rate_limit", "held_by_replica", "unavailable", "inhibit_wait"]
"""Why a record waits: a retryable failure, the provider's rate limit, another live replica's
claim, a dependency (Redis, the DLQ) that does not answer, or an inhibition target's short
wait for its source (``INHIBIT_WAIT_SECONDS``)."""


@dataclass(frozen=True)
class Continue:
    """Pass the record on to the next stage."""

    kind: ClassVar[str] = "continue"


@dataclass(frozen=True)
class Delivered:
    """Every stage passed: the provider accepted the alert and it is marked sent."""

    kind: ClassVar[str] = "delivered"

    @property
    def label(self) -> str:
        return self.kind


@dataclass(frozen=True)
class Suppressed:
    """Not sent on purpose; the offset is committed."""

    reason: SuppressReason
    kind: ClassVar[str] = "suppressed"

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.reason}"


@dataclass(frozen=True)
class Grouped:
    """Held in its group's buffer (:mod:`adwatch_notifier.grouping`): the group's notification lists it; committed."""

    kind: ClassVar[str] = "grouped"

    @property
    def label(self) -> str:
        return self.kind


@dataclass(frozen=True)
class DeadLetter:
    """Park the original record in the DLQ, then commit.

    ``detail`` is the human text of the dead-letter record (never a secret); it is not part
    of the outcome's identity, so ``DeadLetter("permanent")`` matches any permanent failure.
    """

    reason: DeadLetterReason
    detail: str = field(default="", compare=False)
    kind: ClassVar[str] = "dead_lettered"

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.reason}"


@dataclass(frozen=True)
class Defer:
    """Try this record again in ``delay_s`` from the stage that said so; meanwhile others flow.

    The run loop holds the record in its retry schedule (outside the poll thread's path): later
    records of the same key wait behind it, the offset stays uncommitted until it is decided.
    """

    delay_s: float
    reason: DeferReason
    detail: str = field(default="", compare=False)
    kind: ClassVar[str] = "deferred"

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.reason}"


@dataclass(frozen=True)
class Stop:
    """Shutting down mid-record: leave the offset uncommitted so the record is redelivered."""

    kind: ClassVar[str] = "stopped"

    @property
    def label(self) -> str:
        return self.kind


StageResult = Continue | Suppressed | Grouped | DeadLetter | Defer | Stop
"""What one stage returns."""

Outcome = Delivered | Suppressed | Grouped | DeadLetter | Defer | Stop
"""What the chain returns for one record."""
