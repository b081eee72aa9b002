"""Each stage alone, table-driven: an in-memory ledger, a function channel, a fake clock. No broker, no Redis."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import msgspec
import pytest

from adwatch.contracts import Alert, encode
from adwatch_notifier.dedup import SENT, claim_value, cooldown_value
from adwatch_notifier.delivery import Delivery, DeliveryError
from adwatch_notifier.outcomes import Continue, DeadLetter, Defer, StageResult, Stop, Suppressed
from adwatch_notifier.retry import RetryPolicy
from adwatch_notifier.routing import load_routes, parse_routes
from adwatch_notifier.settings import NotifierSettings
from adwatch_notifier.stages import (
    CONTINUE,
    REPLAY_HEADER,
    DecodeStage,
    DedupStage,
    DeliverStage,
    Envelope,
    Episode,
    Lease,
    LifecycleStage,
    MarkSentStage,
    RenderStage,
    RouteStage,
    build_stages,
)

from .conftest import make_alert
from .fakes import T0_S, FakeClock, FuncChannel, MemoryLedger, drive, failing

ME = Lease("me", 30.0)
LIVE, DEAD = int((T0_S + 5) * 1000), int((T0_S - 5) * 1000)  # lease ends, in ms
ALERT = make_alert()
RESOLVED = make_alert(status="resolved")
OTHER_WINDOW = make_alert(window_start_ms=ALERT.window_start_ms + 60_000)  # same fingerprint, other alert


def envelope(alert: Alert, **fields: object) -> Envelope:
    env = Envelope(encode(alert), alert=alert)
    for name, value in fields.items():
        setattr(env, name, value)
    return env


# --- decode ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(encode(ALERT), Continue(), id="valid"),
        pytest.param(b"{not json", DeadLetter("contract"), id="not-json"),
        pytest.param(encode(ALERT).replace(b'"high"', b'"apocalyptic"'), DeadLetter("contract"), id="bad-severity"),
        pytest.param(
            encode(ALERT).replace(str(ALERT.detected_at_ms).encode(), b"100000000000000000"),
            DeadLetter("contract"),
            id="far-future-timestamp",
        ),
        pytest.param(
            encode(ALERT).replace(ALERT.alert_id.encode(), ALERT.alert_id.encode() + b"\\r\\nBcc: x@evil"),
            DeadLetter("contract"),
            id="crlf-in-id",
        ),
        pytest.param(
            encode(ALERT).replace(b'"rule_set":"default"', b'"rule_set":"a\\nb"'),
            DeadLetter("contract"),
            id="newline-rule-set",
        ),
    ],
)
def test_decode(value: bytes, expected: StageResult) -> None:
    """A contract violation is dead-lettered; an over-long free text is not (``test_decode_clips_over_long_free_text``)."""
    env = Envelope(value)
    result = DecodeStage()(env)
    assert result == expected
    assert (env.alert == ALERT) is isinstance(expected, Continue)
    if isinstance(result, DeadLetter):
        assert result.detail.startswith("ContractError")


# --- route -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteCase:
    channel: str
    alert: Alert
    notified_firing: bool = False
    routes: str = ""
    expected: StageResult = CONTINUE
    target: str = "default-target"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(RouteCase("slack", make_alert(severity="low")), id="slack-gets-all"),
        pytest.param(
            RouteCase("pagerduty", make_alert(severity="low"), expected=Suppressed("unrouted"), target=""),
            id="low-does-not-page",
        ),
        pytest.param(
            RouteCase(
                "slack", make_alert(severity="low", status="resolved"), expected=Suppressed("never_notified"), target=""
            ),
            id="recovery-of-unpaged-firing",
        ),
        pytest.param(
            RouteCase("pagerduty", make_alert(severity="low", status="resolved"), notified_firing=True),
            id="recovery-follows-paged-firing",
        ),
        pytest.param(
            RouteCase("slack", ALERT, routes="routes:\n  - channel: slack\n    target: '#ads'", target="#ads"),
            id="route-target",
        ),
    ],
)
def test_route(case: RouteCase) -> None:
    table = parse_routes(case.routes) if case.routes else load_routes()
    ledger = MemoryLedger()
    if case.notified_firing:
        ledger.put("ref", case.alert.fingerprint, "C1|ts", 60)
    env = envelope(case.alert)
    assert RouteStage(table, FuncChannel(name=case.channel), ledger)(env) == case.expected
    assert env.target == case.target


# --- dedup -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DedupCase:
    alert: Alert = ALERT
    idem: str | None = None  # what the idempotency key holds before
    cooldown: str | None = None  # what the cooldown key holds before
    cooldown_s: float = 600
    in_doubt_ok: bool = False
    stop_after_waits: int | None = None
    expected: StageResult = CONTINUE
    holds_claim: bool = True  # env.idem_held is our claim afterwards
    holds_cooldown: bool = True  # env.cooldown_held is set afterwards
    waits: int = 0


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(DedupCase(), id="new"),
        pytest.param(
            DedupCase(idem=SENT, expected=Suppressed("duplicate"), holds_claim=False, holds_cooldown=False),
            id="already-sent",
        ),
        pytest.param(DedupCase(idem=claim_value("claimed", "me", LIVE)), id="own-claim"),
        pytest.param(DedupCase(idem=claim_value("claimed", "other", DEAD)), id="takeover-dead-claim"),
        pytest.param(
            DedupCase(
                idem=claim_value("inflight", "other", DEAD),
                expected=DeadLetter("in_doubt"),
                holds_claim=False,
                holds_cooldown=False,
            ),
            id="in-doubt-parked",
        ),
        pytest.param(
            DedupCase(idem=claim_value("inflight", "other", DEAD), in_doubt_ok=True), id="in-doubt-resent-if-ok"
        ),
        pytest.param(
            DedupCase(
                idem=claim_value("claimed", "other", LIVE),
                stop_after_waits=1,
                expected=Stop(),
                holds_claim=False,
                holds_cooldown=False,
                waits=1,
            ),
            id="live-replica-then-stop",
        ),
        pytest.param(
            DedupCase(idem=claim_value("claimed", "other", int((T0_S + 0.5) * 1000)), waits=3),
            id="live-replica-lease-runs-out",
        ),
        pytest.param(
            DedupCase(
                cooldown=cooldown_value("other-alert", LIVE), expected=Suppressed("cooldown"), holds_cooldown=False
            ),
            id="within-cooldown",
        ),
        pytest.param(DedupCase(cooldown=cooldown_value("other-alert", DEAD)), id="cooldown-over"),
        pytest.param(DedupCase(cooldown=cooldown_value(ALERT.alert_id, LIVE)), id="own-cooldown"),
        pytest.param(
            DedupCase(alert=RESOLVED, cooldown=cooldown_value("other-alert", LIVE), holds_cooldown=False),
            id="resolved-bypasses-cooldown",
        ),
        pytest.param(DedupCase(cooldown_s=0, holds_cooldown=False), id="cooldown-off"),
    ],
)
def test_dedup(case: DedupCase) -> None:
    clock = FakeClock(stop_after_waits=case.stop_after_waits)
    ledger = MemoryLedger(clock)
    if case.idem is not None:
        ledger.put("idem", case.alert.alert_id, case.idem, 3600)
    if case.cooldown is not None:
        ledger.put("cooldown", case.alert.fingerprint, case.cooldown, 3600)
    stage = DedupStage(
        ledger,
        ME,
        cooldown_s=case.cooldown_s,
        sent_ttl_s=3600,
        in_doubt_ok=case.in_doubt_ok,
        now=clock,
    )
    env = envelope(case.alert)
    assert drive(stage, env, clock) == case.expected
    assert (env.idem_held is not None) is case.holds_claim
    if case.holds_claim:
        assert env.idem_held == ledger.value("idem", case.alert.alert_id)
        assert env.idem_held is not None and env.idem_held.startswith("claimed|me|")
    assert (env.cooldown_held is not None) is case.holds_cooldown
    if case.holds_cooldown:
        assert env.cooldown_held == ledger.value("cooldown", case.alert.fingerprint)
    assert len(clock.waits) == case.waits


def test_dedup_new_cooldown_blocks_the_next_alert_of_the_fingerprint() -> None:
    clock = FakeClock()
    ledger = MemoryLedger(clock)
    stage = DedupStage(ledger, ME, cooldown_s=600, sent_ttl_s=3600, in_doubt_ok=False, now=clock)
    assert stage(envelope(ALERT)) == Continue()
    assert stage(envelope(OTHER_WINDOW)) == Suppressed("cooldown")
    clock.s += 601
    assert stage(envelope(OTHER_WINDOW)) == Continue()


# --- deliver ---------------------------------------------------------------------------------
SERVER = DeliveryError("serverError", "HTTP 500", retryable=True)
LIMITED = DeliveryError("rateLimited", "HTTP 429", retryable=True, retry_after=5.0)
REFUSED = DeliveryError("clientError", "HTTP 400 invalid_blocks", retryable=False)
OK = Delivery("func", "default-target", "C1|1.2")
POLICY = RetryPolicy(initial_s=1, max_s=4, deadline_s=10)


@dataclass
class DeliverCase:
    send: list[DeliveryError]  # raised in turn before the delivery succeeds
    succeeds: bool = True
    expected: StageResult = CONTINUE
    attempts: int = 1
    waits: list[float] = field(default_factory=list)
    stop_after_waits: int | None = None


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(DeliverCase([]), id="first-try"),
        pytest.param(DeliverCase([SERVER, SERVER], attempts=3, waits=[0.5, 1.0]), id="backoff-then-ok"),
        pytest.param(DeliverCase([LIMITED], attempts=2, waits=[5.0]), id="retry-after-wins"),
        pytest.param(DeliverCase([REFUSED], succeeds=False, expected=DeadLetter("permanent")), id="permanent-no-retry"),
        pytest.param(
            DeliverCase(
                [SERVER], succeeds=False, expected=DeadLetter("deadline"), attempts=7, waits=[0.5, 1, 2, 2, 2, 2]
            ),
            id="deadline",
        ),
        pytest.param(
            DeliverCase([SERVER], succeeds=False, expected=Stop(), waits=[0.5], stop_after_waits=1),
            id="stop-while-waiting",
        ),
    ],
)
def test_deliver_retries(case: DeliverCase) -> None:
    clock = FakeClock(stop_after_waits=case.stop_after_waits)
    ledger = MemoryLedger(clock)
    channel = FuncChannel(failing(*case.send, then=OK if case.succeeds else None) if case.send else lambda *_: OK)
    failures: list[str] = []
    stage = DeliverStage(
        channel,
        ledger,
        ME,
        POLICY,
        sent_ttl_s=3600,
        now=clock,
        monotonic=clock,
        rand=lambda: 0.0,
        on_failure=lambda err: failures.append(err.reason),
    )
    claim = claim_value("claimed", "me", LIVE)
    ledger.put("idem", ALERT.alert_id, claim, 3600)
    env = envelope(ALERT, idem_held=claim, target="#t")
    assert drive(stage, env, clock) == case.expected
    assert env.attempts == case.attempts == len(channel.calls)
    assert clock.waits == case.waits
    assert len(failures) == case.attempts - (1 if case.succeeds else 0)
    assert env.idem_held == ledger.value("idem", ALERT.alert_id)  # the claim we hold is the one in the ledger
    phase = "inflight" if case.succeeds else "claimed"  # a request may be on the wire only after a send began
    assert env.idem_held is not None and env.idem_held.startswith(f"{phase}|me|")
    assert (env.delivery == OK) is case.succeeds


def test_deliver_dead_letter_detail_names_the_error_not_the_secret() -> None:
    clock = FakeClock()
    stage = DeliverStage(FuncChannel(failing(REFUSED)), MemoryLedger(clock), ME, POLICY, sent_ttl_s=60, now=clock)
    result = stage(envelope(ALERT))
    assert isinstance(result, DeadLetter)
    assert result.detail == "permanent clientError: HTTP 400 invalid_blocks"


def test_deliver_lost_lease_leaves_it_to_the_new_owner() -> None:
    clock = FakeClock()
    ledger = MemoryLedger(clock)
    ledger.put("idem", ALERT.alert_id, claim_value("claimed", "other", LIVE), 60)  # taken over while we waited
    channel = FuncChannel()
    stage = DeliverStage(channel, ledger, ME, POLICY, sent_ttl_s=60, now=clock)
    env = envelope(ALERT, idem_held=claim_value("claimed", "me", DEAD), cooldown_held="x|1")
    assert stage(env) == Suppressed("duplicate")
    assert not channel.calls and env.idem_held is None and env.cooldown_held is None


@pytest.mark.parametrize(
    ("alert", "ref", "sent_ref"),
    [
        pytest.param(ALERT, "C1|1.2", None, id="firing-no-ref"),
        pytest.param(RESOLVED, "C1|1.2", "C1|1.2", id="resolved-updates-original"),
        pytest.param(RESOLVED, SENT, None, id="resolved-without-provider-id"),
    ],
)
def test_deliver_passes_the_firing_ref(alert: Alert, ref: str, sent_ref: str | None) -> None:
    clock = FakeClock()
    ledger = MemoryLedger(clock)
    ledger.put("ref", alert.fingerprint, ref, 60)
    channel = FuncChannel()
    DeliverStage(channel, ledger, ME, POLICY, sent_ttl_s=60, now=clock)(envelope(alert, target="#t"))
    assert channel.calls == [(alert.alert_id, "#t", sent_ref)]


def test_deliver_waits_for_the_shared_rate_limit_slot() -> None:
    clock = FakeClock()
    ledger = MemoryLedger(clock)
    assert ledger.acquire_slot("#t", 1000) == 0.0  # another replica just sent to #t
    clock.s += 0.25
    channel = FuncChannel(min_interval_ms=1000)
    stage = DeliverStage(channel, ledger, ME, POLICY, sent_ttl_s=60, now=clock)
    env = envelope(ALERT, target="#t")
    assert stage(env) == Defer(pytest.approx(0.75), "rate_limit")  # no sleeping in the stage: the loop holds it
    assert not channel.calls and env.attempts == 0
    assert drive(stage, env, clock) == Continue()
    assert clock.waits == [pytest.approx(0.75)] and len(channel.calls) == 1


# --- mark_sent -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("alert", "provider_id", "cooldown_checked", "ref_after", "cooldown_after"),
    [
        pytest.param(ALERT, "C1|1.2", True, "C1|1.2", "held", id="firing-keeps-provider-id"),
        pytest.param(ALERT, None, True, SENT, "held", id="firing-without-provider-id"),
        pytest.param(RESOLVED, None, True, None, None, id="recovery-closes-episode"),
        pytest.param(RESOLVED, None, False, None, "held", id="recovery-cooldown-off"),
    ],
)
def test_mark_sent(
    alert: Alert, provider_id: str | None, cooldown_checked: bool, ref_after: str | None, cooldown_after: str | None
) -> None:
    ledger = MemoryLedger()
    ledger.put("ref", alert.fingerprint, "old", 60)
    ledger.put("cooldown", alert.fingerprint, "held", 60)
    env = envelope(
        alert, idem_held="inflight|me|1", cooldown_checked=cooldown_checked, delivery=Delivery("f", "t", provider_id)
    )
    assert MarkSentStage(ledger, sent_ttl_s=60)(env) == Continue()
    assert ledger.value("idem", alert.alert_id) == SENT and env.idem_held is None
    assert ledger.value("ref", alert.fingerprint) == ref_after
    assert ledger.value("cooldown", alert.fingerprint) == cooldown_after


# --- the chain -------------------------------------------------------------------------------
def test_build_stages_order_and_ids() -> None:
    stages = build_stages(
        NotifierSettings(channel="console"),
        FuncChannel(name="console"),
        load_routes(),
        MemoryLedger(),
        ME,
        threading.Event(),
    )
    assert [s.id for s in stages] == ["decode", "lifecycle", "route", "render", "dedup", "deliver", "mark_sent"]


# --- lifecycle -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LifecycleCase:
    alert: Alert
    resolved_window: int | None = None  # the fingerprint's last recovery window, before
    episode: str | None = None  # severity this channel delivered for the open episode
    max_age_s: float = 0
    now_s: float = T0_S
    replay_for: str | None = None
    expected: StageResult = CONTINUE
    severity_after: str | None = None


W = ALERT.window_start_ms


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(LifecycleCase(ALERT), id="firing-new"),
        pytest.param(
            LifecycleCase(ALERT, resolved_window=W + 60_000, expected=Suppressed("stale")), id="firing-after-resolve"
        ),
        pytest.param(LifecycleCase(ALERT, resolved_window=W, expected=Suppressed("stale")), id="firing-same-window"),
        pytest.param(LifecycleCase(ALERT, resolved_window=W - 60_000), id="new-episode-after-resolve"),
        pytest.param(
            LifecycleCase(
                ALERT, max_age_s=3600, now_s=ALERT.detected_at_ms / 1000 + 3601, expected=Suppressed("too_old")
            ),
            id="history-not-paged",
        ),
        pytest.param(LifecycleCase(ALERT, max_age_s=3600, now_s=ALERT.detected_at_ms / 1000 + 5), id="fresh"),
        pytest.param(
            LifecycleCase(make_alert(status="resolved", severity="low"), episode="critical", severity_after="critical"),
            id="resolve-carries-episode-severity",
        ),
        pytest.param(
            LifecycleCase(make_alert(status="resolved"), episode="high", max_age_s=1, now_s=T0_S * 10),
            id="old-resolve-of-a-delivered-episode-still-closes",
        ),
        pytest.param(
            LifecycleCase(make_alert(status="resolved"), max_age_s=1, now_s=T0_S * 10, expected=Suppressed("too_old")),
            id="old-resolve-without-episode-is-history",
        ),
        pytest.param(
            LifecycleCase(ALERT, replay_for="pagerduty", expected=Suppressed("other_channel")), id="replay-other"
        ),
        pytest.param(LifecycleCase(ALERT, replay_for="func"), id="replay-mine"),
    ],
)
def test_lifecycle(case: LifecycleCase) -> None:
    ledger = MemoryLedger()
    fp = case.alert.fingerprint
    if case.resolved_window is not None:
        ledger.put("resolved", fp, str(case.resolved_window), 60)
    if case.episode is not None:
        ledger.put("episode", fp, Episode(case.episode, "#oncall").encode(), 60)
    env = envelope(case.alert)
    if case.replay_for:
        env.headers = [(REPLAY_HEADER, case.replay_for.encode())]
    stage = LifecycleStage(ledger, "func", max_age_s=case.max_age_s, ttl_s=60, now=lambda: case.now_s)
    assert stage(env) == case.expected
    assert env.decoded.severity == (case.severity_after or case.alert.severity)
    if case.alert.status == "resolved":
        assert ledger.value("resolved", fp) == str(case.alert.window_start_ms)


def test_resolve_before_firing_then_firing_is_dropped() -> None:
    """Out of order: the recovery is not sent (nothing delivered), and the late firing does not page."""
    clock = FakeClock()
    ledger, channel = MemoryLedger(clock), FuncChannel(name="slack")
    stages = build_stages(
        NotifierSettings(channel="console", max_alert_age_seconds=0),
        channel,
        load_routes(),
        ledger,
        ME,
        threading.Event(),
        now=clock,
    )
    later_resolve = make_alert(status="resolved", window_start_ms=W + 120_000)
    results = []
    for alert in (later_resolve, ALERT):
        env = envelope(alert)
        env.alert = None
        for stage in stages:
            result = stage(env)
            if result != CONTINUE:
                break
        results.append(result)
    assert results == [Suppressed("never_notified"), Suppressed("stale")] and not channel.calls


@pytest.mark.parametrize(
    ("channel", "episode", "notified", "expected", "target"),
    [
        pytest.param(
            "slack", Episode("critical", "#war-room"), False, CONTINUE, "#war-room", id="follows-episode-target"
        ),
        pytest.param("slack", None, False, Suppressed("never_notified"), "", id="undelivered-firing"),
        pytest.param("pagerduty", None, False, CONTINUE, "default-target", id="pagerduty-after-ledger-loss"),
    ],
)
def test_route_recovery(
    channel: str, episode: Episode | None, notified: bool, expected: StageResult, target: str
) -> None:
    env = envelope(make_alert(status="resolved", severity="low"))
    env.episode = episode
    stage = RouteStage(load_routes(), FuncChannel(name=channel, provider_dedup=channel == "pagerduty"), MemoryLedger())
    assert stage(env) == expected
    assert env.target == target


def test_in_doubt_firing_is_parked_but_its_recovery_follows() -> None:
    """The owner died mid-request: no resend (no duplicate), yet the episode opens so the resolve is sent."""
    clock = FakeClock()
    ledger = MemoryLedger(clock)
    ledger.put("idem", ALERT.alert_id, claim_value("inflight", "other", DEAD), 3600)
    dedup = DedupStage(ledger, ME, cooldown_s=600, sent_ttl_s=3600, in_doubt_ok=False, now=clock)
    assert dedup(envelope(ALERT, target="#ops")) == DeadLetter("in_doubt")
    recovery = envelope(RESOLVED)
    LifecycleStage(ledger, "slack", max_age_s=0, ttl_s=3600, now=clock)(recovery)
    stage = RouteStage(load_routes(), FuncChannel(name="slack"), ledger)
    assert stage(recovery) == CONTINUE
    assert recovery.target == "#ops"


def test_severity_increase_renotifies_within_cooldown() -> None:
    clock = FakeClock()
    ledger = MemoryLedger(clock)
    stage = DedupStage(ledger, ME, cooldown_s=600, sent_ttl_s=3600, in_doubt_ok=False, now=clock)
    assert stage(envelope(ALERT)) == CONTINUE
    worse = make_alert(severity="critical", window_start_ms=W + 60_000)
    same = make_alert(severity="high", window_start_ms=W + 120_000)
    assert stage(envelope(same, episode=Episode("high", "#t"))) == Suppressed("cooldown")
    assert stage(envelope(worse, episode=Episode("high", "#t"))) == CONTINUE


def test_mark_sent_records_the_episode_with_the_highest_severity() -> None:
    ledger = MemoryLedger()
    env = envelope(make_alert(severity="medium"), target="#t", delivery=Delivery("f", "#t", "C1|1"))
    env.episode = Episode("critical", "#t")
    MarkSentStage(ledger, sent_ttl_s=60)(env)
    recorded = Episode.parse(ledger.value("episode", ALERT.fingerprint))
    assert recorded is not None and (recorded.severity, recorded.target) == ("critical", "#t")
    MarkSentStage(ledger, sent_ttl_s=60)(envelope(RESOLVED, delivery=Delivery("f", "#t")))
    assert ledger.value("episode", ALERT.fingerprint) is None


# --- render ----------------------------------------------------------------------------------
def test_render_failure_is_parked_before_any_claim() -> None:
    def boom(alert: Alert, target: str, thread: object = None) -> object:
        raise ValueError("year 5138 is out of range")

    channel = FuncChannel()
    channel.render = boom  # type: ignore[method-assign]
    ledger = MemoryLedger()
    result = RenderStage(channel)(envelope(ALERT))
    assert result == DeadLetter("render") and "ValueError" in result.detail  # type: ignore[union-attr]
    assert ledger.value("idem", ALERT.alert_id) is None


@pytest.mark.parametrize(
    ("fields", "clipped", "error"),
    [
        pytest.param({"message": "x" * 600_000}, ("message",), None, id="600kb-message"),
        pytest.param({"message": "x" * 4096}, (), None, id="message-at-limit"),
        pytest.param({"rule_set": "r" * 1000}, ("rule_set",), None, id="long-rule-set"),
        pytest.param({"message": "x" * 5000, "rule_set": "r" * 300}, ("message", "rule_set"), None, id="both"),
        pytest.param({"rule_set": "a\nb"}, (), "rule_set", id="control-char-not-clipped"),
        pytest.param({"message": "x" * 5000, "country": "USA"}, (), "country", id="another-violation-still-refused"),
    ],
)
def test_decode_clips_over_long_free_text(fields: dict[str, str], clipped: tuple[str, ...], error: str | None) -> None:
    raw = msgspec.json.encode(msgspec.structs.replace(ALERT, **fields))  # type: ignore[arg-type]
    env = Envelope(raw)
    result = DecodeStage()(env)
    if error:
        assert isinstance(result, DeadLetter) and result.reason == "contract" and error in result.detail
        return
    assert result == CONTINUE and env.clipped == clipped and env.value == raw  # the original bytes are kept
    alert = env.decoded
    assert len(alert.message) <= 4096 and len(alert.rule_set) <= 255
    if "message" in clipped:
        assert alert.message.endswith("…[clipped]") and len(alert.message) == 4096


@pytest.mark.parametrize("fingerprint", ["g0:alert_type=ctr_drop", "group:ctr_drop:US|banner"])
def test_decode_parks_an_alert_in_the_group_namespace(fingerprint: str) -> None:
    """An alert whose fingerprint looks like a group's would share its PagerDuty incident: parked as a contract error."""
    alert = msgspec.structs.replace(make_alert(), fingerprint=fingerprint)
    result = DecodeStage()(Envelope(encode(alert)))
    assert isinstance(result, DeadLetter) and result.reason == "contract" and "group namespace" in result.detail
