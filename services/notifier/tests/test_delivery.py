"""Delivery guarantees against the real broker and Redis: cooldown, retries, DLQ, crashes, isolation."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adwatch.contracts import Alert, encode
from adwatch.service import Heartbeat
from adwatch_dev.fakes import FakePagerDuty, FakeSlack, FakeWebhook, RecordedRequest
from adwatch_dev.testing import unique
from adwatch_notifier import DeadLetter, Delivered, Suppressed, run
from adwatch_notifier.replay import Selection, choose


class Clock:
    def __init__(self, s: float) -> None:
        self.s = s

    def __call__(self) -> float:
        return self.s


def test_cooldown_suppresses_repeats_within_the_window(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    clock, out = Clock(2_000_000_000.0), io.StringIO()
    settings = harness.settings("console", cooldown_seconds=600)
    t0 = 1_767_225_600_000
    harness.publish(alert_factory(window_start_ms=t0), alert_factory(window_start_ms=t0 + 60_000))
    first = harness.run_once(settings, 2, now=clock, stream=out)
    assert first.outcomes == {Delivered(): 1, Suppressed("cooldown"): 1}
    clock.s += 601
    harness.publish(alert_factory(window_start_ms=t0 + 120_000), alert_factory(status="resolved"))
    second = harness.run_once(settings, 2, now=clock, stream=out)
    assert second.outcomes == {Delivered(): 2}  # window over; resolved bypasses the cooldown anyway
    assert out.getvalue().count("┌") == 3


class Crash(BaseException):
    """The process dying (not an error a stage would classify): nothing after it runs."""


def test_crash_after_send_before_commit_sends_nothing_twice(
    harness: Any, alert_factory: Callable[..., Alert], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the provider took the alert and the ledger recorded it, before the
    offset commit: the record is redelivered and skipped as a duplicate."""
    from adwatch_notifier import service as notifier_service

    real_consumer = notifier_service.make_consumer

    class DiesAtCommit:
        """The consumer of a process killed at its first commit: nothing is ever committed."""

        def __init__(self, consumer: Any) -> None:
            self._consumer, self._dead = consumer, False

        def __getattr__(self, name: str) -> Any:
            return getattr(self._consumer, name)

        def commit(self, *args: Any, **kwargs: Any) -> None:
            if not self._dead:  # later commits (the revoke on close) are the dead process's: none
                self._dead = True
                raise Crash("killed between send and commit")

    with FakeWebhook() as hook:
        settings = harness.settings("webhook", webhook_url=hook.url + "/hook")
        harness.publish(alert_factory())
        monkeypatch.setattr(notifier_service, "make_consumer", lambda *a, **kw: DiesAtCommit(real_consumer(*a, **kw)))
        with pytest.raises(Crash):
            harness.run_once(settings, 1)
        monkeypatch.undo()
        assert len(hook.requests) == 1
        stats = harness.run_once(settings, 1)  # same group: the record is redelivered
        assert stats.outcomes == {Suppressed("duplicate"): 1}
        assert len(hook.requests) == 1


def test_sigkill_while_request_in_flight_then_restart(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    """Killed with the provider holding the request: the restart must not resend (parked as in doubt).

    Also checks that the webhook URL (a secret) never shows up in debug logs.
    """
    secret_path = "/hooks/T0KEN-s3cr3t-9f8e7d"
    with FakeWebhook() as hook:
        hook.hold_next(5.0)
        env = {
            **os.environ,
            **harness.env("webhook", ADWATCH_NOTIFIER_WEBHOOK_URL=hook.url + secret_path, ADWATCH_LOG_LEVEL="DEBUG"),
        }
        cmd = [sys.executable, "-m", "adwatch_notifier"]
        harness.publish(alert_factory())
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            hook.wait_for(1, timeout_s=60)
        finally:
            os.kill(first.pid, signal.SIGKILL)
            out1 = first.communicate(timeout=30)[0].decode()
        second = subprocess.run([*cmd, "--max-messages", "1"], env=env, capture_output=True, timeout=90, check=True)
        out2 = (second.stdout + second.stderr).decode()
        assert len(hook.requests) == 1
    [letter] = harness.dead_letters(1)
    assert letter.reason.startswith("in_doubt") and letter.channel == "webhook"
    for output in (out1, out2):
        assert "T0KEN-s3cr3t" not in output
    assert "parked alert" in out2


def test_retry_after_then_permanent_then_deadline(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    with FakeSlack() as slack:
        # Alerts are decided side by side now (a waiting one delays no other): failures per alert.
        slack.fail_next(429, retry_after=0.3)  # the first request is the US alert's; its retry succeeds
        slack.fail_when = lambda req: 400 if b"DE banner" in req.body else 500 if b"FR banner" in req.body else None
        harness.publish(alert_factory(country="US"), alert_factory(country="DE"), alert_factory(country="FR"))
        settings = harness.settings("slack", slack_webhook_url=slack.webhook_url, retry_deadline_seconds=1.0)
        stats = harness.run_once(settings, 3)
        requests = list(slack.requests)
    assert stats.outcomes == {Delivered(): 1, DeadLetter("permanent"): 1, DeadLetter("deadline"): 1}
    us = [r for r in requests if b"US banner" in r.body]
    assert len(us) == 2 and us[1].at - us[0].at >= 0.3  # Retry-After honoured
    permanent, deadline = harness.dead_letters(2)
    assert permanent.attempts == 1 and "clientError" in permanent.reason and "HTTP 400" in permanent.reason
    assert (
        deadline.attempts > 1 and deadline.reason.startswith("deadline exceeded") and "serverError" in deadline.reason
    )
    assert "DE" in permanent.payload and deadline.channel == "slack"
    assert "/services/" not in permanent.reason + deadline.reason


def test_slack_outage_does_not_delay_pagerduty(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    """Two channel consumers: Slack keeps failing; PagerDuty still gets every high alert, and no low one."""
    with FakeSlack() as slack, FakePagerDuty() as pd:
        slack.fail_next(503, times=1000)
        harness.start(harness.settings("slack", slack_webhook_url=slack.webhook_url, retry_deadline_seconds=120))
        harness.start(harness.settings("pagerduty", pagerduty_routing_key="RK-123", pagerduty_url=pd.url))
        low = alert_factory(country="GB", severity="low")
        highs = [alert_factory(country=c, severity="high") for c in ("US", "DE", "FR")]
        harness.publish(low, *highs)
        got = pd.wait_for(3, timeout_s=60, accepted=True)
        # every high alert, no low one; in any order: alerts of different fingerprints are sent concurrently
        # (DELIVERY_WORKERS), only one fingerprint's records keep their order (test_loop, test_workers)
        assert sorted(r.json()["payload"]["group"] for r in got) == ["DE", "FR", "US"]
        slack.wait_for(1, timeout_s=30)  # the Slack consumer is running (it may start after PagerDuty's)
        assert not slack.accepted  # ... and still stuck on its first alert
        harness.stop_all()
        assert len(pd.requests) == 3


def test_malformed_records_are_dead_lettered(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    bad_severity = encode(alert_factory()).replace(b'"severity":"high"', b'"severity":"apocalyptic"')
    harness.publish(b"{not json", bad_severity, alert_factory())
    stats = harness.run_once(harness.settings("console"), 3, stream=io.StringIO())
    assert stats.outcomes == {DeadLetter("contract"): 2, Delivered(): 1}
    garbage, wrong = harness.dead_letters(2)
    assert garbage.reason.startswith("ContractError") and garbage.payload == "{not json"
    assert "severity" in wrong.reason and garbage.stage == "decode"


def test_slack_500_on_one_alert_while_others_flow(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    """Issue 15: one alert's Slack outage (retried for minutes) delays the others by under a second."""
    with FakeSlack() as slack:
        slack.fail_when = lambda req: 500 if b"US banner" in req.body else None
        settings = harness.settings("slack", slack_webhook_url=slack.webhook_url, retry_deadline_seconds=600)
        stop = harness.start(settings)
        harness.publish(alert_factory(country="US"))  # keeps failing
        slack.wait_for(2, timeout_s=60)  # the consumer runs, US failing and retried
        others = [alert_factory(country=c) for c in ("DE", "FR", "GB", "IT")]
        published = time.time()
        harness.publish(*others)
        got = [r for r in slack.wait_for(len(others), timeout_s=30, accepted=True)]
        delays = [r.at - published for r in got]
        stop.set()
    assert len(got) == 4 and max(delays) < 1.5, delays
    assert all(b"US banner" not in r.body for r in got)


class HangingSlack(FakeSlack):
    """A Slack that accepts US's request and answers it only ``hang_s`` later (a wedged provider)."""

    hang_s = 6.0
    answered_hung_at = 0.0

    def _respond(self, req: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        answer = super()._respond(req)
        if b"US banner" in req.body:
            time.sleep(self.hang_s)
            self.answered_hung_at = time.time()
        return answer


def test_hanging_provider_delays_no_other_alert(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    """Issue 15: Slack holds one alert's request for 6 s (under the 10 s request timeout): the other alerts of
    the channel are delivered within a second or so each, before the hung one is answered; it is then
    delivered once, and the loop kept beating /healthz."""
    heartbeat = Heartbeat()
    with HangingSlack() as slack:
        settings = harness.settings("slack", slack_webhook_url=slack.webhook_url, request_timeout_seconds=10)
        stop = harness.start(settings, heartbeat=heartbeat)
        harness.publish(alert_factory(country="US"))
        slack.wait_for(1, timeout_s=60)  # US is in the provider's hands, hanging
        hung_since = time.time()
        others = [alert_factory(country=c) for c in ("DE", "FR", "GB", "IT")]
        delays = []
        for alert in others:
            published = time.time()
            harness.publish(alert)
            got = slack.wait_for(1 + len(delays) + 1, timeout_s=30)
            delays.append(got[-1].at - published)
        silence_during_hang = heartbeat.silence_s()
        done_at = time.time()
        deadline = time.time() + 30
        while not slack.answered_hung_at and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        stop.set()
        harness.stop_all()
    assert max(delays) < 1.5, delays
    assert done_at < slack.answered_hung_at, "the others waited for the hung request"
    assert done_at - hung_since < slack.hang_s
    assert silence_during_hang < 1.0
    bodies = [r.body for r in slack.requests]
    assert len(bodies) == 5 and sum(b"US banner" in b for b in bodies) == 1  # sent once, not retried
    [stats] = harness.results
    assert stats.outcomes == {Delivered(): 5}


class HangingWebhook(FakeWebhook):
    """A webhook that answers the ``alert_type=ctr_drop`` group's request only ``hang_s`` later."""

    hang_s = 6.0
    answered_hung_at = 0.0

    def _respond(self, req: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        answer = super()._respond(req)
        if b"alert_type=ctr_drop" in req.body:
            time.sleep(self.hang_s)
            self.answered_hung_at = time.time()
        return answer


def test_hanging_group_send_delays_no_other_group(
    harness: Any, alert_factory: Callable[..., Alert], tmp_path: Path
) -> None:
    """The group flusher sends each group on its own worker: one group's hanging request holds neither
    the loop (heartbeat) nor another group, which is sent group_wait after its first alert."""
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {channel: webhook, group_by: [alert_type], group_wait: 1s}\n")
    heartbeat = Heartbeat()
    with HangingWebhook() as hook:
        settings = harness.settings(
            "webhook", webhook_url=hook.url + "/hook", routes_file=str(routes), request_timeout_seconds=10
        )
        harness.start(settings, heartbeat=heartbeat)
        harness.publish(alert_factory(country="US", alert_type="ctr_drop"))
        hook.wait_for(1, timeout_s=60)  # the ctr_drop group's request, hanging
        published = time.time()
        harness.publish(alert_factory(country="DE", alert_type="ecpm_drop"))
        got = hook.wait_for(2, timeout_s=30)
        other_at = got[-1].at
        silence_during_hang = heartbeat.silence_s()
        deadline = time.time() + 30
        while not hook.answered_hung_at and time.time() < deadline:
            time.sleep(0.05)
        harness.stop_all()
    assert b"alert_type=ecpm_drop" in got[-1].body
    assert other_at < hook.answered_hung_at, "the other group waited for the hung one"
    assert other_at - published < 1 + 2.0  # group_wait, and a little
    assert silence_during_hang < 1.0
    assert sum(b"alert_type=ctr_drop" in r.body for r in hook.requests) == 1  # sent once


def test_dead_letter_keeps_bytes_and_trace_then_replay_delivers(
    harness: Any, alert_factory: Callable[..., Alert]
) -> None:
    alert = alert_factory()
    with FakeWebhook() as hook:
        hook.fail_next(400)
        settings = harness.settings("webhook", webhook_url=hook.url + "/hook")
        traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        harness.producer.produce(
            harness.alerts_topic, encode(alert), key=alert.fingerprint, headers=[("traceparent", traceparent)]
        )
        harness.producer.flush(10)
        assert harness.run_once(settings, 1).outcomes == {DeadLetter("permanent"): 1}
        [letter] = harness.dead_letters(1)
        assert base64.b64decode(letter.payload_b64) == encode(alert)
        assert letter.headers["traceparent"] == traceparent.decode() and letter.reason_code == "permanent"
        assert letter.target == "webhook" and letter.channel == "webhook" and letter.attempts == 1
        # replay: the original record goes back through the live chain, for this channel only
        [record] = choose([(0, letter)], Selection("webhook"))
        harness.producer.produce(harness.alerts_topic, record.value, key=record.key, headers=record.headers)
        harness.producer.flush(10)
        console = harness.run_once(harness.settings("console", group_id=unique("g-console")), 2, stream=io.StringIO())
        assert console.outcomes == {Delivered(): 1, Suppressed("other_channel"): 1}
        assert harness.run_once(settings, 1).outcomes == {Delivered(): 1}
        assert len(hook.accepted) == 1


def test_new_group_does_not_page_history(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    """A week of history on the topic (firings and their resolves): a new channel group sends only what is recent.

    PagerDuty takes resolves it never sent (it dedups on its side), so an old resolve with no
    episode record is history too.
    """
    now_ms = int(time.time() * 1000)
    old = [
        alert_factory(status=status, severity=severity, window_start_ms=now_ms - d * 86_400_000 + shift, country=c)
        for d, c in ((7, "US"), (3, "DE"))
        for status, severity, shift in (("firing", "high", 0), ("resolved", "low", 120_000))
    ]
    fresh = alert_factory(window_start_ms=now_ms - 180_000, country="FR")
    fresh_resolved = alert_factory(status="resolved", severity="low", window_start_ms=now_ms - 60_000, country="FR")
    harness.publish(*old, fresh, fresh_resolved)
    out = io.StringIO()
    stats = harness.run_once(harness.settings("console", max_alert_age_seconds=3600), 6, stream=out)
    assert stats.outcomes == {Suppressed("too_old"): 4, Delivered(): 2}
    assert "FR" in out.getvalue() and "US banner" not in out.getvalue()
    with FakePagerDuty() as pd:
        settings = harness.settings(
            "pagerduty", pagerduty_routing_key="RK-1", pagerduty_url=pd.url, max_alert_age_seconds=3600
        )
        paged = harness.run_once(settings, 6)
    assert paged.outcomes == {Suppressed("too_old"): 4, Delivered(): 2}
    sent = [(r.json()["event_action"], r.json()["dedup_key"]) for r in pd.requests]
    assert sent == [("trigger", fresh.fingerprint), ("resolve", fresh.fingerprint)], sent


def test_firing_replayed_after_resolve_does_not_reopen(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    with FakePagerDuty() as pd:
        settings = harness.settings("pagerduty", pagerduty_routing_key="RK-1", pagerduty_url=pd.url)
        firing = alert_factory()
        resolved = alert_factory(status="resolved", window_start_ms=firing.window_start_ms + 120_000)
        harness.publish(firing, resolved, firing)
        stats = harness.run_once(settings, 3)
    assert stats.outcomes == {Delivered(): 2, Suppressed("stale"): 1}
    assert [r.json()["event_action"] for r in pd.requests] == ["trigger", "resolve"]


def test_redis_unavailable_defers_without_crash_or_commit(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    """Redis down: the notifier backs off (no crash loop, nothing committed); pointed at a live Redis it delivers."""
    from adwatch.config import CommonSettings
    from adwatch_dev.infra import free_port

    harness.publish(alert_factory())
    settings = harness.settings("console", group_id=unique("g-console"))
    dead = CommonSettings(kafka_bootstrap=harness.kafka, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    stop = threading.Event()
    timer = threading.Timer(4.0, stop.set)
    timer.start()
    out = io.StringIO()
    stats = run(settings, stop, 1, common=dead, stream=out)  # returns when stopped: no exception
    timer.cancel()
    assert stats.processed == 0 and out.getvalue() == ""
    again = harness.run_once(settings, 1, stream=out)  # same group: nothing was committed
    assert again.outcomes == {Delivered(): 1}


def test_a_600_kb_message_is_clipped_and_delivered_on_every_channel(
    harness: Any, alert_factory: Callable[..., Alert]
) -> None:
    """A producer writes a 600 KB message: the alert is not lost (dead-lettered) but delivered, clipped and counted."""
    from prometheus_client import CollectorRegistry

    from adwatch_notifier.metrics import NotifierMetrics

    alert = alert_factory(severity="critical")
    huge = msgspec.structs.replace(alert, message="x" * 600_000)
    harness.publish(huge)
    registry = CollectorRegistry()
    metrics = NotifierMetrics(registry)
    with FakeSlack() as slack, FakePagerDuty() as pd, FakeWebhook() as hook:
        for channel, extra in (
            ("slack", {"slack_webhook_url": slack.webhook_url}),
            ("pagerduty", {"pagerduty_routing_key": "RK-1", "pagerduty_url": pd.url}),
            ("webhook", {"webhook_url": hook.url + "/hook"}),
        ):
            stats = harness.run_once(harness.settings(channel, **extra), 1, metrics=metrics)
            assert stats.outcomes == {Delivered(): 1}, channel
            value = registry.get_sample_value(
                "adwatch_notifier_clipped_fields_total", {"channel": channel, "field": "message"}
            )
            assert value == 1, channel
        [body] = [r.json() for r in hook.requests]
        assert body["message"].endswith("…[clipped]") and len(body["message"]) == 4096
        assert len(pd.requests) == 1 and len(pd.requests[0].body) < 20_000
        assert len(slack.requests) == 1 and len(slack.requests[0].body) < 20_000
