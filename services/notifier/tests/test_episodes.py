"""One episode from first firing to recovery: escalations re-notify in place, the recovery keeps the evidence.

Stage tests run the real chain on the in-memory ledger with a function channel; channel tests
run the same chain with the real channels against the provider fakes on 127.0.0.1 (no broker).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest

from adwatch.contracts import Alert, duration_text, encode
from adwatch_dev.fakes import FakePagerDuty, FakeSlack, SmtpSink
from adwatch_notifier.channels import BaseChannel, build_channel
from adwatch_notifier.delivery import Delivery
from adwatch_notifier.formatting import Thread, recovery_line
from adwatch_notifier.outcomes import Continue, StageResult, Suppressed
from adwatch_notifier.routing import RoutingTable, load_routes, parse_routes
from adwatch_notifier.settings import NotifierSettings
from adwatch_notifier.stages import Envelope, Episode, Lease, Stage, build_stages

from .conftest import T0, make_alert
from .fakes import FakeClock, FuncChannel, MemoryLedger, drive

EVERY_SEVERITY = parse_routes("routes:\n  - channel: slack\n  - channel: pagerduty\n  - channel: email\n")
MINUTE = 60_000
LOW = make_alert(severity="low", current=0.04)
HIGH = make_alert(severity="high", current=0.03, window_start_ms=T0 + MINUTE)
CRITICAL = make_alert(severity="critical", current=0.02, window_start_ms=T0 + 2 * MINUTE)
RESOLVED = make_alert(status="resolved", severity="low", current=0.049, window_start_ms=T0 + 23 * MINUTE)


def chain(channel: BaseChannel, ledger: MemoryLedger, clock: FakeClock, table: RoutingTable) -> Sequence[Stage]:
    settings = NotifierSettings(channel="console", max_alert_age_seconds=0, cooldown_seconds=600)
    return build_stages(settings, channel, table, ledger, Lease("me", 30), threading.Event(), now=clock)


def run(stages: Sequence[Stage], alert: Alert, clock: FakeClock) -> StageResult:
    """The chain as the run loop drives it (a deferral lets its delay pass on ``clock``)."""
    env = Envelope(encode(alert))
    for stage in stages:
        result = drive(stage, env, clock)
        if result != Continue():
            return result
    return Continue()


# --- pure formatting -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ms", "text"),
    [
        pytest.param(45_000, "45 s", id="seconds"),
        pytest.param(23 * MINUTE, "23 min", id="minutes"),
        pytest.param(125 * MINUTE, "2 h 5 min", id="hours"),
        pytest.param(26 * 60 * MINUTE, "1 d 2 h", id="days"),
    ],
)
def test_duration_text(ms: int, text: str) -> None:
    assert duration_text(ms) == text


def test_recovery_line_says_what_fired_and_for_how_long() -> None:
    thread = Thread(
        peak="critical", since_ms=CRITICAL.detected_at_ms - 2 * MINUTE, fired_current=0.02, fired_expected=0.05
    )
    assert recovery_line(RESOLVED, thread) == (
        "resolved after 23 min · peak critical · firing 2.00% (expected 5.00%) · now 4.90%"
    )


def test_episode_record_is_small_and_reads_old_records() -> None:
    episode = Episode.after_firing(None, HIGH, "#ads", 1)
    assert len(episode.encode()) < 120
    assert Episode.parse(episode.encode()) == episode
    assert Episode.parse('{"severity":"high","target":"#t","at":5}') == Episode("high", "#t", 5)  # before this change


# --- the chain, function channel -----------------------------------------------------------------
def test_escalation_low_high_critical_is_one_episode_updated_in_place() -> None:
    clock = FakeClock()
    ledger = MemoryLedger(clock)
    channel = FuncChannel(name="slack", send_fn=lambda alert, target, ref: Delivery("slack", target, ref or "C1|1.0"))
    stages = chain(channel, ledger, clock, EVERY_SEVERITY)
    same_again = make_alert(severity="critical", window_start_ms=T0 + 3 * MINUTE)
    results = [run(stages, a, clock) for a in (LOW, HIGH, CRITICAL, same_again)]
    assert results == [Continue(), Continue(), Continue(), Suppressed("cooldown")]  # escalations bypass the cooldown
    # the first opens the episode; each escalation is sent with the episode's ref (updated in place)
    assert [ref for _, _, ref in channel.calls] == [None, "C1|1.0", "C1|1.0"]
    assert [t.escalated_from if t else None for t in channel.threads[:3]] == [None, "low", "high"]
    episode = Episode.parse(ledger.value("episode", LOW.fingerprint))
    assert episode is not None
    assert (episode.severity, episode.since_ms) == ("critical", LOW.detected_at_ms)  # highest, since the first
    assert (episode.current, episode.expected) == (0.02, 0.05)  # the peak firing's values
    assert ledger.value("ref", LOW.fingerprint) == "C1|1.0"  # still the original message


def test_recovery_carries_the_firing_evidence() -> None:
    clock = FakeClock()
    ledger = MemoryLedger(clock)
    channel = FuncChannel(name="slack", send_fn=lambda alert, target, ref: Delivery("slack", target, ref or "C1|1.0"))
    stages = chain(channel, ledger, clock, EVERY_SEVERITY)
    for alert in (HIGH, CRITICAL, RESOLVED):
        assert run(stages, alert, clock) == Continue()
    resolved, thread = channel.rendered[-1], channel.threads[-1]
    assert resolved.severity == "critical" and channel.calls[-1][2] == "C1|1.0"
    assert thread == Thread(peak="critical", since_ms=HIGH.detected_at_ms, fired_current=0.02, fired_expected=0.05)
    assert recovery_line(resolved, thread).startswith("resolved after 22 min · peak critical")
    assert ledger.value("episode", LOW.fingerprint) is None


def test_escalation_goes_where_the_episode_is() -> None:
    """PagerDuty: a trigger to another routing key would be another integration's incident."""
    table = parse_routes(
        "routes:\n  - channel: pagerduty\n    severities: [critical]\n    target: war-room\n"
        "  - channel: pagerduty\n    severities: [high]\n"
    )
    clock = FakeClock()
    channel = FuncChannel(name="pagerduty", provider_dedup=True)
    stages = chain(channel, MemoryLedger(clock), clock, table)
    assert run(stages, HIGH, clock) == Continue() and run(stages, CRITICAL, clock) == Continue()
    assert [target for _, target, _ in channel.calls] == ["default-target", "default-target"]


# --- the chain, real channels against the provider fakes ---------------------------------------------
def through(channel: BaseChannel, alerts: Sequence[Alert], table: RoutingTable = EVERY_SEVERITY) -> list[StageResult]:
    clock = FakeClock()
    stages = chain(channel, MemoryLedger(clock), clock, table)
    try:
        return [run(stages, a, clock) for a in alerts]
    finally:
        channel.close()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def test_slack_bot_escalation_updates_in_place_and_replies_in_thread(slack: FakeSlack) -> None:
    settings = NotifierSettings(
        channel="slack", slack_bot_token="xoxb-t", slack_api_url=slack.api_url, slack_channel="#ads"
    )
    assert through(build_channel(settings), [LOW, HIGH, CRITICAL, RESOLVED]) == [Continue()] * 4
    (original,) = slack.top_level()  # one message for the whole episode
    assert original.updates == 3
    assert [m.text for m in slack.replies(original.ts)] == [
        "escalated low -> high",
        "escalated high -> critical",
        "resolved after 23 min · peak critical · firing 2.00% (expected 5.00%) · now 4.90%",
    ]
    assert original.text.startswith("✅ Resolved") and original.text.endswith("now 4.90%")  # how it ended
    note = original.blocks[1]["text"]["text"]
    assert "peak critical" in note and "firing 2.00% (expected 5.00%)" in note and "now 4.90%" in note
    assert [r.path.rsplit("/", 1)[-1] for r in slack.requests].count("chat.update") == 3


def test_slack_bot_escalation_of_a_deleted_message_is_posted_anew(slack: FakeSlack) -> None:
    settings = NotifierSettings(
        channel="slack", slack_bot_token="xoxb-t", slack_api_url=slack.api_url, slack_channel="#ads"
    )
    channel = build_channel(settings)
    clock = FakeClock()
    stages = chain(channel, MemoryLedger(clock), clock, EVERY_SEVERITY)
    assert run(stages, HIGH, clock) == Continue()
    slack.messages.clear()  # someone deleted it
    assert run(stages, CRITICAL, clock) == Continue()
    (posted,) = slack.top_level()
    assert posted.text.startswith("escalated high -> critical")


def test_slack_webhook_escalation_is_a_new_message_saying_so(slack: FakeSlack) -> None:
    settings = NotifierSettings(channel="slack", slack_webhook_url=slack.webhook_url)
    assert through(build_channel(settings), [LOW, HIGH, CRITICAL, RESOLVED]) == [Continue()] * 4
    texts = [r.json()["text"] for r in slack.requests]
    assert texts[0].startswith("🚨 CTR drop!")
    assert texts[1].startswith("escalated low -> high: ") and texts[2].startswith("escalated high -> critical: ")
    assert texts[3].startswith("✅ Resolved") and "· resolved after 23 min · peak critical" in texts[3]


def test_pagerduty_escalation_is_a_trigger_on_the_same_dedup_key() -> None:
    with FakePagerDuty() as pd:
        settings = NotifierSettings(channel="pagerduty", pagerduty_routing_key="RK", pagerduty_url=pd.url)
        results = through(build_channel(settings), [LOW, HIGH, CRITICAL, RESOLVED], load_routes())
        events = [r.json() for r in pd.requests]
    assert results == [Suppressed("unrouted"), Continue(), Continue(), Continue()]  # low does not page
    assert [(e["event_action"], e.get("payload", {}).get("severity")) for e in events] == [
        ("trigger", "error"),
        ("trigger", "critical"),
        ("resolve", None),
    ]
    assert len({e["dedup_key"] for e in events}) == 1 and {e["routing_key"] for e in events} == {"RK"}
    assert events[1]["payload"]["custom_details"]["escalated_from"] == "high"
    assert events[1]["payload"]["custom_details"]["episode"] == "escalated high -> critical"


def test_email_escalation_and_recovery_answer_the_first_mail() -> None:
    with SmtpSink() as sink:
        settings = NotifierSettings(
            channel="email",
            smtp_host=sink.host,
            smtp_port=sink.port,
            smtp_starttls=False,
            smtp_from="adwatch@example.com",
            smtp_to="oncall@example.com",
        )
        assert through(build_channel(settings), [LOW, HIGH, CRITICAL, RESOLVED]) == [Continue()] * 4
        first, *rest = sink.wait_for(4)
    root = first["Message-ID"]
    assert first["In-Reply-To"] is None
    assert all(m["In-Reply-To"] == m["References"] == root for m in rest)
    assert all(m["Subject"] == "Re: " + first["Subject"] for m in rest)
    bodies = [m.get_body(("plain",)).get_content() for m in rest]  # type: ignore[union-attr]
    assert bodies[0].startswith("Escalated low -> high") and bodies[1].startswith("Escalated high -> critical")
    assert bodies[2].startswith("Resolved after 23 min · peak critical · firing 2.00% (expected 5.00%) · now 4.90%")


def test_console_box_says_what_changed() -> None:
    channel = build_channel(NotifierSettings(channel="console"))
    assert channel.render(CRITICAL, "", Thread(escalated_from="high")).startswith("escalated high -> critical\n┌")
    assert channel.render(CRITICAL, "").startswith("┌")
