"""Table tests of the firing/resolved state machine (window start times are the only clock)."""

from __future__ import annotations

import pytest

from adwatch.contracts import Severity
from adwatch_detector.rules.base import Check
from adwatch_detector.rules.lifecycle import Episode, Lifecycle, Policy, step

MIN = 60_000
POLICY = Policy(resolve_windows=3)


def check(
    breach: bool,
    in_band: bool = False,
    recovered: bool = True,
    severity: Severity = "low",
    extreme: bool = False,
    current: float = 1.0,
    expected: float = 1.0,
    evidence: float = 50.0,
) -> Check:
    return Check(
        "traffic_spike",
        "impressions",
        current,
        expected,
        0.0,
        2.0,
        1,
        0.5,
        0.0,
        breach,
        in_band,
        recovered,
        severity,
        extreme=extreme,
        baseline=expected,
        evidence=evidence,
    )


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
    transition = step(life, c, 100 * MIN, Policy(resolve_windows=3, cooldown_ms=cooldown_windows * MIN))
    assert (transition.status if transition else None) == status
    assert life.firing is firing_after


def test_resolve_clears_the_evidence() -> None:
    life = Lifecycle(firing=True, in_band=2, cusum=9.0, episode=Episode(anchor=5.0))
    transition = step(life, check(False, True), 100 * MIN, POLICY)
    assert transition is not None and transition.status == "resolved"
    assert (life.cusum, life.episode, life.anchor, life.resolved_ms) == (0.0, None, -1.0, 100 * MIN)


def test_two_of_three_one_burst_does_not_fire_a_second_breach_does() -> None:
    """A one-minute burst that returns at once is not an alert; two breaching windows of three are."""
    policy = Policy(resolve_windows=3, confirm_windows=2, confirm_of=3)
    life = Lifecycle()
    assert step(life, check(True), 0, policy) is None
    assert step(life, check(False), MIN, policy) is None
    assert step(life, check(False), 2 * MIN, policy) is None
    assert step(life, check(False), 3 * MIN, policy) is None
    assert step(life, check(True), 4 * MIN, policy) is None, "the burst of minute 0 is out of the last three"
    fired = step(life, check(True), 6 * MIN, policy)  # minutes 4 and 6 of 4..6
    assert fired is not None and fired.status == "firing"


def test_an_extreme_window_fires_at_once_under_persistence() -> None:
    policy = Policy(resolve_windows=3, confirm_windows=2, confirm_of=3)
    fired = step(Lifecycle(), check(True, extreme=True, severity="high"), 0, policy)
    assert fired is not None and (fired.status, fired.severity) == ("firing", "high")


def test_a_worsening_episode_escalates_once_per_rise_and_resolves_with_its_peak_and_duration() -> None:
    life = Lifecycle()
    first = step(life, check(True, severity="low", expected=10.0), 0, POLICY)
    assert first is not None and life.anchor == 10.0, "the baseline before the episode is its anchor"
    assert step(life, check(True, severity="low"), MIN, POLICY) is None
    assert life.episode is not None and life.episode.anchor == 10.0
    up = step(life, check(True, severity="high"), 2 * MIN, POLICY)
    assert up is not None and (up.status, up.severity, up.previous_severity) == ("firing", "high", "low")
    assert step(life, check(True, severity="medium"), 3 * MIN, POLICY) is None, "never de-escalates"
    for k in (4, 5):
        assert step(life, check(False, True, severity="low"), k * MIN, POLICY) is None
    done = step(life, check(False, True, severity="low"), 6 * MIN, POLICY)
    assert done is not None and (done.status, done.severity, done.resolution) == ("resolved", "high", "recovered")
    assert done.duration_ms == 6 * MIN


def test_in_band_windows_that_pool_to_a_shifted_level_do_not_resolve() -> None:
    """The equivalence test: three windows each inside a wide band but together at 0.6x of the
    anchor are not a recovery (a level that settled at 0.6x never random-walks to resolved)."""
    policy = Policy(resolve_windows=3, equivalence_margin=0.2)
    life = Lifecycle(firing=True, fired_ms=0, episode=Episode(anchor=10.0))
    for k in range(1, 30):
        assert step(life, check(False, True, current=6.0, expected=10.0), k * MIN, policy) is None
    back = [step(life, check(False, True, current=10.0, expected=10.0), k * MIN, policy) for k in range(30, 60)]
    ends = [k for k, t in enumerate(back) if t is not None]
    assert len(ends) == 1 and back[ends[0]].status == "resolved", "resolves once the shifted windows fade from the pool"


def test_a_shift_that_lasts_is_accepted_as_the_new_normal() -> None:
    policy = Policy(resolve_windows=3, equivalence_margin=0.2, new_normal_windows=10)
    life = Lifecycle()
    assert step(life, check(True, severity="medium"), 0, policy) is not None
    transitions = [step(life, check(False, False, current=6.0, expected=10.0), k * MIN, policy) for k in range(1, 12)]
    ended = [t for t in transitions if t is not None]
    assert len(ended) == 1 and (ended[0].status, ended[0].resolution, ended[0].severity) == (
        "resolved",
        "new_normal",
        "medium",
    )
    assert not life.firing


def test_a_sparse_pool_waits_for_evidence_before_it_resolves() -> None:
    """Three in-band windows of a sparse segment (5 expected events each) say nothing about a
    20% margin: the pool grows until it carries the evidence (here: max_pool_windows first)."""
    policy = Policy(resolve_windows=3, equivalence_margin=0.2, pool_evidence=100.0, max_pool_windows=30)
    life = Lifecycle(firing=True, fired_ms=0, episode=Episode(anchor=10.0))
    ends = [
        step(life, check(False, True, current=10.0, expected=10.0, evidence=5.0), k * MIN, policy) for k in range(1, 40)
    ]
    assert [k for k, t in enumerate(ends, 1) if t is not None] == [30]
    life = Lifecycle(firing=True, fired_ms=0, episode=Episode(anchor=10.0))
    ends = [
        step(life, check(False, True, current=10.0, expected=10.0, evidence=50.0), k * MIN, policy) for k in range(1, 9)
    ]
    assert [k for k, t in enumerate(ends, 1) if t is not None] == [3], "50 events a window: resolve_windows"


def test_a_quiet_lifecycle_is_a_few_bytes() -> None:
    import msgspec

    assert len(msgspec.msgpack.encode(Lifecycle())) <= 40
