"""``click_without_impression`` in the default set: against each segment's own orphan-click baseline.

Real traffic has a trickle of clicks without impressions (tracking loss); a flood is a bot or a
broken tracker. Pure and fast: synthetic windows through the rule engine, no Spark.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from adwatch.contracts import Alert, SegmentWindow
from adwatch_detector.rules import RULES, RuleSettings, SegmentState, detect_windows, make_rules
from adwatch_detector.rules.lifecycle import Lifecycle
from adwatch_detector.rules.orphan import OrphanClicks, OrphanState
from adwatch_detector.rules.state import STATE_VERSION
from adwatch_dev.simulate import orphan_trickle, orphan_windows

MIN = 60_000
DEFAULT = RuleSettings()
ORPHAN = "click_without_impression"


def windows(orphans: np.ndarray, imps: float = 600.0, ctr: float = 0.02, seed: int = 1) -> list[SegmentWindow]:
    """Steady traffic with the given orphan clicks per minute (Poisson impressions, binomial clicks)."""
    return orphan_windows(orphans, np.random.default_rng(seed), imps, ctr)


def run(ws: list[SegmentWindow], rules: RuleSettings = DEFAULT, batch: int = 5) -> list[Alert]:
    state: SegmentState | None = None
    alerts: list[Alert] = []
    for i in range(0, len(ws), batch):
        chunk = ws[i : i + batch]
        state, new = detect_windows(state, chunk, rules, chunk[-1].window_end_ms)
        state = SegmentState.from_bytes(state.to_bytes())  # through the checkpoint format
        alerts += new
    return [a for a in alerts if a.alert_type == ORPHAN]


def trickle(rng: np.random.Generator, minutes: int, low: float = 3.0, high: float = 8.0) -> np.ndarray:
    """3-8 orphan clicks a minute: the rate wanders within the day and minute by minute."""
    return orphan_trickle(rng, minutes, low, high)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_steady_trickle_of_orphan_clicks_never_alerts_over_a_day(seed: int) -> None:
    rng = np.random.default_rng(seed)
    orphans = trickle(rng, 1440)
    assert 2.5 < orphans.mean() < 8.5 and orphans.max() >= 10, "a real trickle, bursty minutes included"
    assert run(windows(orphans, seed=seed)) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_bursty_trickle_never_alerts_over_a_day(seed: int) -> None:
    """Tracking loss comes in bunches: a rate that jumps minute by minute (gamma, CV 0.7, mean 5)."""
    rng = np.random.default_rng(200 + seed)
    orphans = rng.poisson(rng.gamma(2.0, 2.5, 1440))
    assert orphans.max() >= 20
    assert run(windows(orphans, seed=seed)) == []


@pytest.mark.parametrize("steady", [pytest.param(3, id="trickle-3"), pytest.param(8, id="trickle-8")])
def test_a_constant_trickle_never_alerts_over_a_day(steady: int) -> None:
    rng = np.random.default_rng(steady)
    assert run(windows(rng.poisson(steady, 1440), seed=steady)) == []


WARMUP = DEFAULT.rules[ORPHAN].warmup_windows  # the rule's own (the prior says orphans are rare)


def test_a_flood_of_hundreds_pages_critical_in_the_first_window_after_warm_up() -> None:
    warmup = WARMUP
    rng = np.random.default_rng(4)
    orphans = np.concatenate([rng.poisson(3, warmup), rng.poisson(300, 20), rng.poisson(3, 30)])
    alerts = run(windows(orphans, seed=4), batch=1)
    assert [a.status for a in alerts] == ["firing", "resolved"]
    fired = alerts[0]
    assert fired.window_start_ms == warmup * MIN, "the flood's first window"
    assert fired.severity == "critical"
    assert fired.current >= 250 and fired.expected < 6 and fired.band_low <= fired.expected <= fired.band_high
    assert fired.metric == "orphan_clicks" and fired.rule == ORPHAN and fired.p_value < 1e-12
    assert (warmup + 20) * MIN <= alerts[1].window_start_ms < (warmup + 30) * MIN


def test_25_a_minute_on_a_trickle_of_3_alerts_but_not_critical() -> None:
    rng = np.random.default_rng(5)
    onset, end = 240, 270
    orphans = np.concatenate([rng.poisson(3, onset), rng.poisson(25, end - onset), rng.poisson(3, 60)])
    alerts = run(windows(orphans, seed=5))
    assert [a.status for a in alerts] == ["firing", "resolved"]
    fired = alerts[0]
    assert onset * MIN <= fired.window_start_ms < (onset + 3) * MIN
    assert fired.severity in ("medium", "high"), fired.severity
    assert 2.0 < fired.expected < 4.5
    assert end * MIN <= alerts[1].window_start_ms < (end + 15) * MIN


def test_orphans_on_a_segment_that_never_had_any_page_critical() -> None:
    """The generator's click_flood_without_impressions: >= 6 orphan clicks a minute where there were none."""
    rng = np.random.default_rng(6)
    orphans = np.concatenate([np.zeros(180, dtype=int), rng.poisson(6, 30), np.zeros(30, dtype=int)])
    alerts = run(windows(orphans, seed=6), batch=1)
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert 180 * MIN <= alerts[0].window_start_ms < 182 * MIN and alerts[0].severity == "critical"


def evaluate(state: OrphanState, orphans: int, firing: bool = False) -> tuple[bool, str]:
    rule = OrphanClicks(DEFAULT)
    lives = {ORPHAN: Lifecycle(firing=firing)}
    (check,) = rule.evaluate(state, lives, windows(np.array([orphans]))[0])
    return check.breach, check.severity


def warm(rate: float, windows_seen: int = 600) -> OrphanState:
    """A baseline that has seen ``windows_seen`` windows at ``rate`` orphan clicks each."""
    rule = OrphanClicks(DEFAULT)
    state = OrphanState(windows=windows_seen)
    weight = rule.weight(state)
    state.orphans_m, state.squares_m = round(1000 * rate * weight), round(1000 * (rate + rate * rate) * weight)
    return state


@pytest.mark.parametrize(
    ("rate", "orphans", "breach", "severity"),
    [
        pytest.param(0.0, 3, False, None, id="three-on-none-is-not-an-alert"),
        pytest.param(0.0, 6, True, "critical", id="six-where-there-were-none"),
        pytest.param(5.0, 12, False, None, id="a-handful-above-a-trickle"),
        pytest.param(5.0, 16, False, None, id="x3-of-the-trickle-not-significant-alone"),
        pytest.param(3.0, 25, True, "high", id="x8-of-the-trickle"),
        pytest.param(3.0, 300, True, "critical", id="a-flood-of-hundreds"),
        pytest.param(20.0, 130, True, "critical", id="100-above-a-large-trickle"),
        pytest.param(20.0, 70, True, "high", id="50-above-a-large-trickle"),
    ],
)
def test_one_window_verdict_and_severity_by_size(rate: float, orphans: int, breach: bool, severity: str | None) -> None:
    got_breach, got_severity = evaluate(warm(rate), orphans)
    assert got_breach is breach
    if severity is not None:
        assert got_severity == severity


def test_warming_up_never_alerts_and_learns() -> None:
    state = OrphanState()
    for _ in range(WARMUP):
        assert evaluate(state, 300)[0] is False
    assert state.windows == WARMUP and state.orphans_m > 0


def test_the_baseline_is_frozen_while_firing() -> None:
    state = warm(3.0)
    before = msgspec.structs.replace(state)
    evaluate(state, 4, firing=True)
    assert (state.orphans_m, state.windows, state.frozen) == (before.orphans_m, before.windows, 1)
    evaluate(state, 4, firing=False)
    assert state.windows == before.windows + 1 and state.frozen == 0, "learns again once resolved"


def test_the_warm_up_defaults_to_the_sets_when_unset() -> None:
    assert WARMUP == 5
    rule = OrphanClicks(make_rules(rules={ORPHAN: {"warmup_windows": None}}))
    assert rule.warmup == DEFAULT.default.warmup_windows


def test_the_severity_follows_the_settings() -> None:
    rules = make_rules(rules={ORPHAN: {"critical_excess": 20.0}})
    rule = OrphanClicks(rules)
    assert rule.severity(25.0, 3.0) == "critical"
    assert OrphanClicks(DEFAULT).severity(25.0, 3.0) == "high"


def test_a_checkpoint_of_the_stateless_rule_still_reads_and_its_alert_resolves() -> None:
    """Before the baseline the rule had NoState (an empty array): old bytes decode as a fresh
    baseline, the lifecycle survives, and an alert firing at the upgrade resolves."""
    assert RULES[ORPHAN].state_type is OrphanState
    firing = Lifecycle(firing=True, fired_ms=99 * MIN)
    old = msgspec.msgpack.encode((STATE_VERSION, 99 * MIN, {ORPHAN: [[], {ORPHAN: firing}]}))
    state = SegmentState.from_bytes(old)
    slot = state.rules[ORPHAN]
    assert slot.state == OrphanState() and slot.lives[ORPHAN] == firing
    later = [
        msgspec.structs.replace(w, window_start_ms=(100 + i) * MIN, window_end_ms=(101 + i) * MIN)
        for i, w in enumerate(windows(np.zeros(20, dtype=int)))
    ]
    state, alerts = detect_windows(state, later, DEFAULT, 0)
    assert [(a.alert_type, a.status) for a in alerts] == [(ORPHAN, "resolved")]
    assert SegmentState.from_bytes(state.to_bytes()).rules[ORPHAN].state.windows > 0


def test_the_classic_set_keeps_the_stateless_tolerance() -> None:
    classic = make_rules(rule_set="classic")
    rule = RULES[ORPHAN](classic)
    (check,) = rule.evaluate(OrphanState(), {ORPHAN: Lifecycle()}, windows(np.array([3]))[0])
    assert (check.breach, check.severity, check.band_high) == (True, "critical", pytest.approx(2 + 0.02 * check.volume))
    assert rule.windows_seen(OrphanState(windows=50)) == 0, "no baseline to warm up"


def test_a_trickle_that_follows_the_daily_cycle_of_clicks_never_pages() -> None:
    """Tracking loss is a share of the clicks (1% here): with clicks 30 a minute at night and 2,000
    at the evening peak, the orphans' expectation follows the window's clicks, not their daily mean."""
    from adwatch.contracts import SegmentWindow
    from adwatch_detector.rules import detect_windows

    rng = np.random.default_rng(11)
    out = []
    for k in range(3 * 1440):
        h = (k % 1440) / 60
        clicks = int(rng.poisson(30 + 1970 * math.exp(-(((h - 20.0) / 2.5) ** 2))))
        orphans = int(rng.poisson(0.01 * clicks))
        out.append(
            SegmentWindow(
                window_start_ms=k * MIN,
                window_end_ms=(k + 1) * MIN,
                dimensions={"country": "US"},
                impressions=clicks * 40,
                clicks=clicks + orphans,
                orphan_clicks=orphans,
                revenue_usd=clicks * 0.08,
            )
        )
    _, alerts = detect_windows(None, out, DEFAULT, 0)
    assert [a for a in alerts if a.alert_type == ORPHAN] == []
