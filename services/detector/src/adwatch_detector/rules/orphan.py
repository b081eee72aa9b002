"""``click_without_impression``: clicks with no impression (or more clicks than impressions).

Real traffic has a trickle of them (tracking loss: a blocked impression pixel, a click whose
impression fell in the previous window), so in the ``default`` set the rule learns each segment's
own rate per window: a decayed Poisson rate, over-dispersed (orphan clicks come in bunches:
variance lam (1 + phi lam), ``phi`` fitted from the decayed second moment and shrunk to
``phi_prior``; exact negative-binomial tails), tested at the alert budget's z and by a CUSUM like
the other count-aware rules (warm-up, frozen while firing). An alert needs both the evidence and
the size: at least ``min_excess`` orphan clicks above the baseline and ``min_ratio`` times it, so
a handful above a trickle is no alert. Severity is by size: a flood of hundreds above the baseline, or
orphans where there were (almost) none, is critical; a few times the trickle is low to high.

The ``classic`` set (the tutorial) keeps the stateless form: beyond ``abs_tolerance`` +
``frac_tolerance`` x clicks, critical. Both sets share the id (one settings section, one state
slot): checkpoints of the stateless rule (``NoState``, an empty array) read as a fresh baseline.
"""

from __future__ import annotations

import math

import msgspec
from pydantic import Field
from scipy import special

from adwatch.contracts import SegmentWindow, Severity
from adwatch_detector.rules._count_aware import (
    Persistence,
    Reading,
    Thresholds,
    advance,
    anchored,
    frozen,
    judge,
    policy,
)
from adwatch_detector.rules.base import BaseRule, Check, Lives
from adwatch_detector.rules.lifecycle import Policy
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import halflife_decay, poisson_llr, poisson_tail, z_from_p

_TINY = 1e-300


class OrphanClicksSettings(Persistence):
    # the classic set: a fixed tolerance, no baseline
    abs_tolerance: int = Field(default=2, ge=0, description="classic set: orphan clicks always tolerated per window")
    frac_tolerance: float = Field(
        default=0.02, ge=0, le=1, description="classic set: ...plus this share of the window's clicks"
    )
    # the default set: against the segment's own baseline
    confirm_windows: int = Field(default=2, ge=1, le=16, description="breaching windows that confirm an alert...")
    confirm_of: int = Field(default=3, ge=1, le=16, description="...among the last this many (high: at once)")
    warmup_windows: int | None = Field(
        default=5,
        ge=0,
        description="windows before the rule may alert (None: the set's); the prior says orphans are rare",
    )
    halflife: float = Field(default=120.0, gt=0, allow_inf_nan=False, description="baseline half-life, windows")
    prior_rate: float = Field(
        default=0.05, ge=0, allow_inf_nan=False, description="orphan clicks per window before any history"
    )
    prior_windows: float = Field(default=2.0, gt=0, allow_inf_nan=False, description="windows the prior weighs")
    phi_prior: float = Field(
        default=0.5, ge=0, allow_inf_nan=False, description="NB dispersion (variance lam (1 + phi lam)) before history"
    )
    phi_prior_windows: float = Field(
        default=30.0, gt=0, allow_inf_nan=False, description="windows the dispersion prior weighs"
    )
    spike_ratio: float = Field(default=3.0, gt=1, allow_inf_nan=False, description="CUSUM design alternative")
    min_excess: float = Field(
        default=3.0, ge=0, allow_inf_nan=False, description="never page on fewer orphan clicks above the baseline"
    )
    min_ratio: float = Field(default=3.0, ge=1, allow_inf_nan=False, description="never page below this x baseline")
    medium_ratio: float = Field(default=4.0, ge=1, allow_inf_nan=False, description="severity medium from this x")
    high_ratio: float = Field(default=8.0, ge=1, allow_inf_nan=False, description="severity high from this x")
    critical_ratio: float = Field(
        default=20.0, ge=1, allow_inf_nan=False, description="critical from this x (orphans where there were none)"
    )
    medium_excess: float = Field(default=15.0, ge=0, allow_inf_nan=False, description="...or this many above")
    high_excess: float = Field(default=40.0, ge=0, allow_inf_nan=False, description="...or this many above")
    critical_excess: float = Field(
        default=100.0, ge=0, allow_inf_nan=False, description="...or this many above (a flood)"
    )
    click_smoothing: float = Field(
        default=10.0, gt=0, allow_inf_nan=False, description="clicks added to both sides of the click-volume scale"
    )


def nb_upper_tail(x: float, lam: float, phi: float) -> float:
    """P(X >= x) for a negative binomial of mean lam and variance lam (1 + phi lam) (the exact
    tail: orphan clicks are bursty, and a moment-matched Poisson understates a bursty upper tail)."""
    if x <= 0.0:
        return 1.0
    if phi * lam < 1e-9:
        return poisson_tail(x, lam, "upper")
    r = 1.0 / phi
    value = float(special.betainc(x, r, lam * phi / (1.0 + lam * phi)))
    return 0.0 if value < _TINY else min(1.0, value)


class OrphanState(msgspec.Struct, array_like=True):
    """Every field defaults: the stateless rule's ``NoState`` (an empty array) decodes as a fresh one.

    The decayed sums are kept in thousandths as ints: msgpack writes a small int in 1-5 bytes, a
    float in 9, and most segments have no orphan click at all (state bytes are per segment).
    """

    orphans_m: int = 0  # decayed orphan clicks, thousandths (over OrphanClicks.weight windows)
    squares_m: int = 0  # decayed squared orphan clicks per window, thousandths
    frozen: int = 0  # windows the baseline has been held still
    windows: int = 0  # windows learnt from (silent ones included)
    clicks_m: int = 0  # decayed attributed clicks per window, thousandths (tracking loss is a share of them)


class OrphanClicks(BaseRule[OrphanState]):
    id = "click_without_impression"
    alert_types = ("click_without_impression",)
    settings_model = OrphanClicksSettings
    state_type = OrphanState

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.own = settings.section(self.id, OrphanClicksSettings)
        self.baseline = settings.rule_set != "classic"
        self.t = Thresholds.of(settings, self.own.confirm_windows if self.baseline else 1)
        self.decay = halflife_decay(self.own.halflife)
        self.warmup = self.t.warmup_windows if self.own.warmup_windows is None else self.own.warmup_windows

    def weight(self, state: OrphanState) -> float:
        """The decayed count of windows behind ``state.orphans_m`` (each learnt window adds one)."""
        return (1.0 - self.decay ** min(state.windows, 1_000_000)) / (1.0 - self.decay)

    def policy(self) -> Policy:
        return policy(self.settings, self.own) if self.baseline else super().policy()

    def windows_seen(self, state: OrphanState) -> int:
        return state.windows if self.baseline else 0

    def on_silence(self, state: OrphanState, skipped_windows: int, first_skipped_ms: int) -> None:
        if self.baseline:  # silent minutes had no orphan clicks either
            keep = self.decay ** min(skipped_windows, 1_000_000)
            state.orphans_m, state.squares_m = round(keep * state.orphans_m), round(keep * state.squares_m)
            state.clicks_m = round(keep * state.clicks_m)
            state.windows += skipped_windows

    def evaluate(self, state: OrphanState, lives: Lives, window: SegmentWindow) -> list[Check]:
        excess = max(window.orphan_clicks, window.clicks - window.impressions, 0)
        if not self.baseline:
            return [self._tolerance(excess, window)]
        return [self._against_baseline(state, lives, float(excess), window)]

    def _tolerance(self, excess: int, window: SegmentWindow) -> Check:
        own = self.own
        tolerance = own.abs_tolerance + own.frac_tolerance * window.clicks
        breach = excess > tolerance
        p = poisson_tail(float(excess), max(own.frac_tolerance * window.clicks, 0.5), "upper")
        return Check(
            alert_type="click_without_impression",
            metric="orphan_clicks",
            current=float(excess),
            expected=0.0,
            band_low=0.0,
            band_high=float(tolerance),
            volume=window.clicks,
            p_value=p,
            z_score=z_from_p(p),
            breach=breach,
            in_band=not breach,
            recovered=True,
            severity="critical",
        )

    def _against_baseline(self, state: OrphanState, lives: Lives, x: float, window: SegmentWindow) -> Check:
        s, t = self.own, self.t
        life = lives["click_without_impression"]
        seen = self.weight(state)
        weight = seen + s.prior_windows
        attributed = float(max(0, window.clicks - int(x)))
        # tracking loss is a share of the clicks: the per-window rate scaled by this window's clicks
        # against the usual (a daily cycle of clicks is one of orphans), smoothed for small counts
        k = s.click_smoothing
        usual = state.clicks_m / 1000.0 / max(seen, 1.0)
        # (no clicks learnt yet, or state of before the scale: the per-window rate as it is)
        scale = min(5.0, max(0.2, (attributed + k) / (usual + k))) if state.clicks_m > 0 else 1.0
        rate = max((state.orphans_m / 1000.0 + s.prior_rate * s.prior_windows) / weight, 1e-3)  # per usual window
        own_lam = rate * scale
        lam = anchored(life, rate) * scale  # the episode's anchor while it fires
        phi = self.dispersion(state, seen)
        warm = state.windows >= self.warmup
        # the baseline's own error (about lam / weight) is one more share of the dispersion
        phi_eff = phi + 1.0 / (weight * lam)
        design = 1.0 + phi_eff * lam
        p = nb_upper_tail(x, lam, phi_eff)
        z = z_from_p(p)
        # the alternative is a multiple of the baseline but at least min_excess above it: evidence
        # of recovery from a flood on a near-zero baseline builds in windows, not in hundreds
        alt = max(s.spike_ratio * lam, lam + s.min_excess)
        advance(life, poisson_llr(x, lam, alt / lam) / design, warm, t, rate)
        sd = math.sqrt(lam * design)
        practical = warm and x - lam >= s.min_excess and x >= s.min_ratio * lam
        check = judge(
            Reading(
                "click_without_impression",
                "orphan_clicks",
                x,
                lam,
                max(0.0, lam - t.z_resolve * sd),
                lam + t.z_resolve * sd,
                window.clicks,
            ),
            life,
            z,
            p,
            warm,
            practical,
            t,
            self.severity(x, lam) in ("high", "critical"),
            rate,
        )
        check.severity = self.severity(x, lam)
        check.recovered = x - lam < s.min_excess  # a rare-event count is back when its excess is gone
        anomalous = z > t.z_freeze
        if frozen((life,), anomalous, state.frozen, warm, t):
            state.frozen += 1
        else:
            cap = (
                own_lam + 5.0 * math.sqrt(own_lam * (1.0 + phi * own_lam)) + 1.0
            )  # one burst does not make a dispersion
            state.orphans_m = round(self.decay * state.orphans_m + 1000.0 * x)
            state.clicks_m = round(self.decay * state.clicks_m + 1000.0 * attributed)
            state.squares_m = round(self.decay * state.squares_m + 1000.0 * min(x, cap) ** 2)
            state.frozen = 0
            state.windows += 1
        return check

    def dispersion(self, state: OrphanState, seen: float) -> float:
        """phi of variance lam (1 + phi lam) from the decayed moments, shrunk to the prior."""
        phi_hat = 0.0
        if seen > 1.0:
            mean = state.orphans_m / 1000.0 / seen
            var = state.squares_m / 1000.0 / seen - mean * mean
            if mean > 0.05:
                phi_hat = min(max(0.0, (var - mean) / (mean * mean)), 10.0)
        k = self.own.phi_prior_windows
        return (seen * phi_hat + k * self.own.phi_prior) / (seen + k)

    def severity(self, x: float, lam: float) -> Severity:
        """By size: excess orphan clicks above the baseline, or the multiple of it."""
        s = self.own
        excess, ratio = x - lam, x / max(lam, 1e-9)
        if excess >= s.critical_excess or ratio >= s.critical_ratio:
            return "critical"
        if excess >= s.high_excess or ratio >= s.high_ratio:
            return "high"
        if excess >= s.medium_excess or ratio >= s.medium_ratio:
            return "medium"
        return "low"
