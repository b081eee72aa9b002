"""The evidence of one rule on one window: the metric, its expected value and band.

The backtest keeps it for the report; the streaming job writes it to ClickHouse (``ad_bands``)
beside the window, so the segment dashboard draws the detector's own band, not a guess.
"""

from __future__ import annotations

import msgspec

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules.base import Check


class BandPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One window of one segment as one rule saw it: the metric, its expected value and band.

    The backtest's second output beside the alerts (the report draws it); kept only for the
    (segment, alert type) pairs that alerted.
    """

    segment: str
    alert_type: str
    metric: str
    window_start_ms: int
    window_end_ms: int
    current: float
    expected: float
    band_low: float
    band_high: float
    volume: int
    breach: bool


def band_point(segment: str, window: SegmentWindow, check: Check) -> BandPoint:
    return BandPoint(
        segment=segment,
        alert_type=check.alert_type,
        metric=check.metric,
        window_start_ms=window.window_start_ms,
        window_end_ms=window.window_end_ms,
        current=check.current,
        expected=check.expected,
        band_low=check.band_low,
        band_high=check.band_high,
        volume=check.volume,
        breach=check.breach,
    )
