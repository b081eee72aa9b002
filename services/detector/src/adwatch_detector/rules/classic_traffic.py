"""``classic_traffic``: impressions > spike_ratio x EMA -> ``traffic_spike``; < drop_ratio x EMA -> ``traffic_drop``."""

from __future__ import annotations

from pydantic import Field

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules._classic import EmaState, classic_check, learn
from adwatch_detector.rules.base import BaseRule, Check, Lives, SettingsSection
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import poisson_tail


class ClassicTrafficSettings(SettingsSection):
    spike_ratio: float = Field(default=3.0, gt=0, allow_inf_nan=False)
    drop_ratio: float = Field(default=0.3, gt=0, lt=1, allow_inf_nan=False)


class ClassicTraffic(BaseRule[EmaState]):
    id = "classic_traffic"
    alert_types = ("traffic_spike", "traffic_drop")
    settings_model = ClassicTrafficSettings
    state_type = EmaState

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.own = settings.section(self.id, ClassicTrafficSettings)
        self.alpha, self.warmup = settings.classic.ema_alpha, settings.classic.warmup_windows

    def windows_seen(self, state: EmaState) -> int:
        return state.windows

    def evaluate(self, state: EmaState, lives: Lives, window: SegmentWindow) -> list[Check]:
        n = window.impressions
        checks = []
        if state.windows >= self.warmup and state.ema > 0:
            e = state.ema
            hi, lo = self.own.spike_ratio * e, self.own.drop_ratio * e
            p_up, p_low = poisson_tail(n, e, "upper"), poisson_tail(n, e, "lower")
            checks.append(classic_check("traffic_spike", "impressions", n, e, lo, hi, n, p_up, n > hi))
            checks.append(classic_check("traffic_drop", "impressions", n, e, lo, hi, n, p_low, n < lo))
        if n > 0:  # a silent minute is judged, never learnt (the tutorial's EMA has no notion of zero)
            learn(state, float(n), self.alpha)
        return checks
