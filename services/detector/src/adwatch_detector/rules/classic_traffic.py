"""``classic_traffic_spike``: impressions > spike_ratio x EMA -> ``traffic_spike``."""

from __future__ import annotations

from pydantic import Field

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules._classic import EmaState, classic_check, learn
from adwatch_detector.rules.base import BaseRule, Check, Lives, SettingsSection
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import poisson_tail


class ClassicTrafficSpikeSettings(SettingsSection):
    spike_ratio: float = Field(default=3.0, gt=0, allow_inf_nan=False)


class ClassicTrafficSpike(BaseRule[EmaState]):
    id = "classic_traffic_spike"
    alert_types = ("traffic_spike",)
    settings_model = ClassicTrafficSpikeSettings
    state_type = EmaState

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.own = settings.section(self.id, ClassicTrafficSpikeSettings)
        self.alpha, self.warmup = settings.classic.ema_alpha, settings.classic.warmup_windows

    def windows_seen(self, state: EmaState) -> int:
        return state.windows

    def evaluate(self, state: EmaState, lives: Lives, window: SegmentWindow) -> list[Check]:
        n = window.impressions
        if n == 0:
            return []
        checks = []
        if state.windows >= self.warmup:
            e = state.ema
            hi = self.own.spike_ratio * e
            p = poisson_tail(n, e, "upper") if e > 0 else 1.0
            checks.append(classic_check("traffic_spike", "impressions", n, e, 0.0, hi, n, p, e > 0 and n > hi))
        learn(state, float(n), self.alpha)
        return checks
