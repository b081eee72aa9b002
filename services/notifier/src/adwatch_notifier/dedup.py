""" "Should we send?" as pure functions returning a named reason (no Redis here).

The idempotency key of (alert_id, channel) holds one of:

- ``sent``                      delivered; never send again;
- ``claimed|<owner>|<until_ms>`` a process owns it and has no request on the wire;
- ``inflight|<owner>|<until_ms>`` a request may be on the wire right now.

``until_ms`` is the owner's lease. A key whose lease ran out belongs to a dead owner: a
``claimed`` one is taken over safely, an ``inflight`` one is *in doubt* (the provider may
have accepted it and the process died before writing ``sent``), parked unless the channel
dedups on its side (PagerDuty's ``dedup_key``) or ``RESEND_IN_DOUBT`` is set.

The cooldown key of (fingerprint, channel) holds ``<alert_id>|<until_ms>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["send", "skip", "wait", "park"]
SENT = "sent"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


@dataclass(frozen=True)
class Claim:
    phase: Literal["claimed", "inflight"]
    owner: str
    until_ms: int


def claim_value(phase: Literal["claimed", "inflight"], owner: str, until_ms: int) -> str:
    return f"{phase}|{owner}|{until_ms}"


def parse_claim(value: str) -> Claim | None:
    parts = value.split("|")
    if len(parts) != 3 or parts[0] not in ("claimed", "inflight"):
        return None
    try:
        until = int(parts[2])
    except ValueError:
        return None
    return Claim(parts[0], parts[1], until)  # type: ignore[arg-type]


def idempotency_decision(value: str | None, owner: str, now_ms: int, resend_in_doubt: bool) -> Decision:
    """Given the current key value, what this owner should do with the alert."""
    if value is None:
        return Decision("send", "new")
    if value == SENT:
        return Decision("skip", "duplicate")
    claim = parse_claim(value)
    if claim is None:
        return Decision("send", "takeover")  # garbage in our namespace: treat as stale
    if claim.owner == owner:
        return Decision("send", "own")
    if claim.until_ms > now_ms:
        return Decision("wait", "held")
    if claim.phase == "claimed":
        return Decision("send", "takeover")
    if resend_in_doubt:
        return Decision("send", "resend_in_doubt")
    return Decision("park", "in_doubt")


def cooldown_value(alert_id: str, until_ms: int) -> str:
    return f"{alert_id}|{until_ms}"


def cooldown_decision(status: str, value: str | None, alert_id: str, now_ms: int, escalated: bool = False) -> Decision:
    """Firing alerts of one fingerprint are sent at most once per cooldown; resolved ones always.

    ``escalated``: the alert is more severe than what this channel delivered for the episode: it
    re-notifies at once (and starts a new cooldown).
    """
    if status == "resolved":
        return Decision("send", "resolved")
    if value is None:
        return Decision("send", "new")
    holder, _, until = value.partition("|")
    if holder == alert_id:
        return Decision("send", "own")  # our own earlier claim (e.g. crash before sending)
    if escalated:
        return Decision("send", "escalated")
    try:
        active = int(until) > now_ms
    except ValueError:
        active = False
    return Decision("skip", "cooldown") if active else Decision("send", "expired")
