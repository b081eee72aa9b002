"""Silences, maintenance windows and inhibition, table-driven on in-memory stores: no broker, no Redis."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest

from adwatch.contracts import Alert
from adwatch.errors import ConfigError
from adwatch_notifier.cli import silence_command, silence_parser
from adwatch_notifier.inhibit import DEFAULT_RULES, InhibitRule, MemoryInhibitStore, inhibit_rule, source_may_follow
from adwatch_notifier.matchers import alert_labels, parse_matcher
from adwatch_notifier.outcomes import Continue, Defer, StageResult, Suppressed
from adwatch_notifier.routing import parse_routes
from adwatch_notifier.silences import (
    MemorySilenceStore,
    Silence,
    maintenance_window,
    new_silence,
    parse_duration,
)
from adwatch_notifier.stages import Envelope, InhibitStage, SilenceStage

from .conftest import make_alert
from .fakes import T0_S, FakeClock

US_CTR = make_alert(country="US", alert_type="ctr_drop", severity="high")


def envelope(alert: Alert) -> Envelope:
    return Envelope(b"", alert=alert)


# --- matchers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "alert", "expected"),
    [
        pytest.param("country=US", US_CTR, True, id="eq"),
        pytest.param("country=DE", US_CTR, False, id="eq-other"),
        pytest.param("country!=DE", US_CTR, True, id="neq"),
        pytest.param("alert_type=~ctr_.*", US_CTR, True, id="regex"),
        pytest.param("alert_type=~ctr", US_CTR, False, id="regex-anchored"),
        pytest.param("alert_type!~ecpm_.*|traffic_.*", US_CTR, True, id="not-regex"),
        pytest.param("severity=~high|critical", US_CTR, True, id="alternation"),
        pytest.param("segment=US|banner", US_CTR, True, id="segment"),
        pytest.param(f"fingerprint={US_CTR.fingerprint}", US_CTR, True, id="fingerprint"),
        pytest.param("ad_format='banner'", US_CTR, True, id="quoted"),
        pytest.param("rule_set=", US_CTR, False, id="empty-value"),
    ],
)
def test_matcher(text: str, alert: Alert, expected: bool) -> None:
    assert parse_matcher(text).matches(alert_labels(alert)) is expected


@pytest.mark.parametrize(
    "text", ["country", "colour=red", "alert_type=~ctr_(", "=US", "Country=US"], ids=lambda t: t or "empty"
)
def test_bad_matcher(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_matcher(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h30m", 5400), ("2d", 172800), ("1h", 3600)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h", "-1h", "1.5h"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


# --- silence stage ---------------------------------------------------------------------------
def silence(*matchers: str, start: float = T0_S - 60, end: float = T0_S + 3600, sid: str = "s1") -> Silence:
    s = new_silence(list(matchers), now_s=start, duration_s=end - start, created_by="ops", comment="test")
    return Silence(s.matchers, s.starts_at, s.ends_at, s.created_by, s.comment, sid)


# 2033-05-18T03:33:20Z, a Wednesday
assert datetime.fromtimestamp(T0_S, UTC).strftime("%a %H:%M") == "Wed 03:33"


@pytest.mark.parametrize(
    ("silences", "windows", "alert", "expected", "muted_by"),
    [
        pytest.param([], [], US_CTR, Continue(), "", id="none"),
        pytest.param([silence("country=US")], [], US_CTR, Suppressed("silenced"), "s1", id="eq"),
        pytest.param(
            [silence("country=US", "alert_type=~ctr_.*")], [], US_CTR, Suppressed("silenced"), "s1", id="all-match"
        ),
        pytest.param([silence("country=US", "alert_type=~ecpm_.*")], [], US_CTR, Continue(), "", id="one-differs"),
        pytest.param([silence("country=DE")], [], US_CTR, Continue(), "", id="other-country"),
        pytest.param([silence("country=US", start=T0_S + 60)], [], US_CTR, Continue(), "", id="pending"),
        pytest.param([silence("country=US", end=T0_S)], [], US_CTR, Continue(), "", id="ended"),
        pytest.param(
            [silence("country=US")], [], make_alert(status="resolved"), Continue(), "", id="recovery-never-muted"
        ),
        pytest.param(
            [],
            [maintenance_window("db", ["wed"], "03:00", "04:00")],
            US_CTR,
            Suppressed("maintenance"),
            "maintenance:db",
            id="window",
        ),
        pytest.param(
            [], [maintenance_window("db", ["thu"], "03:00", "04:00")], US_CTR, Continue(), "", id="window-other-day"
        ),
        pytest.param(
            [], [maintenance_window("db", ["wed"], "04:00", "05:00")], US_CTR, Continue(), "", id="window-later"
        ),
        pytest.param(
            [],
            [maintenance_window("night", ["tue"], "23:00", "04:00")],
            US_CTR,
            Suppressed("maintenance"),
            "maintenance:night",
            id="window-across-midnight",
        ),
        pytest.param(
            [], [maintenance_window("db", [], "03:00", "04:00", ["country=DE"])], US_CTR, Continue(), "", id="matchers"
        ),
        pytest.param(
            [silence("country=US")],
            [maintenance_window("db", [], "03:00", "04:00")],
            US_CTR,
            Suppressed("maintenance"),
            "maintenance:db",
            id="window-first",
        ),
    ],
)
def test_silence_stage(
    silences: list[Silence], windows: list[object], alert: Alert, expected: StageResult, muted_by: str
) -> None:
    clock = FakeClock()
    stage = SilenceStage(MemorySilenceStore(*silences), windows, now=clock, refresh_s=0)  # type: ignore[arg-type]
    env = envelope(alert)
    assert stage(env) == expected
    assert env.muted_by == muted_by


def test_silence_stage_rereads_the_store_after_refresh() -> None:
    clock, store = FakeClock(), MemorySilenceStore()
    stage = SilenceStage(store, now=clock, refresh_s=1.0, monotonic=clock)
    assert stage(envelope(US_CTR)) == Continue()
    store.add(silence("country=US"))
    assert stage(envelope(US_CTR)) == Continue()  # cached list
    clock.s += 1.0
    assert stage(envelope(US_CTR)) == Suppressed("silenced")
    assert store.expire("s1", clock.s)
    clock.s += 1.0
    assert stage(envelope(US_CTR)) == Continue()


def test_expire_and_encode_roundtrip() -> None:
    store = MemorySilenceStore(silence("alert_type=~ctr_.*", "country!=DE"))
    s = store.all()[0]
    assert Silence.parse(s.encode()) == s
    assert store.expire("s1", T0_S)
    assert not store.expire("s1", T0_S)  # already ended
    assert not store.expire("nope", T0_S)
    assert not store.all()[0].active(T0_S)


# --- inhibition ------------------------------------------------------------------------------
TRAFFIC_US = make_alert(country="US", alert_type="traffic_spike", severity="high")
ECPM_US = make_alert(country="US", alert_type="ecpm_drop", severity="medium")
CTR_DE = make_alert(country="DE", alert_type="ctr_drop")
CTR_US_VIDEO = make_alert(country="US", ad_format="rewarded_video", alert_type="ctr_drop")
CRIT_US = make_alert(country="US", alert_type="ctr_drop", severity="critical")
CRIT_US_LATER = make_alert(
    country="US", alert_type="ctr_drop", severity="critical", window_start_ms=US_CTR.window_start_ms + 60_000
)
HIGH_US_LATER = make_alert(
    country="US", alert_type="ctr_drop", severity="high", window_start_ms=US_CTR.window_start_ms + 60_000
)
CRIT_DE = make_alert(country="DE", alert_type="ctr_drop", severity="critical")


@pytest.mark.parametrize(
    ("seen", "alert", "expected"),
    [
        pytest.param([], US_CTR, Continue(), id="no-source"),
        pytest.param([TRAFFIC_US], US_CTR, Suppressed("inhibited"), id="traffic-mutes-ctr"),
        pytest.param([TRAFFIC_US], ECPM_US, Suppressed("inhibited"), id="traffic-mutes-ecpm"),
        pytest.param([TRAFFIC_US], CTR_DE, Continue(), id="other-country"),
        pytest.param([TRAFFIC_US], CTR_US_VIDEO, Continue(), id="other-format"),
        pytest.param([TRAFFIC_US], TRAFFIC_US, Continue(), id="source-not-muted"),
        pytest.param(
            [TRAFFIC_US, make_alert(country="US", alert_type="traffic_spike", status="resolved")],
            US_CTR,
            Continue(),
            id="source-resolved",
        ),
        pytest.param([TRAFFIC_US], make_alert(status="resolved"), Continue(), id="recovery-never-muted"),
        pytest.param([CRIT_US], HIGH_US_LATER, Suppressed("inhibited"), id="critical-mutes-lower"),
        pytest.param([CRIT_US], CRIT_US_LATER, Continue(), id="critical-not-muted"),
        pytest.param([CRIT_DE], US_CTR, Continue(), id="critical-other-segment"),
        pytest.param(
            [CRIT_US, make_alert(status="resolved", severity="low")],
            HIGH_US_LATER,
            Continue(),
            id="critical-resolved-low-in-band",
        ),
    ],
)
def test_inhibit_stage(seen: list[Alert], alert: Alert, expected: StageResult) -> None:
    clock = FakeClock()
    stage = InhibitStage(MemoryInhibitStore(), DEFAULT_RULES, source_ttl_s=900, now=clock)
    for source in seen:
        stage(envelope(source))
    assert stage(envelope(alert)) == expected


def test_inhibition_lapses_after_source_ttl() -> None:
    clock = FakeClock()
    stage = InhibitStage(MemoryInhibitStore(), DEFAULT_RULES, source_ttl_s=900, now=clock)
    stage(envelope(TRAFFIC_US))
    clock.s += 899
    assert stage(envelope(US_CTR)) == Suppressed("inhibited")
    clock.s += 1
    assert stage(envelope(US_CTR)) == Continue()


def test_target_waits_for_a_source_that_arrives_after_it() -> None:
    """Detector order: the CTR alert comes first; held ``wait_s``, it is muted by the traffic alert seen meanwhile."""
    clock, store = FakeClock(), MemoryInhibitStore()
    stage = InhibitStage(store, DEFAULT_RULES, source_ttl_s=900, now=clock, wait_s=3, monotonic=clock)
    ctr, other = envelope(US_CTR), envelope(CTR_DE)
    assert stage(ctr) == Defer(3, "inhibit_wait") and stage(other) == Defer(3, "inhibit_wait")
    clock.s += 1
    # recorded at once; sent at once: no rule can mute a traffic alert with a source that follows it
    assert stage(envelope(TRAFFIC_US)) == Continue()
    assert stage(ctr) == Suppressed("inhibited")
    assert stage(other) == Defer(2, "inhibit_wait")  # the rest of its wait, not a new one
    clock.s += 2
    assert stage(other) == Continue()


def test_two_sided_rule_never_inhibits_itself() -> None:
    """Alertmanager: an alert matching both sides is muted only by another source."""
    rule = inhibit_rule(["alert_type=~ctr_.*"], ["alert_type=~ctr_.*"], ["country"])
    stage = InhibitStage(MemoryInhibitStore(), [rule], source_ttl_s=900, now=FakeClock())
    assert stage(envelope(US_CTR)) == Continue()
    assert stage(envelope(CTR_US_VIDEO)) == Suppressed("inhibited")  # another fingerprint, same country


# --- routes file -----------------------------------------------------------------------------
def test_routes_file_windows_and_rules() -> None:
    table = parse_routes(
        """
routes: [{channel: slack}]
maintenance_windows:
  - {name: db, weekdays: [Sat, sun], start: "22:00", end: "02:00", matchers: ["country=US"]}
inhibit_rules:
  - {source_matchers: ["alert_type=traffic_spike"], target_matchers: ["alert_type=~ctr_.*"], equal: [country]}
"""
    )
    assert [w.name for w in table.maintenance] == ["db"]
    assert len(table.inhibit_rules) == 1 and table.inhibit_rules[0].equal == ("country",)
    assert parse_routes("routes: []").inhibit_rules == DEFAULT_RULES
    assert parse_routes("routes: []\ninhibit_rules: []").inhibit_rules == ()


@pytest.mark.parametrize(
    "extra",
    [
        'maintenance_windows: [{name: x, start: "25:00", end: "02:00"}]',
        'maintenance_windows: [{name: x, weekdays: [funday], start: "01:00", end: "02:00"}]',
        'maintenance_windows: [{name: x, start: "01:00", end: "02:00", matchers: ["colour=red"]}]',
        "inhibit_rules: [{source_matchers: [country=US], target_matchers: [country=US], equal: [colour]}]",
        "inhibit_rules: [{source_matchers: [], target_matchers: [country=US]}]",
        "inhibit_rules: [{source_matchers: [country=US], target_matchers: [country=US], equals: [country]}]",
    ],
    ids=["bad-time", "bad-day", "bad-matcher", "bad-equal", "no-source", "typo"],
)
def test_routes_file_rejects(extra: str) -> None:
    with pytest.raises(ConfigError):
        parse_routes(f"routes: []\n{extra}\n")


# --- CLI -------------------------------------------------------------------------------------
def test_silence_cli_add_list_expire() -> None:
    store, clock, out = MemorySilenceStore(), FakeClock(), io.StringIO()
    argv = ["add", "--matcher", "country=US", "--matcher", "alert_type=~ctr_.*"]
    assert silence_main([*argv, "--duration", "1h", "--author", "a", "--comment", "c"], store, clock, out) == 0
    sid = out.getvalue().strip()
    [added] = store.all()
    assert added.id == sid and added.ends_at == clock.s + 3600 and added.created_by == "a"
    out = io.StringIO()
    assert silence_main(["list"], store, clock, out) == 0
    assert f"{sid}\tactive\tcountry=US,alert_type=~ctr_.*" in out.getvalue()
    assert silence_main(["expire", sid], store, clock, io.StringIO()) == 0
    assert silence_main(["expire", sid], store, clock, io.StringIO()) == 1
    out = io.StringIO()
    silence_main(["list"], store, clock, out)
    assert sid not in out.getvalue()
    out = io.StringIO()
    silence_main(["list", "--all"], store, clock, out)
    assert f"{sid}\texpired" in out.getvalue()


@pytest.mark.parametrize(
    "argv",
    [
        ["add", "--matcher", "colour=red", "--duration", "1h", "--author", "a", "--comment", "c"],
        ["add", "--matcher", "country=US", "--duration", "soon", "--author", "a", "--comment", "c"],
        ["add", "--matcher", "country=US", "--duration", "0s", "--author", "a", "--comment", "c"],
    ],
    ids=["bad-matcher", "bad-duration", "zero-duration"],
)
def test_silence_cli_refuses(argv: list[str]) -> None:
    store = MemorySilenceStore()
    assert silence_main(argv, store, FakeClock(), io.StringIO()) == 2
    assert store.all() == []


def silence_main(argv: list[str], store: Any, now: Any, out: Any) -> int:
    """The ``silence`` command on a memory store (the CLI builds the Redis one)."""
    return silence_command(silence_parser().parse_args(argv), store, now, out)


@pytest.mark.parametrize(
    ("alert", "waits"),
    [
        pytest.param(US_CTR, True, id="ctr-waits-for-traffic"),
        pytest.param(ECPM_US, True, id="ecpm-waits-for-traffic"),
        pytest.param(TRAFFIC_US, False, id="traffic-high-only-the-critical-rule"),
        pytest.param(CRIT_US, True, id="critical-ctr-still-a-traffic-target"),
        pytest.param(make_alert(alert_type="traffic_drop", severity="critical"), False, id="critical-traffic"),
        pytest.param(make_alert(alert_type="click_without_impression", severity="medium"), False, id="other-type"),
    ],
)
def test_only_targets_whose_source_could_follow_wait(alert: Alert, waits: bool) -> None:
    """The wait delays only what a later source on another key could mute: the default rules' CTR/eCPM alerts.

    The ``critical`` rule's ``equal`` labels are the whole fingerprint: its source has the target's key and
    came first, so waiting could not change the outcome (before: every non-critical alert waited 3 s)."""
    clock = FakeClock()
    stage = InhibitStage(MemoryInhibitStore(), DEFAULT_RULES, source_ttl_s=900, now=clock, wait_s=3, monotonic=clock)
    assert stage(envelope(alert)) == (Defer(3, "inhibit_wait") if waits else Continue())


@pytest.mark.parametrize(
    ("rule", "alert", "follows"),
    [
        pytest.param(DEFAULT_RULES[0], US_CTR, True, id="traffic-source-other-key"),
        pytest.param(DEFAULT_RULES[1], US_CTR, False, id="critical-source-same-key"),
        pytest.param(
            inhibit_rule(["alert_type=~nothing_.*"], ["alert_type=~ctr_.*"], ["country"]), US_CTR, False, id="no-type"
        ),
        pytest.param(
            inhibit_rule(["severity=critical"], ["severity=high"], ["alert_type", "country"]),
            US_CTR,
            True,
            id="same-type-other-format",
        ),
        pytest.param(
            inhibit_rule(["alert_type=traffic_drop"], ["alert_type=~ctr_.*"], ["alert_type"]),
            US_CTR,
            False,
            id="equal-type-excludes-source",
        ),
    ],
)
def test_source_may_follow(rule: InhibitRule, alert: Alert, follows: bool) -> None:
    assert source_may_follow(rule, alert_labels(alert)) is follows
