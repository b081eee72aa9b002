"""``traffic``: impressions against a damped-Holt forecast with negative-binomial variance.

Counts wobble more than Poisson: the variance is lam (1 + phi lam) with phi fitted on history.
Both tails alert: ``traffic_spike`` (bots, floods) and ``traffic_drop`` (an outage, a broken tag,
lost supply). Runs on every window, zero-traffic ones included (a silent minute is information
for a count; the job emits empty windows for a tracked segment that goes dark).
"""

from __future__ import annotations

import math

import msgspec
from pydantic import Field

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules._count_aware import Reading, Thresholds, advance, frozen, judge
from adwatch_detector.rules.base import BaseRule, Check, Lives, SettingsSection
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import halflife_decay, poisson_llr, poisson_tail, z_from_p


class TrafficSettings(SettingsSection):
    alpha: float = Field(default=0.15, gt=0, le=1, description="level smoothing")
    beta: float = Field(default=0.05, ge=0, le=1, description="trend smoothing (times alpha)")
    damping: float = Field(default=0.95, gt=0, le=1, description="trend damping per window")
    phi_prior: float = Field(default=0.01, ge=0, allow_inf_nan=False, description="NB dispersion before any history")
    var_halflife: float = Field(default=240.0, gt=0, allow_inf_nan=False, description="windows")
    min_expected_count: float = Field(default=5.0, ge=0, allow_inf_nan=False, description="one-window alarm needs this")
    spike_ratio: float = Field(default=2.0, gt=0, allow_inf_nan=False, description="CUSUM design alternative")
    min_ratio: float = Field(default=1.5, gt=0, allow_inf_nan=False, description="never page on a smaller spike")
    drop_ratio: float = Field(default=0.3, gt=0, lt=1, allow_inf_nan=False, description="drop CUSUM alternative")
    drop_max_ratio: float = Field(
        default=0.5, gt=0, lt=1, allow_inf_nan=False, description="never page on a drop to more than this share"
    )


class TrafficState(msgspec.Struct, array_like=True):
    windows: int = 0  # windows seen, zero-traffic ones included
    level: float = 0.0
    trend: float = 0.0
    phi_num: float = 0.0  # NB dispersion phi = phi_num / phi_den
    phi_den: float = 0.0
    frozen: int = 0  # windows the baseline has been held still


class Traffic(BaseRule[TrafficState]):
    id = "traffic"
    alert_types = ("traffic_spike", "traffic_drop")
    settings_model = TrafficSettings
    state_type = TrafficState

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.own = settings.section(self.id, TrafficSettings)
        self.t = Thresholds.of(settings)
        self.var_decay = halflife_decay(self.own.var_halflife)

    def on_silence(self, state: TrafficState, skipped_windows: int) -> None:
        state.level *= (1.0 - self.own.alpha) ** min(skipped_windows, 10_000)
        state.trend = 0.0

    def windows_seen(self, state: TrafficState) -> int:
        return state.windows

    def evaluate(self, state: TrafficState, lives: Lives, window: SegmentWindow) -> list[Check]:
        try:
            return self._evaluate(state, lives, window)
        finally:
            state.windows += 1

    def _evaluate(self, state: TrafficState, lives: Lives, window: SegmentWindow) -> list[Check]:
        s, t = self.own, self.t
        x = float(window.impressions)
        spike, drop = lives["traffic_spike"], lives["traffic_drop"]
        a, damp = s.alpha, s.damping
        if state.windows <= 1:
            # The first window of a new stream is usually partial (it started mid-window): the
            # second, first complete one, sets the level again.
            state.level, state.trend = x, 0.0
            w0 = 5.0 * max(x, 1.0) ** 2
            state.phi_num, state.phi_den = s.phi_prior * w0, w0
            return []
        raw = state.level + damp * state.trend
        lam = max(raw, 0.05)
        phi = max(0.0, state.phi_num / state.phi_den) if state.phi_den > 0 else s.phi_prior
        warm = state.windows >= t.warmup_windows
        design = (1.0 + phi * lam) * (1.0 + a / (2.0 - a)) * (1.0 + 2.0 / state.windows)
        p_up = poisson_tail(x, lam, "upper", design)
        p_low = poisson_tail(x, lam, "lower", design)
        z_up, z_low = z_from_p(p_up), z_from_p(p_low)
        advance(spike, poisson_llr(x, lam, s.spike_ratio) / design, warm)
        advance(drop, poisson_llr(x, lam, s.drop_ratio) / design, warm)
        sd = math.sqrt(lam * design)  # bands at z_resolve: inside them counts towards resolving
        band = (max(0.0, lam - t.z_resolve * sd), lam + t.z_resolve * sd)
        gate = warm and lam >= s.min_expected_count
        checks = [
            judge(
                Reading("traffic_spike", "impressions", x, lam, *band, window.impressions),
                spike,
                z_up,
                p_up,
                gate,
                warm and x >= s.min_ratio * lam,
                t,
            ),
            judge(
                Reading("traffic_drop", "impressions", x, lam, *band, window.impressions),
                drop,
                z_low,
                p_low,
                gate,
                warm and x <= s.drop_max_ratio * lam,
                t,
            ),
        ]
        anomalous = max(z_up, z_low) > t.z_freeze
        if frozen((spike, drop), anomalous, state.frozen, warm, t):
            state.level, state.trend = max(0.0, raw), damp * state.trend
            state.frozen += 1
        else:
            e = x - raw
            state.level = max(0.0, raw + a * e)
            state.trend = damp * state.trend + a * s.beta * e
            state.frozen = 0
            if not anomalous:
                cap = 5.0 * math.sqrt(lam * (1.0 + phi * lam))
                e = max(-cap, min(cap, e))
                state.phi_num = self.var_decay * state.phi_num + (e * e - lam)
                state.phi_den = self.var_decay * state.phi_den + lam * lam
        return checks
