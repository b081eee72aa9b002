"""``click_without_impression``: clicks with no impression (or more clicks than impressions).

Beyond a small tolerance this is a bot or a broken tracker, never noise: critical, in both rule
sets, with no baseline (stateless).
"""

from __future__ import annotations

from pydantic import Field

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules.base import BaseRule, Check, Lives, NoState, SettingsSection
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import poisson_tail, z_from_p


class OrphanClicksSettings(SettingsSection):
    abs_tolerance: int = Field(default=2, ge=0, description="orphan clicks always tolerated per window")
    frac_tolerance: float = Field(default=0.02, ge=0, le=1, description="...plus this share of the window's clicks")


class OrphanClicks(BaseRule[NoState]):
    id = "click_without_impression"
    alert_types = ("click_without_impression",)
    settings_model = OrphanClicksSettings

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        own = self.settings.section(self.id, OrphanClicksSettings)
        self.abs_tolerance, self.frac_tolerance = own.abs_tolerance, own.frac_tolerance

    def evaluate(self, state: NoState, lives: Lives, window: SegmentWindow) -> list[Check]:
        tolerance = self.abs_tolerance + self.frac_tolerance * window.clicks
        excess = max(window.orphan_clicks, window.clicks - window.impressions)
        breach = excess > tolerance
        p = poisson_tail(float(excess), max(self.frac_tolerance * window.clicks, 0.5), "upper")
        return [
            Check(
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
        ]
