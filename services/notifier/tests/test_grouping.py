"""Grouping (Alertmanager dispatch semantics) on the in-memory group store, a function channel and a fake clock."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest

from adwatch.contracts import Alert, encode
from adwatch_dev.fakes import FakePagerDuty, FakeSlack, SmtpSink
from adwatch_notifier.channels import BaseChannel, build_channel
from adwatch_notifier.delivery import Delivery, DeliveryError
from adwatch_notifier.grouping import FlushResult, GroupFlusher, GroupSpec, MemoryGroupStore, change_line, summary
from adwatch_notifier.outcomes import Continue, DeadLetter, Grouped, StageResult, Suppressed
from adwatch_notifier.retry import RetryPolicy
from adwatch_notifier.routing import RoutingTable, parse_routes
from adwatch_notifier.settings import NotifierSettings
from adwatch_notifier.stages import Envelope, GroupStage

from .conftest import make_alert
from .fakes import FakeClock, FuncChannel, MemoryLedger, failing

ROUTES = """
routes:
  - channel: console
    alert_types: [ctr_drop, ecpm_drop]
    group_by: [alert_type]
    group_wait: 30s
    group_interval: 5m
    repeat_interval: 1h
  - channel: console
"""
TABLE = parse_routes(ROUTES)
COUNTRIES = ["".join(p) for p in itertools.product("ABCDEFGHIJ", "KLMNO")]  # 50 codes


def env(alert: Alert) -> Envelope:
    return Envelope(encode(alert), alert=alert)


def storm(alert_type: str = "ctr_drop", status: str = "firing") -> list[Alert]:
    formats = ("banner", "interstitial", "rewarded_video", "native")
    return [
        make_alert(country=c, ad_format=f, alert_type=alert_type, status=status) for c in COUNTRIES for f in formats
    ]


@pytest.mark.parametrize(
    ("seen", "alert", "expected"),
    [
        pytest.param([], make_alert(alert_type="traffic_spike"), Continue(), id="ungrouped-route"),
        pytest.param([], make_alert(), Grouped(), id="grouped-firing"),
        pytest.param([], make_alert(status="resolved"), Suppressed("never_notified"), id="resolve-without-firing"),
        pytest.param([make_alert()], make_alert(status="resolved", severity="low"), Grouped(), id="resolve-joins"),
    ],
)
def test_group_stage(seen: list[Alert], alert: Alert, expected: StageResult) -> None:
    store, clock = MemoryGroupStore(), FakeClock()
    stage = GroupStage(TABLE, FuncChannel(name="console"), store, now=clock)  # type: ignore[arg-type]
    for a in seen:
        stage(env(a))
    assert stage(env(alert)) == expected


def test_storm_of_200_becomes_one_notification_per_group_none_lost() -> None:
    store, clock, channel = MemoryGroupStore(), FakeClock(), FuncChannel(name="console")
    stage = GroupStage(TABLE, channel, store, now=clock)  # type: ignore[arg-type]
    flusher = _flusher(store, channel, clock)
    alerts = storm("ctr_drop")[:150] + storm("ecpm_drop")[:50]
    for i, alert in enumerate(alerts):
        clock.s += 0.25  # 200 alerts in 50 s
        assert stage(env(alert)) == Grouped()
        flusher.tick()
        if i == 125:  # ctr_drop's group_wait (30 s) is over: its first notification already went
            assert len(channel.rendered) == 1
    clock.s += 30
    flusher.tick()
    # ctr_drop: at 30 s (the first 120), then its remaining 30 wait for group_interval; ecpm_drop: once
    assert len(channel.rendered) == 2
    clock.s += 300
    flusher.tick()
    assert len(channel.rendered) == 3
    last_by_group = {n.fingerprint: n for n in channel.rendered}
    assert set(last_by_group) == {"g0:alert_type=ctr_drop", "g0:alert_type=ecpm_drop"}
    for a in alerts:
        note = last_by_group[f"g0:alert_type={a.alert_type}"]
        assert f" {a.where} " in note.message
    assert last_by_group["g0:alert_type=ctr_drop"].message.startswith("150 firing, 0 resolved")


def test_group_timers_repeat_and_resolve() -> None:
    store, clock, channel = MemoryGroupStore(), FakeClock(), FuncChannel(name="console")
    spec = GroupSpec(("alert_type",), wait_s=30, interval_s=300, repeat_s=3600)
    stage = GroupStage(TABLE, channel, store, now=clock)  # type: ignore[arg-type]
    flusher = GroupFlusher(store, channel, {0: spec}, owner="me", now=clock)  # type: ignore[arg-type]
    us, de = make_alert(country="US"), make_alert(country="DE")
    stage(env(us))
    clock.s += 29
    assert flusher.tick().sent == 0  # group_wait
    clock.s += 1
    assert flusher.tick().sent == 1
    clock.s += 300
    assert flusher.tick().sent == 0  # unchanged: no news before repeat_interval
    stage(env(de))
    clock.s += 300
    assert flusher.tick().sent == 1  # changed: at the next group_interval
    for _ in range(12):  # unchanged for an hour after the last flush
        clock.s += 300
        flusher.tick()
    assert len(channel.rendered) == 3  # one repeat after an hour unchanged
    stage(env(make_alert(country="US", status="resolved")))
    clock.s += 300
    flusher.tick()
    assert channel.rendered[-1].status == "firing" and channel.rendered[-1].message.startswith("1 firing, 1 resolved")
    stage(env(make_alert(country="DE", status="resolved")))
    clock.s += 300
    flusher.tick()
    assert channel.rendered[-1].status == "resolved"
    assert store.groups == {} and store.schedule == {}  # the group is gone


def test_failed_group_send_is_kept_and_tried_again() -> None:
    from adwatch_notifier.delivery import DeliveryError

    store, clock = MemoryGroupStore(), FakeClock()
    results: list[object] = [DeliveryError("serverError", "503", retryable=True)]

    def send(alert: Alert, target: str, ref: str | None) -> Delivery:
        if results:
            raise results.pop()  # type: ignore[misc]
        return Delivery("func", target)

    channel = FuncChannel(send_fn=send, name="console")
    stage = GroupStage(TABLE, channel, store, now=clock)  # type: ignore[arg-type]
    flusher = _flusher(store, channel, clock)
    stage(env(make_alert()))
    clock.s += 30
    assert flusher.tick().failed == 1
    clock.s += 300
    assert flusher.tick().sent == 1


def _flusher(store: Any, channel: Any, clock: Any, **options: Any) -> GroupFlusher:
    """The flusher of TABLE's grouped route on ``channel``, owned by "me", on the test's clock."""
    return GroupFlusher(store, channel, {0: TABLE.routes[0].group}, owner="me", now=clock, **options)  # type: ignore[dict-item]


def _parked() -> tuple[list[tuple[str, str, bytes, str]], Callable[..., None]]:
    parked: list[tuple[str, str, bytes, str]] = []

    def park(key: str, fp: str, value: bytes, letter: DeadLetter, attempts: int, target: str) -> None:
        parked.append((key, fp, value, letter.reason))

    return parked, park


def test_group_send_uses_the_delivery_rules_rate_limit_retry_after_dead_letter() -> None:
    """Shared rate-limit slot, Retry-After instead of group_interval, a dead letter per member on a permanent error."""
    store, clock = MemoryGroupStore(), FakeClock()
    ledger = MemoryLedger(clock)
    errors = [
        DeliveryError("rateLimited", "HTTP 429", retryable=True, retry_after=20),
        DeliveryError("clientError", "HTTP 400 invalid_payload", retryable=False),
    ]

    def send(alert: Alert, target: str, ref: str | None) -> Delivery:
        if errors:
            raise errors.pop(0)
        return Delivery("func", target)

    channel = FuncChannel(send_fn=send, name="console", min_interval_ms=1000)
    stage = GroupStage(TABLE, channel, store, now=clock)  # type: ignore[arg-type]
    parked, park = _parked()
    flusher = _flusher(
        store,
        channel,
        clock,
        monotonic=clock,
        rand=lambda: 0.0,
        slots=ledger,
        park=park,
        policy=RetryPolicy(initial_s=1, max_s=60, deadline_s=300),
    )
    us, de = make_alert(country="US"), make_alert(country="DE")
    stage(env(us)), stage(env(de))
    clock.s += 30
    assert ledger.acquire_slot(channel.default_target, 1000) == 0  # a single delivery just took the slot
    assert flusher.tick() == FlushResult(deferred=1)
    clock.s += 1
    assert flusher.tick() == FlushResult(failed=1)  # 429, Retry-After 20 s
    clock.s += 19
    assert flusher.tick() == FlushResult()  # not yet: Retry-After, not group_interval (300 s), is the wait
    clock.s += 1
    assert flusher.tick() == FlushResult(failed=1, dead_lettered=1)  # permanent: given up, no more tries
    assert sorted(fp for _, fp, _, _ in parked) == sorted([us.fingerprint, de.fingerprint])
    assert {reason for *_, reason in parked} == {"permanent"}
    assert {value for _, _, value, _ in parked} == {encode(us), encode(de)}  # the original bytes
    clock.s += 300
    assert flusher.tick() == FlushResult()  # the given-up state is not sent again until it changes
    stage(env(make_alert(country="FR")))
    clock.s += 300
    assert flusher.tick().sent == 1


def test_group_retries_stop_at_the_deadline() -> None:
    store, clock = MemoryGroupStore(), FakeClock()
    channel = FuncChannel(send_fn=failing(DeliveryError("serverError", "HTTP 500", retryable=True)), name="console")
    stage = GroupStage(TABLE, channel, store, now=clock)  # type: ignore[arg-type]
    parked, park = _parked()
    flusher = _flusher(
        store,
        channel,
        clock,
        monotonic=clock,
        rand=lambda: 0.0,
        park=park,
        policy=RetryPolicy(initial_s=1, max_s=60, deadline_s=300),
    )
    stage(env(make_alert()))
    clock.s += 30
    results = []
    for _ in range(1000):
        results.append(flusher.tick())
        if parked:
            break
        clock.s += 1
    assert [r for r in results if r.dead_lettered] == [FlushResult(failed=1, dead_lettered=1)]
    assert parked[0][3] == "deadline" and 250 < clock.s - FakeClock().s - 30 <= 300
    assert 5 < sum(r.failed for r in results) < 20  # backoff, not one attempt per tick


def test_a_poisoned_group_is_dead_lettered_and_the_others_go_on() -> None:
    store, clock, channel = MemoryGroupStore(), FakeClock(), FuncChannel(name="console")
    stage = GroupStage(TABLE, channel, store, now=clock)  # type: ignore[arg-type]
    parked, park = _parked()
    flusher = _flusher(store, channel, clock, park=park)
    store.add("g0:alert_type=ctr_drop", "", "ctr_drop:US|banner", b"\xff not an alert", int(clock() * 1000))
    stage(env(make_alert(alert_type="ecpm_drop")))
    clock.s += 30
    assert flusher.tick() == FlushResult(sent=1, dead_lettered=1)
    assert parked == [("g0:alert_type=ctr_drop", "ctr_drop:US|banner", b"\xff not an alert", "internal")]
    assert [a.alert_type for a in channel.rendered] == ["ecpm_drop"]
    assert "g0:alert_type=ctr_drop" not in store.groups and "g0:alert_type=ctr_drop" not in store.schedule


def test_silence_added_after_buffering_mutes_the_member_at_send_time() -> None:
    """A member buffered before a silence is not notified nor repeated; it is again once the silence ends."""
    from adwatch_notifier.silences import MemorySilenceStore, new_silence
    from adwatch_notifier.stages import SilenceStage

    store, clock, channel = MemoryGroupStore(), FakeClock(), FuncChannel(name="console")
    silences = MemorySilenceStore()
    check = SilenceStage(silences, now=clock, refresh_s=0)
    stage = GroupStage(TABLE, channel, store, now=clock)  # type: ignore[arg-type]
    muted: list[str] = []
    flusher = _flusher(
        store,
        channel,
        clock,
        muted=check.muted,
        on_suppressed=muted.append,
    )
    stage(env(make_alert(country="US"))), stage(env(make_alert(country="DE")))
    silence = new_silence(["country=US"], now_s=clock(), duration_s=7200, created_by="oncall", comment="deploy")
    silences.add(silence)  # after both were buffered
    clock.s += 30
    assert flusher.tick().sent == 1
    assert "DE banner" in channel.rendered[-1].message and "US banner" not in channel.rendered[-1].message
    assert muted == ["silenced"]
    clock.s += 3600  # repeat_interval: the repeat does not list it either
    assert flusher.tick().sent == 1 and "US banner" not in channel.rendered[-1].message
    silences.expire(silence.id, clock())
    clock.s += 300
    assert flusher.tick().sent == 1 and "US banner" in channel.rendered[-1].message
    assert channel.threads[-1] is not None and "+1 joined: US banner" in (channel.threads[-1].change or "")


@pytest.mark.parametrize("channel", ["slack", "pagerduty", "email"])
def test_default_routes_group_a_64_segment_problem_into_one_notification(channel: str) -> None:
    from adwatch_notifier.routing import DEFAULT_ROUTES_YAML

    table = parse_routes(DEFAULT_ROUTES_YAML)
    store, clock, func = MemoryGroupStore(), FakeClock(), FuncChannel(name=channel)
    stage = GroupStage(table, func, store, now=clock)  # type: ignore[arg-type]
    specs = {i: r.group for i, r in enumerate(table.routes) if r.channel == channel and r.group is not None}
    flusher = GroupFlusher(store, func, specs, owner="me", now=clock)  # type: ignore[arg-type]
    alerts = [
        make_alert(country=c, ad_format=f, severity="critical")
        for c in COUNTRIES[:16]
        for f in ("banner", "native", "interstitial", "rewarded_video")
    ]
    assert len(alerts) == 64 and all(stage(env(a)) == Grouped() for a in alerts)
    clock.s += 10  # group_wait
    assert flusher.tick().sent == 1 and len(func.rendered) == 1


def test_summary_clips_long_groups() -> None:
    alerts = storm("ctr_drop") + storm("ecpm_drop")  # 400 members
    note = summary("g0:alert_type=x", alerts, "d")
    assert len(note.message) <= 4096 and note.message.endswith("more")
    assert note.severity == "high" and note.fingerprint == "g0:alert_type=x"


def test_build_stages_groups_and_the_processor_counts_it() -> None:
    """The real chain: a grouped route's alert is held (``Grouped``, counted), another route's is delivered."""
    from prometheus_client import CollectorRegistry

    from adwatch_notifier.loop import RecordProcessor
    from adwatch_notifier.metrics import NotifierMetrics
    from adwatch_notifier.outcomes import Delivered
    from adwatch_notifier.settings import NotifierSettings
    from adwatch_notifier.stages import Lease, build_stages

    from .fakes import ListDeadLetters, MemoryLedger

    clock, registry, store = FakeClock(), CollectorRegistry(), MemoryGroupStore()
    channel, ledger = FuncChannel(name="console"), MemoryLedger(clock)
    settings = NotifierSettings(channel="console", cooldown_seconds=0, max_alert_age_seconds=0)
    stages = build_stages(
        settings,
        channel,
        TABLE,
        ledger,
        Lease("me", 30),
        threading.Event(),
        now=clock,
        groups=store,  # type: ignore[arg-type]
    )
    assert [s.id for s in stages][:3] == ["decode", "lifecycle", "group"]
    process = RecordProcessor(stages, "console", ledger, ListDeadLetters(), NotifierMetrics(registry))
    assert process(Envelope(encode(make_alert()))) == Grouped()
    assert process(Envelope(encode(make_alert(alert_type="traffic_spike")))) == Delivered()
    value = registry.get_sample_value(
        "adwatch_notifier_notifications_total", {"channel": "console", "outcome": "grouped"}
    )
    assert value == 1
    assert list(store.groups) == ["g0:alert_type=ctr_drop"]


# --- one notification per group, followed in place -----------------------------------------------
def grouped_table(channel: str) -> RoutingTable:
    return parse_routes(
        f"routes:\n  - channel: {channel}\n    group_by: [alert_type]\n"
        "    group_wait: 30s\n    group_interval: 5m\n    repeat_interval: 1h\n"
    )


def group_life(channel: BaseChannel) -> list[int]:
    """US fires; DE joins; an hour unchanged (a repeat); US recovers; DE recovers. Sends per tick."""
    store, clock = MemoryGroupStore(), FakeClock()
    table = grouped_table(channel.name)
    stage = GroupStage(table, channel, store, now=clock)
    flusher = GroupFlusher(store, channel, {0: table.routes[0].group}, owner="me", now=clock)  # type: ignore[dict-item]
    sent: list[int] = []

    def tick(seconds: float) -> None:
        clock.s += seconds
        sent.append(flusher.tick().sent)

    stage(env(make_alert(country="US")))
    tick(30)
    stage(env(make_alert(country="DE")))
    tick(300)
    for _ in range(12):
        tick(300)
    stage(env(make_alert(country="US", status="resolved")))
    tick(300)
    stage(env(make_alert(country="DE", status="resolved")))
    tick(300)
    channel.close()
    return sent


def test_group_changes_are_told_as_one_line_each() -> None:
    channel = FuncChannel(name="console", send_fn=lambda alert, target, ref: Delivery("f", target, ref or "C1|1.0"))
    assert sum(group_life(channel)) == 5
    assert [t.change if t else None for t in channel.threads] == [
        None,  # the first notification opens the group's thread
        "+1 joined: DE banner · 2 firing",
        "still firing: 2 segments, for 1 h 5 min",
        "1 recovered: US banner · 1 firing",
        "all recovered after 1 h 15 min",
    ]
    assert [c[2] for c in channel.calls] == [
        None,
        "C1|1.0",
        "C1|1.0",
        "C1|1.0",
        "C1|1.0",
    ]  # every one follows the first


def test_grouped_slack_bot_is_one_message_updated_in_place_with_thread_replies() -> None:
    with FakeSlack() as slack:
        settings = NotifierSettings(
            channel="slack", slack_bot_token="xoxb-t", slack_api_url=slack.api_url, slack_channel="#ads"
        )
        group_life(build_channel(settings))
        (message,) = slack.top_level()
        replies = [m.text for m in slack.replies(message.ts)]
    assert message.updates == 4 and message.text.startswith("0 firing, 1 resolved in group alert_type=ctr_drop")
    assert replies == [
        "+1 joined: DE banner · 2 firing",
        "still firing: 2 segments, for 1 h 5 min",
        "1 recovered: US banner · 1 firing",
        "all recovered after 1 h 15 min",
    ]


def test_grouped_slack_webhook_posts_each_change_as_a_message_saying_it() -> None:
    with FakeSlack() as slack:
        group_life(build_channel(NotifierSettings(channel="slack", slack_webhook_url=slack.webhook_url)))
        texts = [r.json()["text"] for r in slack.requests]
    assert len(texts) == 5 and texts[1].startswith("+1 joined: DE banner · 2 firing: 2 firing, 0 resolved")


def test_grouped_pagerduty_is_one_incident_per_group() -> None:
    with FakePagerDuty() as pd:
        settings = NotifierSettings(channel="pagerduty", pagerduty_routing_key="RK", pagerduty_url=pd.url)
        group_life(build_channel(settings))
        events = [r.json() for r in pd.requests]
    assert [e["event_action"] for e in events] == ["trigger"] * 4 + ["resolve"]
    assert {e["dedup_key"] for e in events} == {"group:g0:alert_type=ctr_drop"}  # namespaced: never an alert's key
    assert events[1]["payload"]["custom_details"]["episode"] == "+1 joined: DE banner · 2 firing"


def test_grouped_email_is_one_thread_per_group() -> None:
    with SmtpSink() as sink:
        settings = NotifierSettings(
            channel="email",
            smtp_host=sink.host,
            smtp_port=sink.port,
            smtp_starttls=False,
            smtp_from="adwatch@example.com",
            smtp_to="oncall@example.com",
        )
        group_life(build_channel(settings))
        first, *rest = sink.wait_for(5)
    assert len(rest) == 4 and first["In-Reply-To"] is None
    assert all(m["In-Reply-To"] == first["Message-ID"] and m["Subject"] == "Re: " + first["Subject"] for m in rest)
    assert rest[-1].get_body(("plain",)).get_content().startswith("All recovered after 1 h 15 min")  # type: ignore[union-attr]


US = make_alert(country="US").fingerprint


@pytest.mark.parametrize(
    ("before", "alerts", "repeat", "line"),
    [
        pytest.param([US], [make_alert(country="US")], True, "still firing: 1 segment, for 10 min", id="repeat"),
        pytest.param(
            [US],
            [make_alert(country="US", severity="critical")],
            False,
            "severity changed · 1 firing, top critical",
            id="severity-changed",
        ),
        pytest.param(
            [],
            [make_alert(country="US"), make_alert(country="DE")],
            False,
            "+2 joined: DE banner, US banner · 2 firing",
            id="joined",
        ),
        pytest.param(
            [US], [make_alert(country="US", status="resolved")], False, "all recovered after 10 min", id="all-ok"
        ),
    ],
)
def test_change_line(before: list[str], alerts: list[Alert], repeat: bool, line: str) -> None:
    assert change_line({a.fingerprint: a for a in alerts}, before, 0, 600_000, repeat) == line


def test_a_group_key_is_printable_ascii_whatever_the_dimension_values() -> None:
    """It is the group alert's fingerprint and PagerDuty dedup_key: spaces and non-ASCII are encoded."""
    from adwatch_notifier.grouping import group_key

    key = group_key(0, GroupSpec(by=("app_id", "country")), {"app_id": "Jeu de l’été", "country": "FR"})
    assert key == "g0:app_id=Jeu%20de%20l%E2%80%99%C3%A9t%C3%A9,country=FR"
    assert all(0x21 <= ord(ch) <= 0x7E for ch in key)
