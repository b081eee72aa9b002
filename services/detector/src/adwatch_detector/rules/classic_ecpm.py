"""``classic_ecpm_drop``: eCPM < drop_ratio x EMA -> ``ecpm_drop`` (no p-value: reported as 1)."""

from __future__ import annotations

from pydantic import Field

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules._classic import EmaState, classic_check, learn
from adwatch_detector.rules.base import BaseRule, Check, Lives, SettingsSection
from adwatch_detector.rules.settings import RuleSettings


class ClassicEcpmDropSettings(SettingsSection):
    drop_ratio: float = Field(default=0.5, gt=0, allow_inf_nan=False)


class ClassicEcpmDrop(BaseRule[EmaState]):
    id = "classic_ecpm_drop"
    alert_types = ("ecpm_drop",)
    settings_model = ClassicEcpmDropSettings
    state_type = EmaState

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.own = settings.section(self.id, ClassicEcpmDropSettings)
        self.alpha, self.warmup = settings.classic.ema_alpha, settings.classic.warmup_windows

    def windows_seen(self, state: EmaState) -> int:
        return state.windows

    def evaluate(self, state: EmaState, lives: Lives, window: SegmentWindow) -> list[Check]:
        n = window.impressions
        if n == 0:
            return []
        ecpm = window.ecpm
        checks = []
        if state.windows >= self.warmup:
            e, r = state.ema, self.own.drop_ratio
            checks.append(
                classic_check("ecpm_drop", "ecpm", ecpm, e, r * e, e / r, n, 1.0, e > 0 and ecpm < r * e, ecpm >= r * e)
            )
        learn(state, ecpm, self.alpha)
        return checks
