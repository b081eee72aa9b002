"""The event stream: event time moving forward in any steps, scenarios changing while it runs."""

from __future__ import annotations

from adwatch.contracts import segment_key
from adwatch_generator.events import ORPHAN_CLICK
from adwatch_generator.scenarios import Scenario
from adwatch_generator.traffic import TrafficModel

WEDNESDAY = 1_736_899_200_000  # 2025-01-15T00:00:00Z


def test_generation_is_independent_of_the_stream_advancing_pattern() -> None:
    model = TrafficModel(seed=9, rate=300)
    whole = [v for b in model.generate(WEDNESDAY, WEDNESDAY + 20_000, step_ms=1000) for v in b.values]
    stream = model.stream(WEDNESDAY, step_ms=1000)
    pieces = [v for until in (2_000, 7_000, 15_000, 20_000) for v in stream.advance(WEDNESDAY + until).values]
    assert whole == pieces


def test_a_scenario_upserted_while_running_shapes_the_events_from_then_on() -> None:
    stream = TrafficModel(seed=9, rate=3000).stream(WEDNESDAY, step_ms=1000)
    before = stream.advance(WEDNESDAY + 10_000)
    flood = Scenario(
        "click_flood_without_impressions", (segment_key("US", "banner"),), WEDNESDAY, WEDNESDAY + 60_000, 2.0
    )
    assert stream.upsert(flood) and not stream.upsert(flood)
    assert stream.active(WEDNESDAY + 15_000) == [flood]
    during = stream.advance(WEDNESDAY + 20_000)
    assert before.count(ORPHAN_CLICK) == 0 < during.count(ORPHAN_CLICK)
    stopped = flood.ended_at(WEDNESDAY + 20_000)  # a drill's clean record: same id, earlier end
    assert stream.upsert(stopped) and stream.scenarios == [stopped]
    after = stream.advance(WEDNESDAY + 40_000)
    assert len(after) > 0 and after.count(ORPHAN_CLICK) == 0
