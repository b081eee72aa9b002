"""What the classic rules (the tutorial's fixed ratios against an EMA) share.

Each classic rule keeps its own EMA and window count (only windows with impressions count), checks
once warm, and moves its EMA on every such window, alerting or not, as the tutorial does. Kept
because users know it; it is not count-aware (see DETECTION.md).
"""

from __future__ import annotations

import msgspec

from adwatch.contracts import AlertType, Metric, Severity
from adwatch_detector.rules.base import Check
from adwatch_detector.stats import z_from_p


class EmaState(msgspec.Struct, array_like=True):
    windows: int = 0  # windows with impressions seen
    ema: float = 0.0


def severity(ratio: float) -> Severity:
    return "high" if ratio <= 0.25 or ratio >= 4.0 else "medium"


def classic_check(
    alert_type: AlertType,
    metric: Metric,
    current: float,
    expected: float,
    low: float,
    high: float,
    volume: int,
    p: float,
    breach: bool,
    in_band: bool | None = None,
) -> Check:
    """A fixed-ratio verdict: in band = inside [low, high] unless told otherwise; always 'recovered'."""
    ratio = current / expected if expected else 1.0
    band = (low <= current <= high) if in_band is None else in_band
    return Check(
        alert_type, metric, current, expected, low, high, volume, p, z_from_p(p), breach, band, True, severity(ratio)
    )


def learn(state: EmaState, value: float, alpha: float) -> None:
    """Move the EMA (the first window sets it)."""
    if state.windows == 0:
        state.ema = value
    else:
        state.ema += alpha * (value - state.ema)
    state.windows += 1
