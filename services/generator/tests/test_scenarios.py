"""Scenario parsing, ground truth, control records, and each scenario's effect on generated data."""

from __future__ import annotations

import numpy as np
import pytest

from adwatch.contracts import TruthRecord, decode, encode, parse_segment_id, segment_key
from adwatch_dev.measure import expected_volumes, minute_totals
from adwatch_generator.scenarios import (
    DEFAULT_MAGNITUDE,
    Scenario,
    ScenarioError,
    apply_control,
    parse_scenario,
    scenario_from_truth,
    truth_record,
)
from adwatch_generator.traffic import MINUTE_MS, TrafficModel

NOW = 1_736_960_400_000  # 2025-01-15T17:00:00Z
MIN = MINUTE_MS
US, DE = (segment_key("US", "banner"),), (segment_key("DE", "native"),)
JP = (
    segment_key("JP", "banner"),
    segment_key("JP", "interstitial"),
    segment_key("JP", "rewarded_video"),
    segment_key("JP", "native"),
)
# kind, segments (None: a wildcard, checked below), start, end, magnitude
Expected = tuple[str, tuple[str, ...] | None, int, int, float]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("ctr_drop", ("ctr_drop", US, NOW, NOW + 5 * MIN, 0.4), id="defaults"),
        pytest.param("ctr_spike:DE/native", ("ctr_spike", DE, NOW, NOW + 5 * MIN, 3.0), id="slash-segment"),
        pytest.param(
            "traffic_spike:US|banner,DE|native:90s:2m:4",
            ("traffic_spike", US + DE, NOW + 90_000, NOW + 210_000, 4.0),
            id="all-fields",
        ),
        pytest.param(
            "ecpm_drop::-10m::0.7",
            ("ecpm_drop", US, NOW - 10 * MIN, NOW - 5 * MIN, 0.7),
            id="empty-fields-negative-start",
        ),
        pytest.param(
            "ctr_drop:JP|*:2025-01-15T18:00:00Z:1h",
            ("ctr_drop", JP, NOW + 60 * MIN, NOW + 120 * MIN, 0.4),
            id="iso-start-wildcard",
        ),
        pytest.param(
            "click_flood_without_impressions:*|rewarded_video",
            ("click_flood_without_impressions", None, NOW, NOW + 5 * MIN, 1.0),
            id="format-wildcard",
        ),
        pytest.param("clean:::30m", ("clean", None, NOW, NOW + 30 * MIN, 1.0), id="clean-all"),
    ],
)
def test_parse_scenario(text: str, expected: Expected) -> None:
    kind, segments, start, end, magnitude = expected
    scenario = parse_scenario(text, NOW)
    assert (scenario.kind, scenario.start_ms, scenario.end_ms, scenario.magnitude) == (kind, start, end, magnitude)
    if segments is not None:
        assert scenario.segments == segments
    elif kind == "clean":
        assert len(scenario.segments) == 64
    else:
        assert len(scenario.segments) == 16 and all(
            parse_segment_id(s) == {"country": parse_segment_id(s)["country"], "ad_format": "rewarded_video"}
            for s in scenario.segments
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("bogus", "unknown scenario type", id="type"),
        pytest.param("ctr_drop:XX|banner", "unknown segment", id="country"),
        pytest.param("ctr_drop:US|poster", "unknown segment", id="format"),
        pytest.param("ctr_drop:USbanner", "bad segment", id="segment-shape"),
        pytest.param("ctr_drop:US|banner:soon", "bad duration", id="start"),
        pytest.param("ctr_drop:US|banner:0:-5m", "bad duration", id="duration"),
        pytest.param("ctr_drop:US|banner:0:0s", "positive", id="zero-duration"),
        pytest.param("ctr_drop:US|banner:0:5m:1.5", "below 1", id="drop-above-one"),
        pytest.param("traffic_spike:US|banner:0:5m:0.5", "above 1", id="spike-below-one"),
        pytest.param("traffic_drop:US|banner:0:5m:1.5", r"in \[0, 1\)", id="outage-above-one"),
        pytest.param("ctr_drop:US|banner:0:5m:lots", "bad magnitude", id="magnitude"),
        pytest.param("ctr_drop:US|banner:0:5m:0.4:extra", "too many fields", id="fields"),
    ],
)
def test_bad_scenarios_are_rejected_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text, NOW)


@pytest.mark.parametrize(
    ("kind", "expected_alert"),
    [
        ("ctr_drop", "ctr_drop"),
        ("ctr_spike", "ctr_spike"),
        ("traffic_spike", "traffic_spike"),
        ("ecpm_drop", "ecpm_drop"),
        ("click_flood_without_impressions", "click_without_impression"),
        ("traffic_drop", "traffic_drop"),
        ("clean", None),
    ],
)
def test_truth_record_round_trips(kind: str, expected_alert: str | None) -> None:
    scenario = parse_scenario(f"{kind}:US|banner:1m:2m", NOW)
    record = truth_record(scenario)
    assert record.expected_alert_type == expected_alert
    assert (record.start_ms, record.end_ms, record.segments) == (
        NOW + MIN,
        NOW + 3 * MIN,
        [segment_key("US", "banner")],
    )
    assert record.magnitude == DEFAULT_MAGNITUDE[scenario.kind]
    assert record.scenario_id == scenario.scenario_id == parse_scenario(f"{kind}:US|banner:1m:2m", NOW).scenario_id
    assert scenario_from_truth(decode(encode(record), TruthRecord)) == scenario


# --- effects, measured on generated data ------------------------------------------------------
START = NOW + 5 * MIN
RATE = 8000  # events/s: enough clicks that a fixed seed's noise sits well inside the tolerances


def _measure(scenario: Scenario) -> tuple[np.ndarray, np.ndarray, TrafficModel, dict[str, np.ndarray]]:
    """Totals per segment over 10 minutes with the scenario active in minutes 4-7 (4 minutes)."""
    model = TrafficModel(seed=21, rate=RATE)
    end = START + 10 * MIN
    seen = minute_totals(model.generate(START, end, [scenario], encode=False), len(model.segments), START, end)
    inside = np.zeros(10, bool)
    inside[4:8] = True
    counts = {
        "impressions": seen.impressions,
        "clicks": seen.clicks - seen.orphan_clicks,
        "revenue": seen.revenue_usd,
        "orphans": seen.orphan_clicks,
    }
    return inside, np.arange(len(model.segments)), model, counts


def _scenario(kind: str, magnitude: float | None = None) -> Scenario:
    us_banner = (segment_key("US", "banner"),)
    return Scenario(kind, us_banner, START + 4 * MIN, START + 8 * MIN, magnitude or DEFAULT_MAGNITUDE[kind])  # type: ignore[arg-type,index]


def _ratio(values: np.ndarray, row: int, inside: np.ndarray) -> float:
    return float(values[row, inside].mean() / values[row, ~inside].mean())


@pytest.mark.parametrize(
    ("kind", "metric", "expected"),
    [
        ("ctr_drop", "ctr", 0.4),
        ("ctr_spike", "ctr", 3.0),
        ("traffic_spike", "impressions", 3.0),
        ("ecpm_drop", "ecpm", 0.5),
        ("traffic_drop", "impressions", 0.1),
    ],
)
def test_scenario_moves_its_metric_on_its_segment_only(kind: str, metric: str, expected: float) -> None:
    inside, _, model, seen = _measure(_scenario(kind))
    values = {
        "ctr": seen["clicks"] / seen["impressions"],
        "impressions": seen["impressions"],
        "ecpm": 1000 * seen["revenue"] / seen["impressions"],
    }[metric]
    target = model.segment_keys.index(segment_key("US", "banner"))
    assert _ratio(values, target, inside) == pytest.approx(expected, rel=0.15)
    for other in (segment_key("US", "native"), segment_key("GB", "banner"), segment_key("DE", "interstitial")):
        assert _ratio(values, model.segment_keys.index(other), inside) == pytest.approx(1.0, rel=0.15)
    assert seen["orphans"].sum() == 0


def test_click_flood_adds_orphan_clicks_only_where_and_when_injected() -> None:
    inside, _, model, seen = _measure(_scenario("click_flood_without_impressions", 2.0))
    target = model.segment_keys.index(segment_key("US", "banner"))
    orphans = seen["orphans"]
    assert orphans[target, ~inside].sum() == 0
    assert orphans[np.arange(len(model.segments)) != target].sum() == 0
    normal_clicks = seen["clicks"][target, inside].sum()
    assert orphans[target, inside].sum() == pytest.approx(2.0 * normal_clicks, rel=0.2)


def test_clean_traffic_has_no_orphan_clicks_and_matches_expectation() -> None:
    clean = Scenario("clean", (segment_key("US", "banner"),), START, START + 10 * MIN, 1.0)
    _, _, model, seen = _measure(clean)
    assert seen["orphans"].sum() == 0
    expected = expected_volumes(model, START, START + 10 * MIN, [clean])
    assert seen["impressions"].sum() == pytest.approx(expected.impressions.sum(), rel=0.05)


def test_expected_volumes_include_the_scenario() -> None:
    model = TrafficModel(seed=1, rate=RATE)
    scenario = _scenario("traffic_spike", 3.0)
    base = expected_volumes(model, START, START + 10 * MIN)
    spiked = expected_volumes(model, START, START + 10 * MIN, [scenario])
    row = model.segment_keys.index(segment_key("US", "banner"))
    ratio = spiked.impressions[row] / base.impressions[row]
    assert np.allclose(ratio[4:8], 3.0) and np.allclose(ratio[:4], 1.0) and np.allclose(ratio[8:], 1.0)
    flood = expected_volumes(model, START, START + 10 * MIN, [_scenario("click_flood_without_impressions")])
    assert flood.orphan_clicks[row, 4:8].min() > 0 and flood.orphan_clicks.sum() == flood.orphan_clicks[row, 4:8].sum()


def test_overlapping_scenarios_combine() -> None:
    model = TrafficModel(seed=1, rate=RATE)
    a = Scenario("traffic_spike", (segment_key("US", "banner"),), START, START + 4 * MIN, 2.0)
    b = Scenario("traffic_spike", (segment_key("US", "banner"),), START + 2 * MIN, START + 6 * MIN, 3.0)
    base = expected_volumes(model, START, START + 6 * MIN).impressions[0]
    both = expected_volumes(model, START, START + 6 * MIN, [a, b]).impressions[0]
    assert np.allclose(both / base, [2, 2, 6, 6, 3, 3])


# --- control records (how a drill reaches a live generator) ----------------------------------
def test_control_adds_new_scenarios_and_skips_known_or_finished_ones() -> None:
    running = parse_scenario("ctr_drop:US|banner:0:10m", NOW)
    fresh = parse_scenario("ctr_spike:DE|banner:0:5m", NOW)
    over = parse_scenario("traffic_spike:US|banner:-20m:5m", NOW)
    updates, corrections = apply_control(
        {running.scenario_id: running}, [truth_record(s) for s in (running, fresh, over)], NOW + 1000
    )
    assert updates == [fresh] and corrections == []


def test_clean_record_stops_running_scenarios_on_its_segments() -> None:
    us = parse_scenario("ctr_drop:US|banner:0:10m", NOW)
    de = parse_scenario("ctr_spike:DE|banner:0:10m", NOW)
    clean = parse_scenario("clean:US|*:2m:1s", NOW)
    updates, corrections = apply_control({s.scenario_id: s for s in (us, de)}, [truth_record(clean)], NOW + 60_000)
    assert corrections == updates == [us.ended_at(NOW + 2 * MIN)]
    assert corrections[0].scenario_id == us.scenario_id and corrections[0].end_ms == NOW + 2 * MIN


def test_bad_control_records_are_skipped() -> None:
    bad = TruthRecord(scenario_id="x", scenario="mystery", segments=[], start_ms=NOW, end_ms=NOW + 1, magnitude=1)
    assert apply_control({}, [bad], NOW) == ([], [])
