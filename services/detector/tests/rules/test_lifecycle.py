"""Table tests of the firing/resolved state machine (window start times are the only clock)."""

from __future__ import annotations

import pytest

from adwatch_detector.rules.base import Check
from adwatch_detector.rules.lifecycle import Lifecycle, step

MIN = 60_000


def check(breach: bool, in_band: bool = False, recovered: bool = True) -> Check:
    return Check("traffic_spike", "impressions", 1.0, 1.0, 0.0, 2.0, 1, 0.5, 0.0, breach, in_band, recovered, "low")


@pytest.mark.parametrize(
    ("life", "c", "cooldown_windows", "status", "firing_after"),
    [
        pytest.param(Lifecycle(), check(True), 0, "firing", True, id="breach-fires"),
        pytest.param(Lifecycle(), check(False, True), 0, None, False, id="quiet-stays-quiet"),
        pytest.param(Lifecycle(firing=True), check(True), 0, None, True, id="fires-once"),
        pytest.param(
            Lifecycle(firing=True, in_band=2), check(False, True), 0, "resolved", False, id="third-in-band-resolves"
        ),
        pytest.param(Lifecycle(firing=True, in_band=1), check(False, True), 0, None, True, id="second-in-band-waits"),
        pytest.param(
            Lifecycle(firing=True, in_band=2),
            check(False, True, recovered=False),
            0,
            None,
            True,
            id="needs-evidence-of-recovery",
        ),
        pytest.param(Lifecycle(firing=True, in_band=2), check(False, False), 0, None, True, id="flicker-resets"),
        pytest.param(Lifecycle(resolved_ms=95 * MIN), check(True), 10, None, False, id="in-cooldown"),
        pytest.param(Lifecycle(resolved_ms=90 * MIN), check(True), 10, "firing", True, id="cooldown-over"),
    ],
)
def test_step(life: Lifecycle, c: Check, cooldown_windows: int, status: str | None, firing_after: bool) -> None:
    assert step(life, c, 100 * MIN, cooldown_windows * MIN, 3) == status
    assert life.firing is firing_after


def test_resolve_clears_the_evidence() -> None:
    life = Lifecycle(firing=True, in_band=2, cusum=9.0, recovery=4.0)
    assert step(life, check(False, True), 100 * MIN, 0, 3) == "resolved"
    assert (life.cusum, life.recovery, life.resolved_ms) == (0.0, 0.0, 100 * MIN)
