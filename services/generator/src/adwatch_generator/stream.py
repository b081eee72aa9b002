"""Event time moving forward: the generator's clock over the traffic model.

A live run and a backfill both advance one :class:`EventStream`; it holds what a slice
produced too early (clicks that land after the slice) until their time comes, and the
scenarios a drill adds while it runs. Kept apart from the model, which never holds state
between slices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adwatch_generator.events import EventBatch
from adwatch_generator.scenarios import Scenario

if TYPE_CHECKING:
    from adwatch_generator.traffic import TrafficModel


class EventStream:
    """Event time moving forward: ``advance(until_ms)`` returns every event before ``until_ms``.

    Scenarios can be added or replaced while it runs (a drill reaching a live generator).
    """

    def __init__(
        self, model: TrafficModel, start_ms: int, scenarios: Sequence[Scenario], step_ms: int, encode: bool = True
    ) -> None:
        self.encode = encode
        if step_ms <= 0:
            raise ValueError("step_ms must be positive")
        self.model = model
        self.cursor_ms = int(start_ms)
        self.step_ms = int(step_ms)
        self._scenarios: dict[str, Scenario] = {s.scenario_id: s for s in scenarios}
        self._pending = EventBatch.empty()

    @property
    def scenarios(self) -> list[Scenario]:
        return list(self._scenarios.values())

    def upsert(self, scenario: Scenario) -> bool:
        """Add a scenario or replace the one with its id; False when nothing changed."""
        if self._scenarios.get(scenario.scenario_id) == scenario:
            return False
        self._scenarios[scenario.scenario_id] = scenario
        return True

    def active(self, t_ms: int) -> list[Scenario]:
        return [s for s in self._scenarios.values() if s.start_ms <= t_ms < s.end_ms and s.kind != "clean"]

    def next_boundary(self) -> int:
        return (self.cursor_ms // self.step_ms + 1) * self.step_ms

    def advance(self, until_ms: int) -> EventBatch:
        parts = [self._pending]
        scenarios = [s for s in self._scenarios.values() if s.kind != "clean"]
        while self.cursor_ms < until_ms:
            hi = min(self.next_boundary(), until_ms)
            relevant = [s for s in scenarios if s.start_ms < hi and s.end_ms > self.cursor_ms]
            parts.append(self.model.make_slice(self.cursor_ms, hi, relevant, self.encode))
            self.cursor_ms = hi
        ready, self._pending = EventBatch.concat(parts).split(until_ms)
        return ready
