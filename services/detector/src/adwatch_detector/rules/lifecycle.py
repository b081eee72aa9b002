"""The firing/resolved state machine of one fingerprint (segment + alert type): one episode at a time.

- **Fires** on a confirmed breach: an extreme one-window surprise, or ``confirm_windows`` breaching
  windows among the last ``confirm_of`` (a one-minute burst that returns at once never pages).
- **Escalates**: a firing episode whose windows breach at a higher severity re-emits ``firing``
  with the severity it had (``previous_severity``).
- **Resolves** honestly: after ``resolve_windows`` windows in a row inside the band of the baseline
  frozen when the episode started (the rule compares against ``anchor``), whose pooled value is
  within the equivalence margin of it once they carry enough evidence to say so (a sparse segment
  pools more windows) -- not when the evidence for the shift fades; or, after
  ``new_normal_windows`` firing windows, by accepting the level as the new normal.
- A resolved alert carries the episode's **peak** severity, its duration and how it ended.

Window start times are the only clock; may not fire again within ``cooldown_ms`` of a resolve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from adwatch.contracts import SEVERITIES, AlertStatus, Resolution, Severity

if TYPE_CHECKING:
    from adwatch_detector.rules.base import Check

_RANK = {s: i for i, s in enumerate(SEVERITIES)}


class Episode(msgspec.Struct, array_like=True):
    """What a firing episode remembers (absent while quiet: a quiet lifecycle stays a few bytes)."""

    anchor: float = -1.0
    """The rule's baseline when the episode started (< 0: none); the rule tests recovery against it."""
    severity: int = 0  # rank of the severity last emitted
    peak: int = 0  # rank of the episode's highest severity
    band_current: float = 0.0  # sums of current and anchored expected over the in-band run...
    band_expected: float = 0.0
    band_evidence: float = 0.0  # ...and of the expected counts behind them

    def pool(self, check: Check | None, keep: float = 0.0) -> None:
        """Add ``check``'s window to the in-band pool, older windows weighing ``keep`` per window
        (a sliding pool of about max_pool_windows: the episode's own windows fade out); None: empty it."""
        if check is None:
            self.band_current = self.band_expected = self.band_evidence = 0.0
            return
        self.band_current = keep * self.band_current + check.current
        self.band_expected = keep * self.band_expected + check.expected
        self.band_evidence = keep * self.band_evidence + check.evidence


class Lifecycle(msgspec.Struct, array_like=True):
    """One fingerprint's lifecycle plus the rule's sequential evidence (CUSUMs reset on resolve).

    Fields after ``resolved_ms`` were added later: state written before them decodes with the defaults.
    """

    firing: bool = False
    cusum: float = 0.0
    recovery: float = 0.0  # unused since the equivalence test (kept: the position is in checkpoints)
    in_band: int = 0
    firing_windows: int = 0
    fired_ms: int = -1
    resolved_ms: int = -1
    recent: int = 0  # bit i: the window i windows ago breached (persistence)
    episode: Episode | None = None  # while firing
    onset: float = -1.0  # the rule's baseline when the CUSUM last started from zero

    @property
    def anchor(self) -> float:
        return self.episode.anchor if self.firing and self.episode is not None else -1.0


@dataclass(frozen=True, slots=True)
class Policy:
    """How a rule's alerts fire and resolve (from the rule set's and the rule's settings)."""

    resolve_windows: int = 3
    cooldown_ms: int = 0
    confirm_windows: int = 1
    confirm_of: int = 1
    new_normal_windows: int = 0  # 0: never accept a shift as the new normal
    equivalence_margin: float = 0.0  # 0: no pooled-ratio condition on resolving
    pool_evidence: float = 100.0  # expected counts a pooled ratio needs ((z / margin)^2: z 2, margin 0.2)...
    max_pool_windows: int = 30  # ...or this many windows of it (a sparse segment)


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert to emit: its status, severity and (resolved) how and after how long the episode ended."""

    status: AlertStatus
    severity: Severity
    previous_severity: Severity | None = None
    resolution: Resolution | None = None
    duration_ms: int = 0
    anchor: float = -1.0  # a resolve: the episode's anchor (the rule's baseline it was measured against)


def step(life: Lifecycle, check: Check, window_start_ms: int, policy: Policy) -> Transition | None:
    """Move ``life`` by one window; the alert to emit, if any."""
    life.recent = ((life.recent << 1) | int(check.breach)) & ((1 << policy.confirm_of) - 1)
    rank = _RANK[check.severity]
    if not life.firing:
        cooled = life.resolved_ms < 0 or window_start_ms - life.resolved_ms >= policy.cooldown_ms
        confirmed = check.extreme or life.recent.bit_count() >= policy.confirm_windows
        if check.breach and confirmed and cooled:
            life.firing, life.fired_ms, life.firing_windows, life.in_band = True, window_start_ms, 0, 0
            life.recovery = 0.0
            life.episode = Episode(anchor=check.baseline, severity=rank, peak=rank)
            return Transition("firing", check.severity)
        return None
    episode = life.episode if life.episode is not None else Episode()  # firing state from before episodes
    life.episode = episode
    life.firing_windows += 1
    if check.in_band and check.recovered:
        life.in_band += 1
        episode.pool(check, 1.0 - 1.0 / policy.max_pool_windows)
        if life.in_band >= policy.resolve_windows and _equivalent(life.in_band, episode, policy):
            return _resolve(life, episode, window_start_ms, "recovered")
    else:
        life.in_band = 0
        episode.pool(None)
    if policy.new_normal_windows and life.firing_windows >= policy.new_normal_windows:
        return _resolve(life, episode, window_start_ms, "new_normal")
    if check.breach and rank > episode.severity:
        previous = SEVERITIES[episode.severity]
        episode.severity, episode.peak = rank, max(episode.peak, rank)
        return Transition("firing", check.severity, previous_severity=previous)
    return None


def _equivalent(windows: int, episode: Episode, policy: Policy) -> bool:
    """Whether the in-band pool is within the margin of the anchored expectation (both ways), once
    it carries the evidence to say so (or max_pool_windows of it: a sparse segment). Rules whose
    windows carry unbounded evidence (a rare-event count judged by its excess) need no pool."""
    margin = policy.equivalence_margin
    if margin <= 0.0 or episode.band_evidence == math.inf:
        return True
    if episode.band_evidence < policy.pool_evidence and windows < policy.max_pool_windows:
        return False
    if episode.band_expected <= 0.0:
        return episode.band_current <= 0.0
    ratio = episode.band_current / episode.band_expected
    return 1.0 / (1.0 + margin) <= ratio <= 1.0 + margin


def _resolve(life: Lifecycle, episode: Episode, window_start_ms: int, resolution: Resolution) -> Transition:
    duration = max(0, window_start_ms - life.fired_ms)
    life.firing, life.resolved_ms, life.in_band, life.firing_windows = False, window_start_ms, 0, 0
    life.cusum = life.recovery = 0.0
    life.recent, life.episode = 0, None
    return Transition(
        "resolved", SEVERITIES[episode.peak], resolution=resolution, duration_ms=duration, anchor=episode.anchor
    )
