"""``classic_ctr``: CTR < drop_ratio x EMA -> ``ctr_drop``, CTR > spike_ratio x EMA -> ``ctr_spike``."""

from __future__ import annotations

from pydantic import Field

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules._classic import EmaState, classic_check, learn
from adwatch_detector.rules.base import BaseRule, Check, Lives, SettingsSection
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import binom_tail


class ClassicCtrSettings(SettingsSection):
    drop_ratio: float = Field(default=0.5, gt=0, allow_inf_nan=False)
    spike_ratio: float = Field(default=2.0, gt=0, allow_inf_nan=False)


class ClassicCtr(BaseRule[EmaState]):
    id = "classic_ctr"
    alert_types = ("ctr_drop", "ctr_spike")
    settings_model = ClassicCtrSettings
    state_type = EmaState

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.own = settings.section(self.id, ClassicCtrSettings)
        self.alpha, self.warmup = settings.classic.ema_alpha, settings.classic.warmup_windows

    def windows_seen(self, state: EmaState) -> int:
        return state.windows

    def evaluate(self, state: EmaState, lives: Lives, window: SegmentWindow) -> list[Check]:
        n = window.impressions
        if n == 0:
            return []
        clicks = max(0, window.clicks - window.orphan_clicks)  # attributed clicks only
        ctr = clicks / n
        checks = []
        if state.windows >= self.warmup:
            e = state.ema
            lo, hi = self.own.drop_ratio * e, self.own.spike_ratio * e
            p_drop = binom_tail(clicks, n, e, "lower") if e > 0 else 1.0
            p_spike = binom_tail(clicks, n, e, "upper") if e > 0 else 1.0
            checks.append(classic_check("ctr_drop", "ctr", ctr, e, lo, hi, n, p_drop, e > 0 and ctr < lo))
            checks.append(classic_check("ctr_spike", "ctr", ctr, e, lo, hi, n, p_spike, e > 0 and ctr > hi))
        learn(state, ctr, self.alpha)
        return checks
