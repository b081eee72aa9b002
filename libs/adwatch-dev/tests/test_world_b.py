"""World b (adwatch_dev.world_b): deterministic, and every feature the quality benchmark relies on
is in its expectation (deep nights, two peaks by time zone, weekend by format, bursts, dark
nights, the holiday surge, whales)."""

from __future__ import annotations

import numpy as np
import pytest

from adwatch_dev import world_b
from adwatch_dev.world_b import WorldB

START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z, a Thursday


@pytest.fixture(scope="module")
def world() -> WorldB:
    return WorldB(seed=42, start_ms=START_MS, days=7)


def _row(world: WorldB, country: str, ad_format: str) -> int:
    return next(r for r, c in enumerate(world.cells) if (c.country, c.ad_format) == (country, ad_format))


def test_same_seed_same_world_other_seed_another() -> None:
    a, b, c = (WorldB(seed=s, start_ms=START_MS, days=1) for s in (1, 1, 2))
    ea, eb, ec = a.cell(3), b.cell(3), c.cell(3)
    np.testing.assert_array_equal(ea.impressions, eb.impressions)
    np.testing.assert_array_equal(ea.ctr, eb.ctr)
    assert not np.array_equal(ea.impressions, ec.impressions)
    rng = [np.random.default_rng(9) for _ in range(2)]
    sa, sb = (a.sample(g, 3, ea.impressions, ea.ctr, ea.ecpm, ea.orphans) for g in rng)
    for x, y in zip(sa, sb, strict=True):
        np.testing.assert_array_equal(x, y)


def test_catalogue_is_its_own_and_big_enough(world: WorldB) -> None:
    assert len(world.leaves) >= 2_000
    assert sum(c.share for c in world.cells) == pytest.approx(1.0)
    assert {m.code for m in world_b.MARKETS}.isdisjoint({"US", "GB", "DE", "JP", "IN", "BR", "FR", "CA"})
    assert len({m.utc_offset_h for m in world_b.MARKETS}) >= 7


def test_deep_nights_and_two_peaks_by_time_zone(world: WorldB) -> None:
    for country in ("PH", "AR", "NZ"):
        r = _row(world, country, "banner")
        e = world.cell(r)
        hour = e.local_hour[0]
        weekday = ~e.weekend[0]
        total = e.smooth.sum(axis=0)
        by_hour = np.array([total[weekday & (hour.astype(int) == h)].mean() for h in range(24)])
        assert by_hour.min() < 0.12 * by_hour.max()  # deep night
        assert 2 <= int(np.argmin(by_hour)) <= 6  # in the small hours, local
        peaks = [h for h in range(24) if by_hour[h] > by_hour[h - 1] and by_hour[h] >= by_hour[(h + 1) % 24]]
        assert len(peaks) == 2 and 11 <= peaks[0] <= 15 and 19 <= peaks[1] <= 23
    # the same local shape lands at different UTC hours
    utc_peak = [
        int(np.argmax(world.cell(_row(world, c, "banner")).smooth.sum(axis=0)[:1440])) // 60 for c in ("PH", "AR")
    ]
    assert utc_peak[0] != utc_peak[1]


def test_weekend_effect_differs_by_format(world: WorldB) -> None:
    ratios = {}
    for fmt in ("banner", "rewarded_video"):
        e = world.cell(_row(world, "PL", fmt))
        total = e.smooth.sum(axis=0)  # wander included
        ratios[fmt] = total[e.weekend[0]].mean() / total[~e.weekend[0] & (e.holiday[0] == 1.0)].mean()
    assert ratios["rewarded_video"] > 1.1
    assert ratios["banner"] < 0.95


def test_single_minute_bursts_return_at_once(world: WorldB) -> None:
    e = world.cell(0)
    assert 0 < e.burst.sum() < 0.002 * e.burst.size
    apps, cols = np.nonzero(e.burst[:, 1:-1])
    cols += 1
    ratio = e.impressions[apps, cols] / e.smooth[apps, cols]
    assert ratio.min() >= 3.0
    after = e.impressions[apps, cols + 1] / np.maximum(e.smooth[apps, cols + 1], 1e-12)
    assert np.median(after) == pytest.approx(1.0)  # the next minute is back at its level


def test_dark_segments_go_to_zero_at_night_and_come_back_each_morning(world: WorldB) -> None:
    r = _row(world, *world_b.DARK_CELLS[0])
    e = world.cell(r)
    total = e.impressions.sum(axis=0)
    hour = e.local_hour[0]
    night = (hour >= 2.0) & (hour < 5.0)
    assert (total[night] == 0).all()
    morning = (hour >= 8.0) & (hour < 9.0)
    days = np.flatnonzero(morning).reshape(-1, 60)
    assert len(days) >= 6 and (total[days] > 0).all()
    # and some dayparted apps elsewhere
    assert 0.05 < world.dark_apps.mean() < 0.3


def test_holiday_surge_is_gradual_and_local(world: WorldB) -> None:
    r = _row(world, world_b.HOLIDAY_MARKETS[0], "banner")
    h = world.cell(r).holiday[0]
    assert h.max() == pytest.approx(1.0 + world_b.HOLIDAY_SURGE)
    up = np.flatnonzero((h > 1.0) & (h < h.max()))
    rise = np.diff(h)
    assert np.abs(rise).max() < 0.01  # under 1 % a minute: +70 % over three hours
    assert 3 * 60 <= len(up) <= 2 * 3 * 60 + 2
    other = next(i for i, c in enumerate(world.cells) if c.country not in world_b.HOLIDAY_MARKETS)
    assert (world.cell(other).holiday == 1.0).all()


def test_orphan_trickle_ctr_drift_and_whales(world: WorldB) -> None:
    e = world.cell(1)
    clicks = (e.impressions * e.ctr).sum()
    assert 0.002 < e.orphans.sum() / clicks < 0.03
    drift = e.ctr[:, -60:].mean(axis=1) / e.ctr[:, :60].mean(axis=1)
    assert drift.std() > 0.03  # apps' CTRs wander apart over the week
    step = np.abs(np.diff(np.log(e.ctr), axis=1)).max()
    assert step < 0.01  # slowly
    _, _, revenue, _, whale = world.sample(np.random.default_rng(3), 1, e.impressions, e.ctr, e.ecpm, e.orphans)
    assert whale.sum() > 0
    minute = np.flatnonzero(whale.sum(axis=0))[0]
    app = int(np.argmax(whale[:, minute]))
    assert whale[app, minute] > 20 * e.ecpm[app, minute] / 1000.0  # one impression paying far above the mean
    assert (revenue >= whale).all()
