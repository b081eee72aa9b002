"""Traffic that real segments have, through the default rules over several simulated days: daily
shapes with two peaks and deep nights, schedules dark at night, a holiday surge, one-minute bursts;
and what must still page: an outage, a flood. Windows of one minute, as the job's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adwatch.contracts import Alert, SegmentWindow
from adwatch_detector.rules import RuleSettings, detect_windows, season
from adwatch_detector.rules.base import SegmentPrior
from adwatch_detector.rules.state import SegmentState

MIN = 60_000
HOUR = 60
START_MS = 1_767_225_600_000  # Thursday 2026-01-01T00:00Z
DAY = 1440


def shape(minute: int, dark: bool, off_h: float = 23.5) -> float:
    """Lunch and evening peaks over a night at 15% of them; dark: no traffic from ``off_h`` to
    05:00 (a schedule)."""
    h = (minute % DAY) / HOUR
    if dark and (h < 5.0 or h >= off_h):
        return 0.0
    return 0.15 + 0.9 * math.exp(-(((h - 12.0) / 2.5) ** 2)) + 1.2 * math.exp(-(((h - 20.0) / 2.0) ** 2))


def traffic(
    mean: float,
    days: int,
    *,
    dark: bool = False,
    off_h: float = 23.5,
    seed: int = 1,
    bursts: float = 0.0,
    surge_at: int | None = None,
    outage: tuple[int, int, float] | None = None,
    flood: tuple[int, int, float] | None = None,
) -> list[SegmentWindow]:
    """Gamma-Poisson counts on ``shape``; silent minutes are simply absent (as from the job)."""
    rng = np.random.default_rng(seed)
    windows = []
    for k in range(days * DAY):
        lam = mean * shape(k, dark, off_h)
        if surge_at is not None and k >= surge_at:
            lam *= 1.0 + 0.7 * min(1.0, (k - surge_at) / 180.0)  # a holiday: +70% over three hours
        if outage and outage[0] <= k < outage[1]:
            lam *= outage[2]
        if flood and flood[0] <= k < flood[1]:
            lam *= flood[2]
        if lam <= 0.0:
            continue
        x = int(rng.poisson(lam * rng.gamma(50.0, 1.0 / 50.0)))
        if bursts and rng.random() < bursts:
            x *= 3  # a one-minute burst that returns at once
        t = START_MS + k * MIN
        windows.append(
            SegmentWindow(
                window_start_ms=t,
                window_end_ms=t + MIN,
                dimensions={"country": "US", "ad_format": "banner"},
                impressions=x,
                clicks=int(rng.binomial(x, 0.02)),
                revenue_usd=float(x * 0.002),
            )
        )
    return windows


def traffic_alerts(windows: list[SegmentWindow], state: SegmentState | None = None) -> list[Alert]:
    _, alerts = detect_windows(state, windows, RuleSettings(), 0)
    return [a for a in alerts if a.alert_type.startswith("traffic")]


def hour_of(alert: Alert) -> float:
    return (alert.window_start_ms - START_MS) / 3_600_000


@pytest.mark.parametrize("mean", [pytest.param(200.0, id="200-a-minute"), pytest.param(20.0, id="20-a-minute")])
def test_two_peaks_and_deep_nights_never_page(mean: float) -> None:
    assert traffic_alerts(traffic(mean, 5)) == []


@pytest.mark.parametrize("mean", [pytest.param(200.0, id="200-a-minute"), pytest.param(20.0, id="20-a-minute")])
@pytest.mark.parametrize(
    "off_h", [pytest.param(23.5, id="off-at-23:30"), pytest.param(23.0 + 37 / 60, id="off-at-23:37")]
)
def test_a_schedule_dark_every_night_pages_on_its_first_night_only(mean: float, off_h: float) -> None:
    """The first night, never seen, looks like an outage (one page, resolved at dawn as recovered);
    from the second on the dark quarter-hours and the profile expect it (also the quarter a
    schedule switches off in, at any minute of it), and no dawn is a spike."""
    alerts = traffic_alerts(traffic(mean, 5, dark=True, off_h=off_h))
    firing = [a for a in alerts if a.status == "firing"]
    assert [(a.alert_type, hour_of(a) < 24.6) for a in firing] == [("traffic_drop", True)]
    resolved = [a for a in alerts if a.status == "resolved"]
    assert [a.resolution for a in resolved] == ["recovered"] and 29.0 <= hour_of(resolved[0]) < 31.0


def test_a_holiday_surge_over_three_hours_never_pages_above_low() -> None:
    alerts = traffic_alerts(traffic(200.0, 5, surge_at=3 * DAY + 10 * HOUR))
    assert [a for a in alerts if a.status == "firing" and a.severity != "low"] == []


def test_one_minute_bursts_that_return_at_once_do_not_page() -> None:
    """A x3 minute now and then (every ~500 minutes) on a 200-a-minute segment: persistence asks
    for two breaching windows of three."""
    assert traffic_alerts(traffic(200.0, 5, bursts=0.002)) == []


def test_an_outage_to_a_tenth_pages_within_two_windows_and_resolves_when_traffic_returns() -> None:
    onset = 3 * DAY + 14 * HOUR
    alerts = traffic_alerts(traffic(200.0, 4, outage=(onset, onset + 30, 0.1)))
    firing = [a for a in alerts if a.status == "firing"]
    assert firing and firing[0].alert_type == "traffic_drop"
    assert onset * MIN <= firing[0].window_start_ms - START_MS < (onset + 2) * MIN
    resolved = [a for a in alerts if a.status == "resolved" and a.alert_type == "traffic_drop"]
    assert len(resolved) == 1 and resolved[0].resolution == "recovered"
    assert resolved[0].duration_ms >= 29 * MIN and resolved[0].severity == "high", "peak severity, duration"
    assert [a for a in alerts if a.alert_type == "traffic_spike"] == [], "the return is the recovery, not a spike"


def test_a_flood_pages_in_its_first_window() -> None:
    onset = 3 * DAY + 14 * HOUR
    firing = [a for a in traffic_alerts(traffic(200.0, 4, flood=(onset, onset + 30, 8.0))) if a.status == "firing"]
    assert firing and firing[0].alert_type == "traffic_spike"
    assert firing[0].window_start_ms - START_MS == onset * MIN


def test_a_level_that_stays_at_sixty_percent_is_not_resolved_but_accepted_as_the_new_normal() -> None:
    onset = 3 * DAY + 12 * HOUR
    alerts = traffic_alerts(traffic(200.0, 4, outage=(onset, 4 * DAY, 0.4)))
    drops = [a for a in alerts if a.alert_type == "traffic_drop"]
    assert [a.status for a in drops[:1]] == ["firing"]
    resolved = [a for a in drops if a.status == "resolved"]
    assert resolved and resolved[0].resolution == "new_normal", "no 'recovered' while it stays shifted"
    assert resolved[0].window_start_ms - drops[0].window_start_ms >= 240 * MIN
    assert "New normal" in resolved[0].message


def test_a_young_segment_borrows_its_parents_profile_and_expects_its_night() -> None:
    """A segment seen for the first time at 22:00 with its country's profile expects the night's
    trough from its first window (its own profile would take a day), and does not page it."""
    from adwatch_detector.rules.engine import engine_for
    from adwatch_detector.rules.registry import RULES

    learnt = SegmentState()
    detect_windows(learnt, traffic(2000.0, 3), RuleSettings(), 0)
    profile = tuple(learnt.rules["traffic"].state.season)
    assert profile and min(profile) < 0.6 * season.UNIT and max(profile) > 1.5 * season.UNIT, "a trough, peaks"
    seeded = SegmentState()
    engine_for(RuleSettings()).seed(seeded, SegmentPrior(0.02, 2.0, 200.0, profile))
    rule = RULES["traffic"](RuleSettings())
    three_am = START_MS + (3 * DAY + 3 * HOUR) * MIN
    assert rule.factor(seeded.rules["traffic"].state, three_am) < 0.6, "the parent's night, at once"
    assert rule.factor(rule.new_state(), three_am) == 1.0, "its own profile: not before a day"
    child = [w for w in traffic(200.0, 5, seed=3) if w.window_start_ms >= START_MS + (3 * DAY + 22 * HOUR) * MIN]
    assert traffic_alerts(child, seeded) == []
