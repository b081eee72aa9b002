"""The long tail below the cells, and scenarios on segments of any dimensions, measured on generated events."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from adwatch.contracts import AdEvent, TruthRecord, decode, encode, event_dimensions, parse_segment_id, segment_key
from adwatch_dev.measure import decoded, expected_volumes, minute_totals, segment_minute_totals
from adwatch_generator.__main__ import main
from adwatch_generator.catalog import DEVICE_OSES, EXCHANGES, SEGMENTS, top_segment_id, top_values
from adwatch_generator.events import CLICK, IMPRESSION, ORPHAN_CLICK, EventBatch
from adwatch_generator.scenarios import (
    ScenarioError,
    apply_control,
    parse_scenario,
    resolve_segments,
    segments_overlap,
    truth_record,
)
from adwatch_generator.traffic import MINUTE_MS, TrafficModel

NOW = 1_736_960_400_000  # 2025-01-15T17:00:00Z
MIN = MINUTE_MS


def _in(event: AdEvent, segment: str) -> bool:
    dims = event_dimensions(event)
    return all(dims.get(name) == value for name, value in parse_segment_id(segment).items())


def _batch(model: TrafficModel, minutes: int, specs: tuple[str, ...] = (), encode: bool = False) -> EventBatch:
    scenarios = [parse_scenario(spec, NOW) for spec in specs]
    return EventBatch.concat(list(model.generate(NOW, NOW + minutes * MIN, scenarios, encode=encode)))


# --- the long tail ------------------------------------------------------------------------------
def test_catalogue_has_thousands_of_apps_placements_and_campaigns() -> None:
    apps = {app for s in SEGMENTS for app, _ in s.placements}
    placements = {p for s in SEGMENTS for _, p in s.placements}
    campaigns = {c for s in SEGMENTS for c in s.campaigns}
    assert len(apps) >= 1000 and len(placements) >= 5000 and len(campaigns) >= 1000
    # shared across cells: the big ones everywhere, the tail in a few
    assert all(top_values("app_id", 1)[0][0] in {a for a, _ in s.placements} for s in SEGMENTS)
    cells_per_campaign = Counter(c for s in SEGMENTS for c in s.campaigns)
    assert max(cells_per_campaign.values()) == len(SEGMENTS) and min(cells_per_campaign.values()) <= 2
    assert {s.exchanges for s in SEGMENTS} == {EXCHANGES} and {s.device_oses for s in SEGMENTS} == {DEVICE_OSES}


def test_catalogue_is_the_same_whatever_the_run_seed() -> None:
    a, b = TrafficModel(seed=1), TrafficModel(seed=2)
    assert a.inventory is b.inventory  # one structure, built once
    assert top_values("campaign_id", 3, country="US", ad_format="banner") == top_values(
        "campaign_id", 3, country="US", ad_format="banner"
    )


@pytest.fixture(scope="module")
def hour_of_traffic() -> tuple[TrafficModel, EventBatch]:
    model = TrafficModel(seed=13, rate=3000)
    return model, _batch(model, 10)


@pytest.mark.parametrize("dimension", ["app_id", "campaign_id", "placement_id"])
def test_generated_dimensions_are_zipf_like_with_thousands_of_values(
    hour_of_traffic: tuple[TrafficModel, EventBatch], dimension: str
) -> None:
    model, batch = hour_of_traffic
    group = {"app_id": 0, "placement_id": 0, "campaign_id": 1}[dimension]
    imps = batch.kinds == IMPRESSION
    codes = model.inventory.values[dimension][batch.inventory[imps, group]]
    counts = np.sort(np.bincount(codes))[::-1]
    counts = counts[counts > 0]
    assert len(counts) >= 1000  # thousands of distinct values seen in ten minutes
    share = counts / counts.sum()
    assert share[: max(1, len(share) // 100)].sum() > 0.2  # the top 1% carry a fifth of the traffic or more
    assert np.median(counts) < counts[0] / 100  # ... and the typical value is small
    ranks = np.arange(10, 500)
    slope = np.polyfit(np.log(ranks + 1), np.log(counts[ranks]), 1)[0]
    assert -2.0 < slope < -0.6  # a power law in rank: a long tail, not a cliff


def test_every_event_carries_the_extra_dimensions_and_validates_against_the_contract() -> None:
    model = TrafficModel(seed=8, rate=500)
    scenario = parse_scenario(f"click_flood_without_impressions:{top_segment_id('app_id')}:0:1m:2", NOW)
    batch = EventBatch.concat(list(model.generate(NOW, NOW + MIN, [scenario])))
    events = decoded([batch])
    assert {e.event_type for e in events} == {"impression", "click"} and batch.count(ORPHAN_CLICK) > 0
    orphans = [e for e, kind in zip(events, batch.kinds.tolist(), strict=True) if kind == ORPHAN_CLICK]
    assert all(_in(e, scenario.segments[0]) and e.impression_id is None for e in orphans)
    for event in events:
        assert decode(encode(event), AdEvent) == event
        assert set(event.dimensions) == {"exchange", "device_os"}
        assert event.dimensions["exchange"] in EXCHANGES and event.dimensions["device_os"] in DEVICE_OSES
        assert event.schema_version == 2
    assert len({e.app_id for e in events}) > 300 and len({e.campaign_id for e in events}) > 300
    assert {e.dimensions["device_os"] for e in events} == set(DEVICE_OSES)
    # the columns say the same as the JSON
    for name in ("app_id", "campaign_id", "placement_id", "exchange", "device_os"):
        group = {"app_id": 0, "placement_id": 0, "campaign_id": 1, "exchange": 2, "device_os": 3}[name]
        names = model.inventory.names[name]
        column = [names[c] for c in model.inventory.values[name][batch.inventory[:, group]].tolist()]
        assert column == [event_dimensions(e)[name] for e in events]


# --- scenarios on any segment -------------------------------------------------------------------
def test_a_campaign_ctr_collapse_lowers_only_that_campaigns_clicks() -> None:
    campaign = top_values("campaign_id", 1, country="US", ad_format="rewarded_video")[0][0]
    target = f"campaign_id={campaign}"
    model = TrafficModel(seed=17, rate=2000)
    clean = decoded([_batch(model, 3, encode=True)])
    hit = decoded([_batch(model, 3, (f"ctr_drop:{target}:0:3m:0.3",), encode=True)])

    def ctr(events: list[AdEvent], inside: bool) -> float:
        mine = [e for e in events if (e.campaign_id == campaign) == inside]
        return sum(e.event_type == "click" for e in mine) / sum(e.event_type == "impression" for e in mine)

    assert ctr(hit, True) / ctr(clean, True) == pytest.approx(0.3, rel=0.15)
    # a CTR factor draws no extra random numbers: the same impressions, and the same ones clicked elsewhere
    assert [e for e in hit if e.event_type == "impression"] == [e for e in clean if e.event_type == "impression"]

    shown = {e.event_id: e.event_time_ms for e in clean if e.event_type == "impression"}
    settled = NOW + 3 * MIN - 30_000  # later impressions may be clicked after the run ends (delays differ)

    def clicked(events: list[AdEvent], inside: bool) -> set[str]:
        ids = {
            e.impression_id or "" for e in events if e.event_type == "click" and (e.campaign_id == campaign) == inside
        }
        return {i for i in ids if shown[i] < settled}

    assert clicked(hit, False) == clicked(clean, False) and ctr(hit, False) == pytest.approx(
        ctr(clean, False), rel=0.01
    )
    assert clicked(hit, True) < clicked(clean, True)  # the campaign only lost clicks


def test_one_app_on_one_format_goes_dark_and_its_other_formats_do_not() -> None:
    app = top_values("app_id", 1, country="US")[0][0]
    model = TrafficModel(seed=5, rate=3000)
    banner, native = f"ad_format=banner,app_id={app}", f"ad_format=native,app_id={app}"
    clean = _batch(model, 4)
    dark = _batch(model, 4, (f"traffic_drop:{banner}:0:4m:0",))
    imps_clean, imps_dark = clean.kinds == IMPRESSION, dark.kinds == IMPRESSION
    assert (model.segment_mask(clean, banner) & imps_clean).sum() > 1000
    assert (model.segment_mask(dark, banner) & imps_dark).sum() == 0
    for other in (native, f"app_id={top_values('app_id', 2)[1][0]}", segment_key("US", "banner")):
        before = (model.segment_mask(clean, other) & imps_clean).sum()
        after = (model.segment_mask(dark, other) & imps_dark).sum()
        expected = before
        if other == segment_key("US", "banner"):  # the app's US banner traffic is part of US banner
            expected = before - (model.segment_mask(clean, f"{banner},country=US") & imps_clean).sum()
        assert after == pytest.approx(expected, rel=0.05)
    assert np.array_equal(dark.affected, model.segment_mask(dark, banner))  # only the app's banner events... none left
    assert not dark.affected.any()


def test_a_campaign_traffic_spike_is_exact_and_marks_only_its_events() -> None:
    campaign = top_segment_id("campaign_id", country="DE", ad_format="banner")
    model = TrafficModel(seed=6, rate=3000)
    clean, spiked = _batch(model, 5), _batch(model, 5, (f"traffic_spike:{campaign}:0:5m:3",))
    mine_clean = model.segment_mask(clean, campaign) & (clean.kinds == IMPRESSION)
    mine = model.segment_mask(spiked, campaign) & (spiked.kinds == IMPRESSION)
    assert mine.sum() / mine_clean.sum() == pytest.approx(3.0, rel=0.05)
    rest_clean = ~model.segment_mask(clean, campaign) & (clean.kinds == IMPRESSION)
    rest = ~model.segment_mask(spiked, campaign) & (spiked.kinds == IMPRESSION)
    assert rest.sum() / rest_clean.sum() == pytest.approx(1.0, rel=0.02)
    assert np.array_equal(spiked.affected, model.segment_mask(spiked, campaign))
    scenario = parse_scenario(f"traffic_spike:{campaign}:0:5m:3", NOW)
    expected = expected_volumes(model, NOW, NOW + 5 * MIN, [scenario]).impressions.sum()
    assert (spiked.kinds == IMPRESSION).sum() == pytest.approx(expected, rel=0.03)


def test_a_campaign_click_flood_names_only_that_campaign() -> None:
    campaign = top_segment_id("campaign_id", country="GB", ad_format="interstitial")
    model = TrafficModel(seed=4, rate=3000)
    batch = _batch(model, 3, (f"click_flood_without_impressions:{campaign}:0:3m:2",))
    orphans = batch.kinds == ORPHAN_CLICK
    mine = model.segment_mask(batch, campaign)
    assert orphans.sum() == pytest.approx(2 * (mine & (batch.kinds == CLICK)).sum(), rel=0.15)
    assert np.all(mine[orphans])


def test_a_country_traffic_scenario_moves_every_format_of_that_country_only() -> None:
    model = TrafficModel(seed=9, rate=2000)
    start = NOW + 5 * MIN
    scenario = parse_scenario("traffic_spike:country=DE:9m:4m:3", NOW)
    assert scenario.segments == ("country=DE",)
    seen = EventBatch.concat(list(model.generate(start, start + 10 * MIN, [scenario], encode=False)))
    base = EventBatch.concat(list(model.generate(start, start + 10 * MIN, encode=False)))
    inside = (seen.times_ms >= scenario.start_ms) & (seen.times_ms < scenario.end_ms)
    inside_base = (base.times_ms >= scenario.start_ms) & (base.times_ms < scenario.end_ms)
    for cell in model.segments:
        ours = (seen.segment_index == cell.index) & (seen.kinds == IMPRESSION) & inside
        theirs = (base.segment_index == cell.index) & (base.kinds == IMPRESSION) & inside_base
        expected = 3.0 if cell.country == "DE" else 1.0
        if theirs.sum() > 400:
            assert ours.sum() / theirs.sum() == pytest.approx(expected, rel=0.15), cell.key
    assert {model.segments[i].country for i in np.unique(seen.segment_index[seen.affected])} == {"DE"}
    assert {model.segments[i].ad_format for i in np.unique(seen.segment_index[seen.affected])} == {
        "banner",
        "interstitial",
        "rewarded_video",
        "native",
    }
    volumes = expected_volumes(model, start, start + 10 * MIN, [scenario])
    clean = expected_volumes(model, start, start + 10 * MIN)
    de = [i for i, s in enumerate(model.segments) if s.country == "DE"]
    assert np.allclose(volumes.impressions[de, 4:8] / clean.impressions[de, 4:8], 3.0)
    assert np.allclose(np.delete(volumes.impressions, de, axis=0), np.delete(clean.impressions, de, axis=0))


# --- parsing and truth --------------------------------------------------------------------------
def test_segments_parse_as_ids_of_any_dimensions_and_the_old_spelling() -> None:
    app = top_values("app_id", 1)[0][0]
    assert resolve_segments("US|banner,DE/native") == (segment_key("US", "banner"), segment_key("DE", "native"))
    assert resolve_segments("campaign_id=cmp-0042") == ("campaign_id=cmp-0042",)
    assert resolve_segments("country=US") == ("country=US",)
    assert resolve_segments("country=US,ad_format=banner") == (segment_key("US", "banner"),)  # a cell: its id
    assert resolve_segments(f"app_id={app},ad_format=banner") == (f"ad_format=banner,app_id={app}",)
    assert resolve_segments(f"campaign_id=cmp-0001;app_id={app},ad_format=banner") == (
        "campaign_id=cmp-0001",
        f"ad_format=banner,app_id={app}",
    )
    assert resolve_segments("campaign_id=cmp-0001,campaign_id=cmp-0002") == (
        "campaign_id=cmp-0001",
        "campaign_id=cmp-0002",
    )
    for bad, message in (
        ("campaign_id=nope", "no campaign_id 'nope'"),
        ("user_hash=abc", "unknown dimension"),
        ("XX|banner", "unknown segment"),
        ("US|banner,campaign_id=cmp-0001", "separate segment ids with ';'"),
    ):
        with pytest.raises(ScenarioError, match=message):
            resolve_segments(bad)


def test_truth_names_the_segment_ids_targeted(tmp_path: Path) -> None:
    campaign = top_segment_id("campaign_id", country="US", ad_format="banner")
    scenario = parse_scenario(f"ctr_drop:{campaign};US|native:1m:2m", NOW)
    record = decode(encode(truth_record(scenario)), TruthRecord)
    assert record.segments == [segment_key("US", "native"), campaign]
    truth = tmp_path / "truth.jsonl"
    args = ["backfill", "--start", "2025-01-15T17:00:00Z", "--end", "2025-01-15T17:02:00Z", "--rate", "50", "-q"]
    args += ["-o", str(tmp_path / "events.jsonl"), "--truth-file", str(truth)]
    args += ["--scenario", f"ecpm_drop:{campaign}:0:1m", "--scenario", "traffic_drop:country=JP:30s:1m:0"]
    assert main(args) == 0
    records = [decode(line, TruthRecord) for line in truth.read_bytes().splitlines()]
    assert [r.segments for r in records] == [[campaign], ["country=JP"]]


def test_clean_stops_the_scenarios_on_overlapping_segments() -> None:
    assert segments_overlap("country=US", "campaign_id=cmp-0001")
    assert segments_overlap("country=US", segment_key("US", "banner"))
    assert not segments_overlap("country=US", segment_key("DE", "banner"))
    assert not segments_overlap("ad_format=banner,app_id=a", "ad_format=native,app_id=a")
    on_campaign = parse_scenario("ctr_drop:campaign_id=cmp-0001:0:10m", NOW)
    in_de = parse_scenario("ctr_drop:country=DE:0:10m", NOW)
    clean = parse_scenario("clean:country=US:1m:1s", NOW)
    _, corrections = apply_control({s.scenario_id: s for s in (on_campaign, in_de)}, [truth_record(clean)], NOW)
    assert corrections == [on_campaign.ended_at(NOW + MIN)]


def test_top_values_rank_a_cells_campaigns_and_apps_by_traffic() -> None:
    top = top_values("campaign_id", 5, country="US", ad_format="banner")
    assert len(top) == 5 and [share for _, share in top] == sorted((share for _, share in top), reverse=True)
    us_banner = next(s for s in SEGMENTS if s.key == segment_key("US", "banner"))
    assert top[0][0] in us_banner.campaigns and 0 < sum(share for _, share in top) < 1
    assert top_segment_id("app_id", country="JP") == f"app_id={top_values('app_id', 1, country='JP')[0][0]}"
    assert top_values("ad_format", 4) and top_values("device_os", 1, country="IN")[0][0] == "android"
    with pytest.raises(ValueError, match="unknown dimension"):
        top_values("user_hash")


def test_draws_follow_each_cells_weights() -> None:
    model = TrafficModel(seed=1)
    inventory = model.inventory
    cell = next(s.index for s in SEGMENTS if s.key == segment_key("DE", "native"))
    positions = inventory.draw(np.random.default_rng(3), np.full(400_000, cell))
    for group in range(4):
        mine = np.flatnonzero(inventory.cell_of[group] == cell)
        assert np.all(np.isin(positions[:, group], mine))  # never another cell's options
        seen = np.bincount(positions[:, group] - mine[0], minlength=len(mine)) / len(positions)
        weight = inventory.weight[group][mine]
        big = weight > 0.002
        assert np.allclose(seen[big], weight[big], rtol=0.1)
        assert abs(seen[~big].sum() - weight[~big].sum()) < 0.01  # the tail as a whole


def test_segment_minute_totals_count_any_segment_from_the_columns() -> None:
    model = TrafficModel(seed=2, rate=1000)
    batches = list(model.generate(NOW, NOW + 3 * MIN, encode=False))
    cell, country, campaign = segment_key("US", "banner"), "country=US", top_segment_id("campaign_id")
    seen = segment_minute_totals(model, batches, [cell, country, campaign], NOW, NOW + 3 * MIN)
    by_cell = minute_totals(batches, len(model.segments), NOW, NOW + 3 * MIN)
    assert np.array_equal(seen.impressions[0], by_cell.impressions[model.segment_keys.index(cell)])
    us = [i for i, s in enumerate(model.segments) if s.country == "US"]
    assert np.array_equal(seen.clicks[1], by_cell.clicks[us].sum(axis=0))
    share = top_values("campaign_id", 1)[0][1]
    assert seen.impressions[2].sum() / by_cell.impressions.sum() == pytest.approx(share, rel=0.05)


def test_the_segments_command_lists_the_top_values_to_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["segments", "--top", "campaign_id", "--country", "US", "--ad-format", "banner", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert (
        top_segment_id("campaign_id", country="US", ad_format="banner") in out and "ad_format=banner,country=US" in out
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["segments", "--top", "user_hash"])
    assert exit_info.value.code == 2 and "unknown dimension" in capsys.readouterr().err
