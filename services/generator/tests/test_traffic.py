"""Statistical properties of the traffic model, measured on generated data (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from adwatch.contracts import AD_FORMATS, segment_key
from adwatch_dev.measure import MinuteTotals, expected_volumes, minute_totals
from adwatch_generator.catalog import SEGMENTS
from adwatch_generator.events import CLICK, IMPRESSION, EventBatch
from adwatch_generator.scenarios import Scenario
from adwatch_generator.traffic import MINUTE_MS, TrafficModel

WEDNESDAY = 1_736_899_200_000  # 2025-01-15T00:00:00Z
HOUR = 3_600_000


def totals(model: TrafficModel, start: int, end: int, scenarios: Sequence[Scenario] = ()) -> MinuteTotals:
    batches = model.generate(start, end, scenarios, encode=False)
    return minute_totals(batches, len(model.segments), start, end)


def test_catalogue_has_countries_by_formats_with_a_long_tail() -> None:
    countries = {s.country for s in SEGMENTS}
    assert len(countries) >= 12
    assert {s.ad_format for s in SEGMENTS} == set(AD_FORMATS)
    assert len(SEGMENTS) == len(countries) * 4
    shares = np.array([s.share for s in SEGMENTS])
    assert shares.sum() == pytest.approx(1.0)
    assert shares.max() / shares.min() > 100
    per_minute_at_80 = 80 * 60 * shares
    assert per_minute_at_80.min() < 10  # a few impressions a minute
    assert per_minute_at_80.max() > 500
    assert all(s.placements and s.campaigns for s in SEGMENTS)


def test_daily_peak_beats_the_night_trough_in_local_time() -> None:
    model = TrafficModel(seed=3, rate=2000)
    us = model.segment_keys.index(segment_key("US", "banner"))
    jp = model.segment_keys.index(segment_key("JP", "banner"))
    peak = totals(model, WEDNESDAY + 1 * HOUR, WEDNESDAY + 1 * HOUR + 5 * MINUTE_MS)  # 20:00 in New York
    trough = totals(model, WEDNESDAY + 13 * HOUR, WEDNESDAY + 13 * HOUR + 5 * MINUTE_MS)  # 08:00 in New York
    assert peak.impressions[us].sum() > 2.0 * trough.impressions[us].sum()
    # Tokyo is 14 hours ahead: at 13:00 UTC it is 22:00 there, near its own peak.
    assert trough.impressions[jp].sum() > 2.0 * peak.impressions[jp].sum()


def test_weekends_are_busier_than_weekdays() -> None:
    model = TrafficModel(seed=3)
    saturday = WEDNESDAY + 3 * 24 * HOUR
    weekday = expected_volumes(model, WEDNESDAY + 12 * HOUR, WEDNESDAY + 13 * HOUR).impressions.sum()
    weekend = expected_volumes(model, saturday + 12 * HOUR, saturday + 13 * HOUR).impressions.sum()
    assert weekend / weekday == pytest.approx(1.10 / 0.96, rel=0.02)


@pytest.fixture(scope="module")
def ten_minutes() -> tuple[TrafficModel, list[EventBatch]]:
    model = TrafficModel(seed=11, rate=3000)
    return model, list(model.generate(WEDNESDAY + 18 * HOUR, WEDNESDAY + 18 * HOUR + 10 * MINUTE_MS, encode=False))


def _by_format(model: TrafficModel, batches: list[EventBatch]) -> dict[str, dict[str, float]]:
    fmt_of = np.array([AD_FORMATS.index(s.ad_format) for s in model.segments])
    out = {}
    kinds = np.concatenate([b.kinds for b in batches])
    fmts = fmt_of[np.concatenate([b.segment_index for b in batches])]
    revenue = np.concatenate([b.revenue_usd for b in batches])
    for i, name in enumerate(AD_FORMATS):
        imps = (kinds == IMPRESSION) & (fmts == i)
        out[name] = {
            "ctr": np.count_nonzero((kinds == CLICK) & (fmts == i)) / np.count_nonzero(imps),
            "ecpm": 1000 * revenue[imps].mean(),
            "skew": float(_skew(revenue[imps])),
        }
    return out


def _skew(x: np.ndarray) -> float:
    return float(np.mean((x - x.mean()) ** 3) / x.std() ** 3)


def test_ctr_depends_on_the_format(ten_minutes: tuple[TrafficModel, list[EventBatch]]) -> None:
    stats = _by_format(*ten_minutes)
    assert 0.001 <= stats["banner"]["ctr"] <= 0.01
    assert 0.02 <= stats["rewarded_video"]["ctr"] <= 0.05
    assert (
        stats["banner"]["ctr"] < stats["native"]["ctr"] < stats["interstitial"]["ctr"] < stats["rewarded_video"]["ctr"]
    )


def test_prices_are_log_normal_and_depend_on_the_format(ten_minutes: tuple[TrafficModel, list[EventBatch]]) -> None:
    stats = _by_format(*ten_minutes)
    assert (
        stats["banner"]["ecpm"]
        < stats["native"]["ecpm"]
        < stats["interstitial"]["ecpm"]
        < stats["rewarded_video"]["ecpm"]
    )
    for fmt in AD_FORMATS:
        assert stats[fmt]["skew"] > 0.5  # long right tail in dollars
    model, batches = ten_minutes
    us_banner = model.segment_keys.index(segment_key("US", "banner"))
    revenue = np.concatenate([b.revenue_usd[(b.segment_index == us_banner) & (b.kinds == IMPRESSION)] for b in batches])
    logs = np.log(revenue)
    assert abs(_skew(logs)) < 0.15  # one segment: normal in log space (minute-level wobble aside)
    assert np.std(logs) == pytest.approx(0.45, abs=0.05)


def _dispersion(model: TrafficModel, start: int, minutes: int) -> float:
    """Mean of (observed - expected)^2 / expected over big segment-minutes (1 for Poisson)."""
    end = start + minutes * MINUTE_MS
    seen = totals(model, start, end).impressions
    expected = expected_volumes(model, start, end).impressions
    big = expected > 2000
    return float(np.mean((seen[big] - expected[big]) ** 2 / expected[big]))


def test_traffic_is_over_dispersed_but_modestly() -> None:
    start = WEDNESDAY + 20 * HOUR
    poisson = _dispersion(TrafficModel(seed=2, rate=2000, traffic_cv=0), start, 12)
    wobbly = _dispersion(TrafficModel(seed=2, rate=2000), start, 12)
    assert 0.6 < poisson < 1.5
    assert wobbly > 3 * poisson
    model = TrafficModel(seed=2, rate=2000)
    seen = totals(model, start, start + 12 * MINUTE_MS).impressions
    expected = expected_volumes(model, start, start + 12 * MINUTE_MS).impressions
    big = expected > 2000
    assert np.std(seen[big] / expected[big] - 1) < 0.15  # keep clean traffic quiet


def test_ctr_is_over_dispersed_when_asked() -> None:
    start = WEDNESDAY + 20 * HOUR

    def ratio_spread(ctr_cv: float) -> float:
        model = TrafficModel(seed=4, rate=10_000, ctr_cv=ctr_cv, traffic_cv=0)
        seen = totals(model, start, start + 6 * MINUTE_MS)
        expected = expected_volumes(model, start, start + 6 * MINUTE_MS)
        big = expected.clicks > 200
        return float(np.std(seen.clicks[big] / expected.clicks[big] - 1))

    binomial, default, wobbly = ratio_spread(0.0), ratio_spread(0.06), ratio_spread(0.3)
    assert binomial < default < wobbly
    assert default < 0.15
    assert wobbly > 0.2


def test_expected_volumes_match_the_generated_totals() -> None:
    model = TrafficModel(seed=1, rate=1000)
    start, end = WEDNESDAY + 6 * HOUR, WEDNESDAY + 6 * HOUR + 10 * MINUTE_MS
    seen = totals(model, start, end)
    expected = expected_volumes(model, start, end)
    assert seen.impressions.sum() == pytest.approx(expected.impressions.sum(), rel=0.03)
    assert seen.clicks.sum() == pytest.approx(expected.clicks.sum(), rel=0.05)
    assert seen.revenue_usd.sum() == pytest.approx(expected.revenue_usd.sum(), rel=0.05)
    assert expected.impressions.shape == (len(model.segments), 10)


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    def values(seed: int) -> list[bytes]:
        return [v for b in TrafficModel(seed=seed, rate=500).generate(WEDNESDAY, WEDNESDAY + 90_000) for v in b.values]

    first = values(7)
    assert first == values(7)
    assert first != values(8)
