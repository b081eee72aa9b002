"""Table tests of the rule sets on synthetic windows (numpy: Poisson/gamma counts, binomial clicks)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from adwatch.contracts import SEVERITIES, Alert, SegmentWindow
from adwatch.errors import ConfigError
from adwatch_detector.rules import RULE_SETS, RULES, RuleSettings, SegmentState, detect_windows, load_rules, make_rules
from adwatch_dev.simulate import diurnal, sample_counts, to_windows

MIN = 60_000
DEFAULT = RuleSettings()
CLASSIC = RuleSettings(rule_set="classic")


def synth(
    imps: float,
    ctr: float,
    minutes: int,
    *,
    anomaly: tuple[str, int, int, float] | None = None,
    seed: int = 7,
    ecpm: float = 2.0,
    amplitude: float = 0.3,
) -> list[SegmentWindow]:
    rng = np.random.default_rng(seed)
    t = np.arange(minutes)
    expected = imps * diurnal(t, amplitude, 20.0)
    c, e, o = np.full(minutes, ctr), np.full(minutes, ecpm), np.zeros(minutes)
    if anomaly:
        kind, a, b, m = anomaly
        if kind in ("ctr_drop", "ctr_spike"):
            c[a:b] *= m
        elif kind == "traffic_spike":
            expected[a:b] *= m
        elif kind == "ecpm_drop":
            e[a:b] *= m
        elif kind == "click_without_impression":
            o[a:b] = max(6.0, m * imps * ctr)
    n, k, r, orphans = sample_counts(rng, expected, c, e, o)
    return list(to_windows("US", "banner", 0, n, k, r, orphans))


def run(windows: list[SegmentWindow], rules: RuleSettings = DEFAULT, batch: int = 1) -> list[Alert]:
    state: SegmentState | None = None
    alerts: list[Alert] = []
    for i in range(0, len(windows), batch):
        chunk = windows[i : i + batch]
        state, new = detect_windows(state, chunk, rules, chunk[-1].window_end_ms)
        state = SegmentState.from_bytes(state.to_bytes())
        alerts += new
    return alerts


SEGMENTS = [
    pytest.param(620.0, 0.005, id="top-banner-620imps"),
    pytest.param(150.0, 0.035, id="video-150imps"),
    pytest.param(25.0, 0.01, id="small-25imps"),
    pytest.param(2.0, 0.01, id="tail-2imps"),
    pytest.param(0.3, 0.02, id="sparse-0.3imps"),
]


@pytest.mark.parametrize(("imps", "ctr"), SEGMENTS)
@pytest.mark.parametrize("rules", [pytest.param(DEFAULT, id="default")])
def test_clean_traffic_stays_quiet(imps: float, ctr: float, rules: RuleSettings) -> None:
    alerts = run(synth(imps, ctr, 1440, seed=11), rules, batch=5)
    assert [a for a in alerts if a.status == "firing"] == []


SCENARIOS = [
    pytest.param("ctr_spike", 3.0, 300.0, 0.035, 3, id="ctr_spike-x3-video300"),
    pytest.param("ctr_spike", 3.0, 150.0, 0.035, 4, id="ctr_spike-x3-video150"),
    pytest.param("ctr_drop", 0.4, 300.0, 0.035, 8, id="ctr_drop-x0.4-video300"),
    pytest.param("ctr_drop", 0.4, 620.0, 0.005, 25, id="ctr_drop-x0.4-banner(3 clicks/min, CUSUM)"),
    # persistence: a x3 spike is confirmed by a second window (a x5 flood pages in its first)
    pytest.param("traffic_spike", 3.0, 620.0, 0.005, 2, id="traffic_spike-x3-top"),
    pytest.param("traffic_spike", 3.0, 25.0, 0.01, 3, id="traffic_spike-x3-small"),
    pytest.param("ecpm_drop", 0.5, 620.0, 0.005, 1, id="ecpm_drop-x0.5-top"),
    pytest.param("ecpm_drop", 0.5, 25.0, 0.01, 3, id="ecpm_drop-x0.5-small"),
    pytest.param("click_without_impression", 1.0, 25.0, 0.01, 2, id="orphan-flood-small"),
    pytest.param("click_without_impression", 1.0, 620.0, 0.005, 2, id="orphan-flood-top"),
]


@pytest.mark.parametrize("fraction", [pytest.param(f, id=f"first-window-{f:.0%}") for f in (0.05, 0.33, 0.7)])
def test_a_partial_first_window_does_not_poison_the_baseline(fraction: float) -> None:
    """A stream starts mid-window: its first window holds a fraction of the traffic. Found by
    the end-to-end test, where every segment paged a traffic spike right after warm-up."""
    import msgspec

    windows = synth(620.0, 0.005, 120, seed=3)
    first = windows[0]
    windows[0] = msgspec.structs.replace(
        first,
        impressions=int(first.impressions * fraction),
        clicks=int(first.clicks * fraction),
        revenue_usd=first.revenue_usd * fraction,
    )
    assert [a for a in run(windows) if a.status == "firing"] == []


@pytest.mark.parametrize(("kind", "magnitude", "imps", "ctr", "within"), SCENARIOS)
def test_each_alert_type_fires_on_its_scenario(
    kind: str, magnitude: float, imps: float, ctr: float, within: int
) -> None:
    onset, end = 180, 240
    alerts = run(synth(imps, ctr, 320, anomaly=(kind, onset, end, magnitude)))
    firing = [a for a in alerts if a.status == "firing"]
    assert {a.alert_type for a in firing} == {kind}
    alert = firing[0]
    assert all(a.previous_severity for a in firing[1:]), "a later firing is an escalation"
    assert onset * MIN <= alert.window_start_ms < (onset + within) * MIN
    assert alert.fingerprint == f"{kind}:ad_format=banner,country=US"
    assert alert.rule_set == "default"
    assert alert.rule in RULE_SETS["default"] and kind in RULES[alert.rule].alert_types, "the raising rule's id"
    assert alert.band_low <= alert.expected <= alert.band_high
    assert 0.0 <= alert.p_value <= 1.0
    if kind == "click_without_impression":
        assert alert.severity == "critical"
    elif kind.endswith("drop"):
        assert alert.current < alert.expected and alert.deviation_pct < -25
    else:
        assert alert.current > alert.expected and alert.deviation_pct > 50
    resolved = [a for a in alerts if a.status == "resolved"]
    assert [a.alert_type for a in resolved] == [kind], "resolves once the metric is back in its band"
    # ...pooled until it carries the evidence of being back: 10 clicks a minute need ~10 windows,
    # 3 a minute the whole 30-window pool once the episode's own windows have faded from it
    assert end * MIN <= resolved[0].window_start_ms < (end + 60) * MIN
    assert resolved[0].resolution == "recovered" and resolved[0].severity == max(
        (a.severity for a in firing), key=SEVERITIES.index
    ), "a resolve carries the episode's peak severity"
    assert resolved[0].duration_ms == resolved[0].window_start_ms - alert.window_start_ms


def test_classic_reproduces_the_tutorial_example(caplog: pytest.LogCaptureFixture) -> None:
    def window(i: int, clicks: int) -> SegmentWindow:
        return SegmentWindow(
            window_start_ms=i * MIN,
            window_end_ms=(i + 1) * MIN,
            country="US",
            ad_format="banner",
            impressions=1000,
            clicks=clicks,
            revenue_usd=1.0,
        )

    windows = [window(i, 50) for i in range(6)] + [window(6, 20)]
    with caplog.at_level(logging.DEBUG, logger="adwatch_detector.rules.engine"):
        _state, alerts = detect_windows(None, windows, CLASSIC, 123)
    (record,) = [r for r in caplog.records if r.name == "adwatch_detector.rules.engine"]
    assert (record.rule, record.alert_type, record.alert_id) == ("classic_ctr", "ctr_drop", alerts[0].alert_id)
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.alert_type, alert.status, alert.rule_set, alert.rule) == (
        "ctr_drop",
        "firing",
        "classic",
        "classic_ctr",
    )
    assert alert.deviation_pct == pytest.approx(-60.0)
    assert alert.message == "🚨 CTR drop! US banner: 5.00% -> 2.00% (-60.0%)"
    assert alert.detected_at_ms == 123


def test_classic_fixed_ratio_pages_on_small_segments_where_default_does_not() -> None:
    windows = synth(25.0, 0.01, 600, seed=3)
    assert [a for a in run(windows, CLASSIC) if a.status == "firing"], "the tutorial rule is not count-aware"
    assert [a for a in run(windows, DEFAULT) if a.status == "firing"] == []


@pytest.mark.parametrize("imps", [pytest.param(620.0, id="top"), pytest.param(150.0, id="mid")])
def test_lunch_time_peak_ramping_gradually_does_not_alert(imps: float) -> None:
    rng = np.random.default_rng(5)
    t = np.arange(400)
    ramp = 1.0 + 1.5 * np.clip((t - 120) / 90, 0, 1) - 1.5 * np.clip((t - 270) / 90, 0, 1)  # x2.5 peak over 1.5 h
    n, k, r, o = sample_counts(rng, imps * ramp, np.full(400, 0.02), np.full(400, 2.0))
    alerts = run(list(to_windows("US", "banner", 0, n, k, r, o)))
    assert alerts == []


def test_fires_once_and_hysteresis_holds_through_a_flicker() -> None:
    windows = synth(150.0, 0.035, 300, anomaly=("traffic_spike", 100, 160, 3.0))
    flicker = synth(150.0, 0.035, 300, seed=7)[161:162]  # one normal window, then the spike again
    spiky = synth(150.0, 0.035, 300, anomaly=("traffic_spike", 162, 200, 3.0))
    merged = windows[:161] + flicker + spiky[162:]
    alerts = [a for a in run(merged) if a.alert_type == "traffic_spike"]
    assert [a.status for a in alerts] == ["firing", "resolved"]
    assert alerts[1].window_start_ms >= 200 * MIN


def test_replay_is_idempotent_and_ids_are_stable() -> None:
    windows = synth(150.0, 0.035, 260, anomaly=("ctr_spike", 200, 230, 3.0))
    state, first = detect_windows(None, windows, DEFAULT, 1)
    again, second = detect_windows(SegmentState.from_bytes(state.to_bytes()), windows, DEFAULT, 2)
    assert first and second == []
    assert again.to_bytes() == state.to_bytes()
    _, fresh = detect_windows(None, windows, DEFAULT, 3)
    assert [a.alert_id for a in fresh] == [a.alert_id for a in first]
    assert len({a.alert_id for a in first}) == len(first)


def test_batches_and_single_windows_agree() -> None:
    windows = synth(150.0, 0.035, 300, anomaly=("ecpm_drop", 150, 200, 0.5))
    assert [a.alert_id for a in run(windows, batch=1)] == [a.alert_id for a in run(windows, batch=17)]


def test_state_round_trips_through_bytes() -> None:
    state, _ = detect_windows(None, synth(150.0, 0.035, 50), DEFAULT, 0)
    data = state.to_bytes()
    assert SegmentState.from_bytes(data) == state
    assert SegmentState.from_bytes(None) == SegmentState() == SegmentState.from_bytes(b"")
    # ~400 B of rules' state + the hour-of-day profile (24 small ints) and the dark quarter-hours (12 B)
    assert len(data) < 600


def test_gaps_count_as_zero_traffic_and_older_windows_are_ignored() -> None:
    windows = synth(20.0, 0.01, 60)
    state, _ = detect_windows(None, windows[:30], DEFAULT, 0)
    level = state.rules["traffic"].state.level
    late = windows[-1]
    state, _ = detect_windows(state, [late], DEFAULT, 0)
    assert state.rules["traffic"].state.level < level  # 29 silent minutes pulled the traffic baseline down
    before = state.to_bytes()
    state, alerts = detect_windows(state, windows[10:50], DEFAULT, 0)
    assert alerts == [] and state.to_bytes() == before


def test_load_rules_reads_yaml_and_defaults(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "rules.yaml"  # type: ignore[operator]
    path.write_text("rule_set: classic\nresolve_windows: 4\ndefault:\n  alert_budget_per_day: 0.5\n")
    rules = load_rules(str(path))
    assert (rules.rule_set, rules.resolve_windows, rules.default.alert_budget_per_day) == ("classic", 4, 0.5)
    assert load_rules(None) == RuleSettings()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("rule_sett: classic\n", "rule_sett", id="unknown-key"),
        pytest.param("rule_set: fancy\n", "rule_set", id="bad-rule-set"),
        pytest.param("resolve_windows: two\n", "resolve_windows", id="not-a-number"),
        pytest.param("classic:\n  ema_alpha: 1.5\n", "classic.ema_alpha", id="out-of-range"),
        pytest.param("default:\n  alert_budget_per_day: 0\n", "default.alert_budget_per_day", id="not-positive"),
        pytest.param("- a\n- b\n", "mapping", id="not-a-mapping"),
    ],
)
def test_load_rules_names_the_bad_key(tmp_path: pytest.TempPathFactory, text: str, key: str) -> None:
    path = tmp_path / "rules.yaml"  # type: ignore[operator]
    path.write_text(text)
    with pytest.raises(ConfigError, match=key) as caught:
        load_rules(str(path))
    assert key == "mapping" or str(path) in str(caught.value), "names the file"


def test_threshold_comes_from_the_alert_budget() -> None:
    tight = make_rules(default={"alert_budget_per_day": 0.1})
    assert tight.z_threshold > DEFAULT.z_threshold and tight.cusum_h > DEFAULT.cusum_h
    wide = make_rules(default={"expected_segments": 10_000, "cusum_budget_share": 0.0001})
    assert wide.z_threshold == pytest.approx(5.27, abs=0.02)
