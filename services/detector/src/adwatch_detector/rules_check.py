"""What one rule concludes about one window of one segment, and the orphan-click rule both rule sets share."""

from __future__ import annotations

from typing import NamedTuple

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules_model import RuleSettings
from adwatch_detector.stats import poisson_tail, z_from_p


class Check(NamedTuple):
    """Evidence of one alert type on one window.

    ``breach``: the rule would fire on this window; ``in_band``: the metric is inside its band
    (counts towards resolving); ``recovered``: enough evidence that the shift is over.
    """

    alert_type: str
    metric: str
    current: float
    expected: float
    band_low: float
    band_high: float
    volume: int
    p_value: float
    z_score: float
    breach: bool
    in_band: bool
    recovered: bool
    severity: str


def orphan_check(window: SegmentWindow, rules: RuleSettings) -> Check:
    """Clicks with no impression, or more clicks than impressions, beyond a small tolerance: critical."""
    tolerance = rules.orphan_abs_tolerance + rules.orphan_frac_tolerance * window.clicks
    excess = max(window.orphan_clicks, window.clicks - window.impressions)
    breach = excess > tolerance
    p = poisson_tail(float(excess), max(rules.orphan_frac_tolerance * window.clicks, 0.5), "upper")
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
