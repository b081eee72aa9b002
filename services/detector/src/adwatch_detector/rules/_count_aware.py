"""What the count-aware rules (traffic, ctr, ecpm_drop, orphans) share: thresholds and the verdict.

Per window and metric a rule computes a baseline *before* the update, a tail p-value at the
window's volume and a log-likelihood ratio; :func:`judge` turns them into a :class:`Check` from a
one-window alarm at the budget's z and a CUSUM for evidence that builds up over windows. Baselines
do not learn from anomalous windows or while their alert fires (up to ``max_freeze_windows``).
While an episode fires, the rule measures each window against the episode's anchor (its baseline
when the episode started): recovery means back to *that*, not to a baseline that learnt the shift.
With persistence (``confirm_windows`` > 1) one window's LLR is capped so that no single window
can carry the CUSUM over its threshold alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import Field, model_validator

from adwatch.contracts import AlertType, Metric, Severity, deviation_pct
from adwatch_detector.rules.base import Check, SettingsSection
from adwatch_detector.rules.lifecycle import Lifecycle, Policy
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import cusum_step, z_from_p


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The set-wide numbers every count-aware rule needs, computed once per settings."""

    z_threshold: float
    cusum_h: float
    z_resolve: float
    z_freeze: float
    warmup_windows: int
    max_freeze_windows: int
    z_extreme: float  # a one-window surprise this large (and large in size) needs no confirmation
    llr_cap: float  # one window's most CUSUM evidence (inf without persistence)

    @classmethod
    def of(cls, settings: RuleSettings, confirm_windows: int = 1) -> Thresholds:
        d = settings.default
        h = settings.cusum_h
        return cls(
            settings.z_threshold,
            h,
            d.z_resolve,
            d.z_freeze,
            d.warmup_windows,
            d.max_freeze_windows,
            settings.z_threshold + d.extreme_z_margin,
            h / (confirm_windows - 0.5) if confirm_windows > 1 else math.inf,
        )


class Persistence(SettingsSection):
    """Per rule: how many breaching windows of the last few confirm an alert (a size-extreme
    one-window surprise fires at once)."""

    confirm_windows: int = Field(default=1, ge=1, le=16, description="breaching windows that confirm an alert...")
    confirm_of: int = Field(default=1, ge=1, le=16, description="...among the last this many")
    equivalence_margin: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="this rule's recovery margin (None: the set's)"
    )

    @model_validator(mode="after")
    def _k_of_n(self) -> Persistence:
        if self.confirm_windows > self.confirm_of:
            raise ValueError(f"confirm_windows ({self.confirm_windows}) > confirm_of ({self.confirm_of})")
        return self


def policy(settings: RuleSettings, own: Persistence) -> Policy:
    """The lifecycle policy of a count-aware rule: the set's resolve/new-normal, the rule's persistence."""
    d = settings.default
    margin = d.equivalence_margin if own.equivalence_margin is None else own.equivalence_margin
    return Policy(
        resolve_windows=settings.resolve_windows,
        cooldown_ms=d.cooldown_windows * settings.window_ms,
        confirm_windows=own.confirm_windows,
        confirm_of=own.confirm_of,
        new_normal_windows=d.new_normal_windows,
        equivalence_margin=margin,
        pool_evidence=(d.z_resolve / margin) ** 2 if margin > 0 else 0.0,
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


def advance(life: Lifecycle, llr: float, warm: bool, t: Thresholds, baseline: float = -1.0) -> None:
    """The CUSUM for the shift, while not firing (one window adds at most ``t.llr_cap``), and the
    baseline when it last started to build up: a sparse segment's CUSUM takes many windows, in
    which the baseline learns part of the shift; the episode is anchored before them."""
    if not warm or life.firing:
        life.cusum = 0.0
        return
    if life.cusum <= 0.0:
        life.onset = baseline
    life.cusum = cusum_step(life.cusum, min(llr, t.llr_cap))


def anchored(life: Lifecycle, baseline: float) -> float:
    """The baseline a window is measured against: the episode's anchor while it fires, else the rule's."""
    anchor = life.anchor  # -1 unless an episode fires
    return anchor if anchor >= 0.0 else baseline


def judge(
    reading: Reading,
    life: Lifecycle,
    z: float,
    p: float,
    gate: bool,
    practical: bool,
    t: Thresholds,
    extreme_size: bool = False,
    baseline: float = -1.0,
    evidence: float = math.inf,
) -> Check:
    """Turn the window's z and the CUSUM into a Check (breach / in band / extreme).

    ``gate``: the window has the volume to carry a one-window alarm; ``practical``: the change is
    big enough to matter (never page on a statistically sure but tiny shift); ``extreme_size``: the
    change is large enough that, at ``t.z_extreme``, it needs no confirming window; ``baseline``:
    the rule's baseline parameter (the episode's anchor if it fires now).
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
        recovered=True,  # the lifecycle's equivalence test decides (lifecycle.py)
        severity=severity(z, life.cusum, dev, t),
        extreme=breach and gate and extreme_size and z >= t.z_extreme,
        baseline=life.onset if seq and life.onset >= 0.0 and not life.firing else baseline,
        evidence=evidence,
    )


def frozen(lives: Iterable[Lifecycle], anomalous: bool, run: int, warm: bool, t: Thresholds) -> bool:
    """Hold the baseline still while a window looks anomalous or an alert fires, but never while
    warming up: a young baseline is not yet to be trusted, so it must keep learning."""
    return warm and (anomalous or any(life.firing for life in lives)) and run < t.max_freeze_windows
