"""What the count-aware rules (traffic_spike, ctr, ecpm_drop) share: thresholds and the verdict.

Per window and metric a rule computes a baseline *before* the update, a tail p-value at the
window's volume and a log-likelihood ratio; :func:`judge` turns them into a :class:`Check` from a
one-window alarm at the budget's z and a CUSUM for evidence that builds up over windows. Baselines
do not learn from anomalous windows or while their alert fires (up to ``max_freeze_windows``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from adwatch.contracts import AlertType, Metric, Severity, deviation_pct
from adwatch_detector.rules.base import Check
from adwatch_detector.rules.lifecycle import Lifecycle
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import cusum_step, z_from_p


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The set-wide numbers every count-aware rule needs, computed once per settings."""

    z_threshold: float
    cusum_h: float
    z_resolve: float
    z_freeze: float
    resolve_evidence: float
    warmup_windows: int
    max_freeze_windows: int

    @classmethod
    def of(cls, settings: RuleSettings) -> Thresholds:
        d = settings.default
        return cls(
            settings.z_threshold,
            settings.cusum_h,
            d.z_resolve,
            d.z_freeze,
            d.resolve_evidence,
            d.warmup_windows,
            d.max_freeze_windows,
        )


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1 us per object, per window
class Reading:
    """What a rule measured on a window for one alert type, before the verdict."""

    alert_type: AlertType
    metric: Metric
    current: float
    expected: float
    band_low: float
    band_high: float
    volume: int


def severity(z: float, cusum: float, dev_pct: float, t: Thresholds) -> Severity:
    strong = z >= t.z_threshold + 2.0 or cusum >= 2.0 * t.cusum_h
    size = abs(dev_pct)
    if size >= 50.0 and strong:
        return "high"
    if size >= 25.0:
        return "medium"
    return "low"


def advance(life: Lifecycle, llr: float, warm: bool) -> None:
    """CUSUM for the shift and a reverse CUSUM (evidence of recovery) used while firing."""
    life.cusum = cusum_step(life.cusum, llr) if warm and not life.firing else 0.0
    life.recovery = cusum_step(life.recovery, -llr) if life.firing else 0.0


def judge(reading: Reading, life: Lifecycle, z: float, p: float, gate: bool, practical: bool, t: Thresholds) -> Check:
    """Turn the window's z and the CUSUM into a Check (breach / in band / recovered).

    ``gate``: the window has the volume to carry a one-window alarm; ``practical``: the change is
    big enough to matter (never page on a statistically sure but tiny shift).
    """
    seq = life.cusum >= t.cusum_h
    breach = practical and ((gate and z >= t.z_threshold) or seq)
    p_report = min(p, math.exp(-life.cusum)) if seq else p  # Ville: P(sup LR >= 1/a) <= a
    dev = deviation_pct(float(reading.current), float(reading.expected))
    return Check(
        alert_type=reading.alert_type,
        metric=reading.metric,
        current=float(reading.current),
        expected=float(reading.expected),
        band_low=float(reading.band_low),
        band_high=float(reading.band_high),
        volume=int(reading.volume),
        p_value=p_report,
        z_score=z_from_p(p_report),
        breach=breach,
        in_band=z < t.z_resolve,
        recovered=life.recovery >= t.resolve_evidence,
        severity=severity(z, life.cusum, dev, t),
    )


def frozen(lives: Iterable[Lifecycle], anomalous: bool, run: int, warm: bool, t: Thresholds) -> bool:
    """Hold the baseline still while a window looks anomalous or an alert fires, but never while
    warming up: a young baseline is not yet to be trusted, so it must keep learning."""
    return warm and (anomalous or any(life.firing for life in lives)) and run < t.max_freeze_windows
