"""The ``value`` rule on synthetic gauge series: a daily cycle with noise, a spike, a level shift."""

from __future__ import annotations

import math
import random

import pytest

from adwatch.contracts import Alert, SegmentWindow
from adwatch_detector.rules import RULE_SETS, RuleSettings, SegmentState, detect_windows, make_rules
from adwatch_detector.rules.value import Value, ValueState

STEP = 300_000  # one reading every 5 minutes
DAY = 86_400_000


def gauge(
    n: int, seed: int = 7, spike: tuple[int, float] | None = None, shift: tuple[int, float] | None = None
) -> list[float]:
    """eCPM-like readings: 100 with a daily cycle of +-20 and noise sd 2, plus an optional spike
    (at row, by amount) or a level shift (from row, by amount)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = 100.0 + 20.0 * math.sin(2 * math.pi * i * STEP / DAY) + rng.gauss(0.0, 2.0)
        if spike is not None and i == spike[0]:
            x += spike[1]
        if shift is not None and i >= shift[0]:
            x += shift[1]
        out.append(x)
    return out


def windows(values: list[float | None]) -> list[SegmentWindow]:
    return [
        SegmentWindow(
            window_start_ms=i * STEP,
            window_end_ms=(i + 1) * STEP,
            dimensions={"metric": "ecpm_usd"},
            impressions=0,
            clicks=0,
            revenue_usd=0.0,
            value=v,
        )
        for i, v in enumerate(values)
    ]


def value_alerts(values: list[float | None], rules: RuleSettings | None = None) -> list[Alert]:
    _, alerts = detect_windows(None, windows(values), rules or RuleSettings(), 0)
    return [a for a in alerts if a.alert_type == "value_anomaly"]


DAYS4 = 4 * 288


def test_a_clean_seasonal_series_does_not_fire() -> None:
    """Four days of a daily cycle with noise: the profile and the robust scale absorb it."""
    for seed in range(3):
        assert value_alerts(gauge(DAYS4, seed=seed)) == []


@pytest.mark.parametrize(
    ("spike", "direction"),
    [pytest.param(90.0, 1, id="up"), pytest.param(-90.0, -1, id="down")],
)
def test_a_spike_fires_in_its_direction(spike: float, direction: int) -> None:
    at = 3 * 288 + 100
    alerts = value_alerts(gauge(DAYS4, spike=(at, spike)))
    firing = [a for a in alerts if a.status == "firing"]
    assert len(firing) == 1
    (alert,) = firing
    assert alert.window_start_ms == at * STEP and alert.metric == "value" and alert.rule == "value"
    assert direction * (alert.current - alert.expected) > 80.0
    assert alert.severity == "high" and alert.p_value < 1e-6


def test_a_level_shift_fires_once_within_a_few_readings() -> None:
    """A drop of 15 (7.5 noise sds, under the one-window threshold): the CUSUM catches it."""
    at = 3 * 288 + 40
    alerts = value_alerts(gauge(DAYS4, shift=(at, -15.0)))
    firing = [a for a in alerts if a.status == "firing"]
    assert len(firing) == 1
    assert at * STEP <= firing[0].window_start_ms <= (at + 5) * STEP
    assert firing[0].current < firing[0].expected


def test_windows_without_a_value_are_ignored() -> None:
    """Count windows (value None) make no value checks and leave the rule's state as it was."""
    values: list[float | None] = [*gauge(50), *([None] * 20), *gauge(50, seed=8)]
    seen: list[SegmentWindow] = []
    state, _ = detect_windows(
        None, windows(values), RuleSettings(), 0, on_check=lambda w, c: seen.append(w) if c.metric == "value" else None
    )
    assert len(seen) == 99 and all(w.value is not None for w in seen)  # the first reading only starts the level
    rule_state = state.rules["value"].state
    assert isinstance(rule_state, ValueState) and rule_state.windows == 100


def test_a_count_segment_carries_no_value_state() -> None:
    """Count windows never reach the rule, and its slot is made on the first value window only
    (a count segment's state bytes and time per window stay what they were)."""
    checks: list[str] = []
    state, _ = detect_windows(
        None, windows([None] * 30), RuleSettings(), 0, on_check=lambda w, c: checks.append(c.alert_type)
    )
    assert "value_anomaly" not in checks and "value" not in state.rules
    state, _ = detect_windows(state, windows([*([None] * 30), 5.0]), RuleSettings(), 0)
    assert state.rules["value"].state.windows == 1


def test_state_round_trips_through_bytes() -> None:
    """The state after a day (profile learnt) decodes to the same state, and goes on the same."""
    values = gauge(400)
    state, _ = detect_windows(None, windows(values[:300]), RuleSettings(), 0)
    again = SegmentState.from_bytes(state.to_bytes())
    assert again.rules["value"].state == state.rules["value"].state
    rest = windows(values)[300:]
    a, alerts_a = detect_windows(state, rest, RuleSettings(), 0)
    b, alerts_b = detect_windows(again, rest, RuleSettings(), 0)
    assert a.to_bytes() == b.to_bytes() and alerts_a == alerts_b


def test_the_value_rule_runs_in_both_rule_sets() -> None:
    assert all("value" in ids for ids in RULE_SETS.values())
    classic = RuleSettings(rule_set="classic")
    firing = [a for a in value_alerts(gauge(DAYS4, spike=(3 * 288, 80.0)), classic) if a.status == "firing"]
    assert [a.rule_set for a in firing] == ["classic"]


def novelty_rule() -> tuple[Value, ValueState]:
    rule = Value(RuleSettings())
    state = ValueState(lo=0.0, hi=10.0, prev=0.0, seen=[0] * sum(rule.own.novelty_bins), windows=1)
    return rule, state


def test_context_novelty_votes_on_new_transitions_only() -> None:
    """A transition between bins is new once on every grid; seen again, no grid calls it new."""
    rule, state = novelty_rule()
    assert rule._novelty(state, 10.0) == 1.0  # 0 -> 10: never seen on any grid
    assert rule._novelty(state, 0.0) == 1.0  # 10 -> 0: the reverse neither
    assert rule._novelty(state, 10.0) == 0.0  # 0 -> 10 again: seen everywhere
    assert len(state.seen) == sum(rule.own.novelty_bins)  # bounded: one small int per bin and grid
    assert all(row < 1 << max(rule.own.novelty_bins) for row in state.seen)


def test_context_novelty_keeps_what_it_saw_when_the_range_widens() -> None:
    """Widening the range re-bins the seen transitions (an old bin stands for every new bin it
    overlaps): a back-and-forth between the same two levels is not new on the wider grid; a jump
    to the new extreme is."""
    rule, state = novelty_rule()
    for x in [0.0, 10.0] * 5:
        rule._novelty(state, x)
    assert rule._novelty(state, 30.0) == 1.0  # a new extreme: a new context everywhere
    votes = [rule._novelty(state, x) for x in (0.0, 10.0, 0.0, 10.0)]  # 30 -> 0 is new, then the known pair
    assert votes[0] > 0.0 and votes[1:] == [0.0, 0.0, 0.0]


def test_the_novelty_vote_adds_evidence_to_the_surprise() -> None:
    """-log10 p = the surprise's decades + novelty_decades x vote; no vote, the surprise alone."""
    rule = Value(RuleSettings())
    assert rule._evidence(1e-3, 0.0) == 1e-3
    assert math.isclose(-math.log10(rule._evidence(1e-3, 0.5)), 3.0 + 0.5 * rule.own.novelty_decades)


def test_a_lone_reading_in_a_known_context_pages_only_with_the_gate_off() -> None:
    """Context gate: five lone +40 readings on days 1-3 teach the transitions to and from that
    level; a sixth on day 4 (20 noise sds, one reading) is far but not new, so it does not page
    (the CUSUMs want more than one reading); with ``context_gate`` off the one-window test pages it."""
    values: list[float | None] = list(gauge(DAYS4))
    late = 3 * 288 + 100
    for at in (300, 420, 540, 660, 780, late):
        values[at] = float(values[at] or 0.0) + 40.0
    off = make_rules(rules={"value": {"context_gate": False}})
    on_pages = [a.window_start_ms for a in value_alerts(values) if a.status == "firing"]
    off_pages = [a.window_start_ms for a in value_alerts(values, off) if a.status == "firing"]
    assert late * STEP not in on_pages and late * STEP in off_pages
    assert set(on_pages) <= set(off_pages)  # the gate only removes pages


def test_the_gate_leaves_the_warmup_and_a_rule_without_grids_alone() -> None:
    """Before ``novelty_warmup`` readings (no vote yet) and without novelty grids the one-window
    test judges a far reading as without the gate: the gate needs a vote to defer to."""
    young, no_grids = {"novelty_warmup": 200}, {"novelty_bins": []}
    for at, own in ((150, young), (299, no_grids)):
        values: list[float | None] = list(gauge(at + 1))
        values[at] = 1000.0
        p: dict[bool, float] = {}
        for gate in (True, False):
            rules = make_rules(rules={"value": {**own, "context_gate": gate}})
            last: dict[str, float] = {}
            detect_windows(None, windows(values), rules, 0, on_check=lambda w, c, d=last: d.update(p=c.p_value))
            p[gate] = last["p"]
        assert p[True] == p[False] < 1e-3, at
