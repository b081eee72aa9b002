"""The events a model produces: records that decode, clicks that name their impression, columns that match."""

from __future__ import annotations

import numpy as np

from adwatch.contracts import segment_key
from adwatch_dev.measure import decoded
from adwatch_generator.events import ORPHAN_CLICK, EventBatch
from adwatch_generator.scenarios import Scenario
from adwatch_generator.traffic import MINUTE_MS, TrafficModel

WEDNESDAY = 1_736_899_200_000  # 2025-01-15T00:00:00Z


def test_impressions_carry_revenue_and_clicks_follow_their_impression() -> None:
    model = TrafficModel(seed=5, rate=400)
    events = decoded(model.generate(WEDNESDAY, WEDNESDAY + 2 * MINUTE_MS))
    impressions = {e.event_id: e for e in events if e.event_type == "impression"}
    clicks = [e for e in events if e.event_type == "click"]
    assert clicks and all(e.revenue_usd > 0 for e in impressions.values())
    for click in clicks:
        shown = impressions[click.impression_id]  # type: ignore[index]
        assert 0 < click.event_time_ms - shown.event_time_ms <= 30_000
        assert (
            segment_key(click.country, click.ad_format),
            click.placement_id,
            click.user_hash,
            click.campaign_id,
            click.dimensions,
        ) == (
            segment_key(shown.country, shown.ad_format),
            shown.placement_id,
            shown.user_hash,
            shown.campaign_id,
            shown.dimensions,
        )
        assert click.revenue_usd == 0.0
    assert len({e.event_id for e in events}) == len(events)
    times = [e.event_time_ms for e in events]
    assert times == sorted(times)
    assert all(WEDNESDAY <= t < WEDNESDAY + 2 * MINUTE_MS for t in times)


def test_unencoded_columns_equal_the_encoded_events() -> None:
    model = TrafficModel(seed=6, rate=300)
    scenario = Scenario(
        "click_flood_without_impressions", (segment_key("US", "banner"),), WEDNESDAY + 10_000, WEDNESDAY + 50_000, 2.0
    )
    encoded = EventBatch.concat(list(model.generate(WEDNESDAY, WEDNESDAY + MINUTE_MS, [scenario])))
    bare = EventBatch.concat(list(model.generate(WEDNESDAY, WEDNESDAY + MINUTE_MS, [scenario], encode=False)))
    assert bare.values == [] and len(bare) == len(encoded) == len(encoded.values)
    assert np.array_equal(bare.times_ms, encoded.times_ms) and np.array_equal(bare.kinds, encoded.kinds)
    events = decoded([encoded])
    assert [e.event_time_ms for e in events] == encoded.times_ms.tolist()
    assert [segment_key(e.country, e.ad_format) for e in events] == [
        model.segment_keys[i] for i in encoded.segment_index.tolist()
    ]
    assert [k.decode() for k in encoded.keys] == [segment_key(e.country, e.ad_format) for e in events]
    assert [e.revenue_usd for e in events] == encoded.revenue_usd.tolist()
    orphans = [e for e, k in zip(events, encoded.kinds.tolist(), strict=True) if k == ORPHAN_CLICK]
    assert orphans and all(e.event_type == "click" and e.impression_id is None for e in orphans)
