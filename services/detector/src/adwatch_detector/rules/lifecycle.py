"""The firing/resolved state machine of one fingerprint (segment + alert type).

Fires once; resolves after ``resolve_windows`` in-band windows with evidence of recovery; may not
fire again within ``cooldown_windows`` of a resolve. Window start times are the only clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from adwatch.contracts import AlertStatus

if TYPE_CHECKING:
    from adwatch_detector.rules.base import Check


class Lifecycle(msgspec.Struct, array_like=True):
    """One fingerprint's lifecycle plus the rule's sequential evidence (CUSUMs reset on resolve)."""

    firing: bool = False
    cusum: float = 0.0
    recovery: float = 0.0
    in_band: int = 0
    firing_windows: int = 0
    fired_ms: int = -1
    resolved_ms: int = -1


def step(
    life: Lifecycle, check: Check, window_start_ms: int, cooldown_ms: int, resolve_windows: int
) -> AlertStatus | None:
    """Move ``life`` by one window; the status of the alert to emit, if any."""
    if not life.firing:
        cooled = life.resolved_ms < 0 or window_start_ms - life.resolved_ms >= cooldown_ms
        if check.breach and cooled:
            life.firing, life.fired_ms, life.in_band, life.firing_windows = True, window_start_ms, 0, 0
            life.recovery = 0.0
            return "firing"
        return None
    life.firing_windows += 1
    life.in_band = life.in_band + 1 if check.in_band else 0
    if life.in_band >= resolve_windows and check.recovered:
        life.firing, life.resolved_ms, life.in_band, life.firing_windows = False, window_start_ms, 0, 0
        life.cusum = life.recovery = 0.0
        return "resolved"
    return None
