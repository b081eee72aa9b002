"""The classic rule set of the tutorial: fixed ratios against an EMA (weight 0.2).

CTR < 0.5 x EMA -> ctr_drop, CTR > 2 x EMA -> ctr_spike, impressions > 3 x EMA -> traffic_spike,
eCPM < 0.5 x EMA -> ecpm_drop. Kept because users know it; it is not count-aware (see DETECTION.md).
"""

from __future__ import annotations

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules_check import Check, orphan_check
from adwatch_detector.rules_model import RuleSettings, SegmentState
from adwatch_detector.stats import binom_tail, poisson_tail, z_from_p


def _severity(ratio: float) -> str:
    return "high" if ratio <= 0.25 or ratio >= 4.0 else "medium"


def _check(alert_type: str, metric: str, current: float, expected: float, low: float, high: float, volume: int,
           p: float, breach: bool, in_band: bool | None = None) -> Check:  # fmt: skip
    ratio = current / expected if expected else 1.0
    band = (low <= current <= high) if in_band is None else in_band
    return Check(alert_type, metric, current, expected, low, high, volume, p, z_from_p(p), breach, band, True,
                 _severity(ratio))  # fmt: skip


def classic_checks(state: SegmentState, window: SegmentWindow, rules: RuleSettings) -> list[Check]:
    """Evaluate the tutorial's rules on one window, then move the EMAs (always, as the tutorial does)."""
    checks = [orphan_check(window, rules)]
    n = window.impressions
    if n == 0:
        return checks
    clicks = max(0, window.clicks - window.orphan_clicks)  # attributed clicks only
    ctr, ecpm = clicks / n, window.ecpm
    warm = state.windows_seen >= rules.classic_warmup_windows
    if warm:
        e_ctr, e_imps, e_ecpm = state.ema_ctr, state.ema_imps, state.ema_ecpm
        lo, hi = rules.classic_ctr_drop * e_ctr, rules.classic_ctr_spike * e_ctr
        p_drop = binom_tail(clicks, n, e_ctr, "lower") if e_ctr > 0 else 1.0
        p_spike = binom_tail(clicks, n, e_ctr, "upper") if e_ctr > 0 else 1.0
        checks.append(_check("ctr_drop", "ctr", ctr, e_ctr, lo, hi, n, p_drop, e_ctr > 0 and ctr < lo))
        checks.append(_check("ctr_spike", "ctr", ctr, e_ctr, lo, hi, n, p_spike, e_ctr > 0 and ctr > hi))
        hi_imps = rules.classic_traffic_spike * e_imps
        p_imps = poisson_tail(n, e_imps, "upper") if e_imps > 0 else 1.0
        checks.append(_check("traffic_spike", "impressions", n, e_imps, 0.0, hi_imps, n, p_imps,
                             e_imps > 0 and n > hi_imps))  # fmt: skip
        lo_ecpm = rules.classic_ecpm_drop * e_ecpm
        checks.append(_check("ecpm_drop", "ecpm", ecpm, e_ecpm, lo_ecpm, e_ecpm / rules.classic_ecpm_drop, n, 1.0,
                             e_ecpm > 0 and ecpm < lo_ecpm, ecpm >= lo_ecpm))  # fmt: skip
    a = rules.ema_alpha
    if state.windows_seen == 0:
        state.ema_ctr, state.ema_imps, state.ema_ecpm = ctr, float(n), ecpm
    else:
        state.ema_ctr += a * (ctr - state.ema_ctr)
        state.ema_imps += a * (n - state.ema_imps)
        state.ema_ecpm += a * (ecpm - state.ema_ecpm)
    state.windows_seen += 1
    return checks
