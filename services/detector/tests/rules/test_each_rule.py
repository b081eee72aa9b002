"""Table tests of each rule on its own: a state, one window, the expected verdict (no Spark, no broker).

Each row builds the rule from settings, puts its state where the row says (a warm baseline), feeds
one window and checks the Check (breach, in band, direction) and how the state moved.
"""

from __future__ import annotations

from typing import Any

import pytest

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules import RULES, RuleSettings, make_rules
from adwatch_detector.rules._classic import EmaState
from adwatch_detector.rules.ctr import CtrState
from adwatch_detector.rules.ecpm import EcpmState
from adwatch_detector.rules.lifecycle import Lifecycle
from adwatch_detector.rules.traffic import TrafficState

MIN = 60_000
DEFAULTS = RuleSettings()


def window(imps: int, clicks: int = 0, revenue: float = 0.0, orphans: int = 0) -> SegmentWindow:
    return SegmentWindow(
        window_start_ms=100 * MIN,
        window_end_ms=101 * MIN,
        country="US",
        ad_format="banner",
        impressions=imps,
        clicks=clicks,
        revenue_usd=revenue,
        orphan_clicks=orphans,
    )


def evaluate(
    rule_id: str, state: Any, w: SegmentWindow, settings: RuleSettings = DEFAULTS, firing: tuple[str, ...] = ()
) -> dict[str, Any]:
    rule = RULES[rule_id](settings)
    lives = {t: Lifecycle(firing=t in firing) for t in rule.alert_types}
    return {c.alert_type: c for c in rule.evaluate(state, lives, w)}


@pytest.mark.parametrize(
    ("imps", "clicks", "orphans", "breach", "excess"),
    [
        pytest.param(100, 2, 0, False, 0, id="clean"),
        pytest.param(100, 5, 2, False, 2, id="two-orphans-tolerated"),
        pytest.param(100, 8, 3, True, 3, id="three-orphans"),
        pytest.param(0, 6, 0, True, 6, id="clicks-without-any-impression"),
        pytest.param(200, 200, 7, True, 7, id="beyond-2-plus-2%-of-clicks"),
        pytest.param(200, 200, 6, False, 6, id="tolerance-grows-with-clicks"),
        pytest.param(200, 200, 0, False, 0, id="all-clicked-no-orphans"),
    ],
)
def test_click_without_impression(imps: int, clicks: int, orphans: int, breach: bool, excess: int) -> None:
    """The classic set's stateless tolerance (the default set's baseline form: test_orphan_baseline.py)."""
    check = evaluate(
        "click_without_impression", None, window(imps, clicks, orphans=orphans), make_rules(rule_set="classic")
    )["click_without_impression"]
    assert (check.breach, check.current, check.severity) == (breach, float(excess), "critical")
    assert check.in_band is not breach


WARM_TRAFFIC = dict(windows=100, level=600.0, trend=0.0, phi_num=0.0064 * 100, phi_den=100.0, frozen=0)


@pytest.mark.parametrize(
    ("state", "imps", "breach", "in_band"),
    [
        pytest.param(WARM_TRAFFIC, 600, False, True, id="on-forecast"),
        pytest.param(WARM_TRAFFIC, 700, False, True, id="within-noise"),
        pytest.param(WARM_TRAFFIC, 1800, True, False, id="x3-spike"),
        pytest.param(WARM_TRAFFIC, 200, False, True, id="drop-is-not-a-spike"),
        pytest.param({**WARM_TRAFFIC, "windows": 5}, 1800, False, False, id="warming-up"),
        pytest.param({**WARM_TRAFFIC, "level": 2.0}, 5, False, True, id="below-min-expected-count"),
    ],
)
def test_traffic_spike(state: dict[str, Any], imps: int, breach: bool, in_band: bool) -> None:
    s = TrafficState(**state)
    check = evaluate("traffic", s, window(imps))["traffic_spike"]
    assert (check.breach, check.in_band) == (breach, in_band)
    assert check.expected == pytest.approx(state["level"])
    assert s.windows == state["windows"] + 1


@pytest.mark.parametrize(
    ("imps", "frozen_before", "firing", "learns"),
    [
        pytest.param(600, 0, (), True, id="normal-window-learns"),
        pytest.param(1800, 0, (), False, id="anomalous-window-frozen"),
        pytest.param(600, 0, ("traffic_spike",), False, id="frozen-while-firing"),
        pytest.param(1800, 60, (), True, id="level-shift-after-max-freeze"),
    ],
)
def test_traffic_baseline_freezes_on_anomalies(
    imps: int, frozen_before: int, firing: tuple[str, ...], learns: bool
) -> None:
    s = TrafficState(**{**WARM_TRAFFIC, "level": 600.0, "frozen": frozen_before})
    evaluate("traffic", s, window(imps), firing=firing)
    assert (s.level != 600.0) is learns or (imps == 600 and s.level == 600.0)
    assert (s.frozen == 0) is learns


@pytest.mark.parametrize(
    ("imps", "breach", "in_band"),
    [
        pytest.param(600, False, True, id="normal"),
        pytest.param(60, True, False, id="outage-to-10pct-one-window"),
        pytest.param(0, True, False, id="dark"),
        pytest.param(420, False, False, id="0.7x-not-practical"),
        pytest.param(1800, False, True, id="spike-is-not-a-drop"),
    ],
)
def test_traffic_drop(imps: int, breach: bool, in_band: bool) -> None:
    s = TrafficState(**WARM_TRAFFIC)
    check = evaluate("traffic", s, window(imps))["traffic_drop"]
    assert (check.breach, check.in_band) == (breach, in_band)


def test_small_drops_page_through_evidence_over_windows() -> None:
    """A drop to 40% of a 50/min segment is not sure in one window; the CUSUM carries it in a few."""
    s = TrafficState(**{**WARM_TRAFFIC, "level": 50.0})
    rule = RULES["traffic"](DEFAULTS)
    lives = {t: Lifecycle() for t in rule.alert_types}
    fired = [next(c for c in rule.evaluate(s, lives, window(20)) if c.alert_type == "traffic_drop").breach]
    fired += [next(c for c in rule.evaluate(s, lives, window(20)) if c.alert_type == "traffic_drop").breach]
    fired += [next(c for c in rule.evaluate(s, lives, window(20)) if c.alert_type == "traffic_drop").breach]
    assert not fired[0] and any(fired[1:]), fired


def test_first_windows_set_the_traffic_level() -> None:
    s = TrafficState()
    assert evaluate("traffic", s, window(30)) == {}
    assert evaluate("traffic", s, window(600)) == {}
    assert (s.windows, s.level) == (2, 600.0)


def test_an_unexpected_long_silence_restarts_the_level_an_expected_one_keeps_it() -> None:
    """600 impressions a minute gone for 100 minutes nobody expected: nothing to forecast from, the
    next window restarts the level (and the rule warms up again instead of paging on the return).
    A silence in quarter-hours that were dark last time, at a low hour, keeps it."""
    from adwatch_detector.rules import season

    rule = RULES["traffic"](DEFAULTS)
    s = TrafficState(**WARM_TRAFFIC)
    rule.on_silence(s, 100, 0)
    assert (s.windows, s.level, s.trend) == (1, 600.0, 0.0)
    night = list(season.FLAT)
    night[2:5] = [1000, 1000, 1000]  # 02:00-05:00 at a tenth of the day's mean
    dark = b""
    for q in range(8, 20):  # 02:00-05:00 were dark last time
        dark = season.mark(dark, q, True)
    s = TrafficState(**WARM_TRAFFIC, season=night, season_since_ms=0, dark=dark)  # learnt for 10 days
    rule.on_silence(s, 120, 10 * season.DAY_MS + 2 * season.HOUR_MS)
    assert (s.windows, s.level) == (100, 600.0)


WARM_CTR = dict(clicks=0.02 * 50_000, imps=50_000.0, rho_num=1e-5, rho_den=1.0, frozen=0, windows=100)  # rho 1e-5


@pytest.mark.parametrize(
    ("clicks", "drop", "spike"),
    [
        pytest.param(100, False, False, id="on-baseline"),
        pytest.param(25, True, False, id="x0.25-drop"),
        pytest.param(300, False, True, id="x3-spike"),
        pytest.param(85, False, False, id="x0.85-too-small-to-page"),
    ],
)
def test_ctr(clicks: int, drop: bool, spike: bool) -> None:
    s = CtrState(**WARM_CTR)
    checks = evaluate("ctr", s, window(5000, clicks))
    assert (checks["ctr_drop"].breach, checks["ctr_spike"].breach) == (drop, spike)
    assert checks["ctr_drop"].expected == pytest.approx(0.02, rel=0.01)
    assert checks["ctr_drop"].current == clicks / 5000


@pytest.mark.parametrize(
    ("state", "w", "expected"),
    [
        pytest.param(WARM_CTR, window(0), {}, id="no-impressions-skipped"),
        pytest.param(
            {**WARM_CTR, "windows": 3}, window(5000, 5), {"ctr_drop": False, "ctr_spike": False}, id="warming-up"
        ),
        pytest.param(
            WARM_CTR,
            window(5000, 45, orphans=20),
            {"ctr_drop": True, "ctr_spike": False},
            id="orphan-clicks-do-not-count",
        ),
    ],
)
def test_ctr_edges(state: dict[str, Any], w: SegmentWindow, expected: dict[str, bool]) -> None:
    checks = evaluate("ctr", CtrState(**state), w)
    assert {k: c.breach for k, c in checks.items()} == expected


WARM_ECPM = dict(mu=0.6931471805599453, scale=1.0, windows=100, frozen=0)  # log(2.0)


@pytest.mark.parametrize(
    ("imps", "ecpm", "breach"),
    [
        pytest.param(1000, 2.0, False, id="on-baseline"),
        pytest.param(1000, 1.8, False, id="x0.9-too-small"),
        pytest.param(1000, 1.0, True, id="x0.5-drop"),
        pytest.param(10, 1.0, False, id="too-few-impressions"),
        pytest.param(1000, 4.0, False, id="a-rise-is-not-a-drop"),
    ],
)
def test_ecpm_drop(imps: int, ecpm: float, breach: bool) -> None:
    check = evaluate("ecpm_drop", EcpmState(**WARM_ECPM), window(imps, revenue=ecpm * imps / 1000))["ecpm_drop"]
    assert check.breach is breach
    assert check.expected == pytest.approx(2.0)


def test_first_ecpm_window_sets_the_baseline() -> None:
    s = EcpmState()
    assert evaluate("ecpm_drop", s, window(100, revenue=0.2)) == {}
    assert (s.windows, round(s.mu, 6)) == (1, round(0.6931471805599453, 6))


CLASSIC = RuleSettings(rule_set="classic")


@pytest.mark.parametrize(
    ("rule_id", "ema", "w", "breaches"),
    [
        pytest.param("classic_ctr", 0.05, window(1000, 50), {"ctr_drop": False, "ctr_spike": False}, id="ctr-normal"),
        pytest.param("classic_ctr", 0.05, window(1000, 20), {"ctr_drop": True, "ctr_spike": False}, id="ctr-0.4x"),
        pytest.param("classic_ctr", 0.05, window(1000, 120), {"ctr_drop": False, "ctr_spike": True}, id="ctr-2.4x"),
        pytest.param(
            "classic_traffic", 300.0, window(1000), {"traffic_spike": True, "traffic_drop": False}, id="traffic-3.3x"
        ),
        pytest.param(
            "classic_traffic", 300.0, window(800), {"traffic_spike": False, "traffic_drop": False}, id="traffic-2.7x"
        ),
        pytest.param(
            "classic_traffic", 300.0, window(60), {"traffic_spike": False, "traffic_drop": True}, id="traffic-0.2x"
        ),
        pytest.param("classic_ecpm_drop", 2.0, window(1000, revenue=0.9), {"ecpm_drop": True}, id="ecpm-0.45x"),
        pytest.param("classic_ecpm_drop", 2.0, window(1000, revenue=1.1), {"ecpm_drop": False}, id="ecpm-0.55x"),
        pytest.param("classic_ctr", 0.05, window(0), {}, id="no-impressions-skipped"),
    ],
)
def test_classic_rules(rule_id: str, ema: float, w: SegmentWindow, breaches: dict[str, bool]) -> None:
    s = EmaState(windows=10, ema=ema)
    checks = evaluate(rule_id, s, w, CLASSIC)
    assert {k: c.breach for k, c in checks.items()} == breaches
    if w.impressions:
        value = {"classic_ctr": w.clicks / w.impressions, "classic_traffic": w.impressions}.get(rule_id, w.ecpm)
        assert s.windows == 11, "every window with impressions counts"
        assert s.ema == pytest.approx(ema + 0.2 * (value - ema)), "the EMA moves on every window, alerting or not"


def test_classic_rules_wait_for_warm_up_and_take_their_settings() -> None:
    s = EmaState(windows=2, ema=0.05)
    assert evaluate("classic_ctr", s, window(1000, 10), CLASSIC) == {}
    strict = make_rules(rule_set="classic", rules={"classic_ctr": {"drop_ratio": 0.1}})
    checks = evaluate("classic_ctr", EmaState(windows=10, ema=0.05), window(1000, 10), strict)
    assert checks["ctr_drop"].breach is False and checks["ctr_drop"].band_low == pytest.approx(0.005)
