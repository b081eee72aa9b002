"""Every channel gets a firing and a resolved alert through the real broker, Redis and a fake provider."""

from __future__ import annotations

import email.utils
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adwatch.contracts import Alert
from adwatch_dev.fakes import (
    FakePagerDuty,
    FakeSlack,
    FakeWebhook,
    SmtpSink,
    self_signed_cert,
    server_tls_context,
)
from adwatch_notifier import Delivered, NotifierSettings
from adwatch_notifier.channels import build_channel
from adwatch_notifier.delivery import DeliveryError

from .conftest import make_alert


def test_slack_webhook_firing_then_resolved(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    with FakeSlack() as slack:
        harness.publish(alert_factory(), alert_factory(status="resolved"))
        stats = harness.run_once(harness.settings("slack", slack_webhook_url=slack.webhook_url), 2)
        assert stats.outcomes[Delivered()] == 2
        firing, resolved = (r.json() for r in slack.requests)
    assert firing["blocks"][0]["text"]["text"] == "🚨 CTR drop! US banner: 5.00% -> 2.00% (-60.0%)"
    assert resolved["text"].startswith("✅ Resolved: CTR drop US banner")


def test_slack_bot_updates_the_original_message(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    with FakeSlack() as slack:
        harness.publish(alert_factory(), alert_factory(status="resolved"))
        settings = harness.settings(
            "slack", slack_bot_token="xoxb-test-token-1234", slack_api_url=slack.api_url, slack_channel="#ads"
        )
        assert harness.run_once(settings, 2).outcomes[Delivered()] == 2
        post, update, reply = slack.requests
    assert post.path == "/api/chat.postMessage" and post.json()["channel"] == "#ads"
    assert update.path == "/api/chat.update"
    assert update.json()["ts"] == "1700000001.000100" and update.json()["channel"] == "C0ADWATCH"
    assert update.json()["blocks"][0]["text"]["text"].startswith("✅ Resolved")
    assert reply.path == "/api/chat.postMessage" and reply.json()["thread_ts"] == "1700000001.000100"
    assert reply.json()["text"].startswith("resolved after")


def test_pagerduty_trigger_then_resolve(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    with FakePagerDuty() as pd:
        harness.publish(alert_factory(severity="critical"), alert_factory(status="resolved"))
        settings = harness.settings("pagerduty", pagerduty_routing_key="R0UTING-KEY", pagerduty_url=pd.url)
        assert harness.run_once(settings, 2).outcomes[Delivered()] == 2
        trigger, resolve = (r.json() for r in pd.requests)
    assert trigger["event_action"] == "trigger" and trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["source"] == "ad_format=banner,country=US" and trigger["payload"]["class"] == "ctr_drop"
    assert (trigger["payload"]["group"], trigger["payload"]["component"]) == ("US", "banner")
    assert resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == "ctr_drop:ad_format=banner,country=US"


def test_email_threaded_plain(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    with SmtpSink() as sink:
        harness.publish(alert_factory(severity="critical"), alert_factory(status="resolved"))
        settings = harness.settings(
            "email",
            smtp_host=sink.host,
            smtp_port=sink.port,
            smtp_starttls=False,
            smtp_from="adwatch@example.com",
            smtp_to="oncall@example.com",
        )
        assert harness.run_once(settings, 2).outcomes[Delivered()] == 2
        firing, resolved = sink.messages
    root = firing["Message-ID"]  # the thread's root is the firing mail, as actually sent
    assert root and firing["In-Reply-To"] is None and firing["References"] is None
    assert resolved["References"] == resolved["In-Reply-To"] == root
    assert firing["Message-ID"] != resolved["Message-ID"]
    assert resolved["Subject"] == "Re: " + firing["Subject"]
    assert "5.00% -> 2.00%" in firing.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "<table>" in firing.get_body(("html",)).get_content()  # type: ignore[union-attr]


def test_email_starttls_with_auth(harness: Any, alert_factory: Callable[..., Alert], tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    with SmtpSink(server_tls_context(cert, key), user="bot", password="s3cret-pw", require_tls=True) as sink:
        harness.publish(alert_factory(severity="critical"))
        settings = harness.settings(
            "email",
            smtp_host=sink.host,
            smtp_port=sink.port,
            smtp_ca_file=str(cert),
            smtp_user="bot",
            smtp_password="s3cret-pw",
            smtp_from="adwatch@example.com",
            smtp_to="a@example.com,b@example.com",
        )
        assert harness.run_once(settings, 1).outcomes[Delivered()] == 1
        assert sink.envelopes[0][1] == ["a@example.com", "b@example.com"]


def test_webhook_firing_then_resolved(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    with FakeWebhook() as hook:
        harness.publish(alert_factory(), alert_factory(status="resolved"))
        settings = harness.settings("webhook", webhook_url=hook.url + "/hooks/adwatch")
        assert harness.run_once(settings, 2).outcomes[Delivered()] == 2
        firing, resolved = hook.requests
    assert firing.json()["alert"]["status"] == "firing" and resolved.json()["alert"]["status"] == "resolved"
    assert firing.headers["idempotency-key"] == firing.json()["idempotency_key"]


def test_console_prints_a_box(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    out = io.StringIO()
    harness.publish(alert_factory(), alert_factory(status="resolved"))
    assert harness.run_once(harness.settings("console"), 2, stream=out).outcomes[Delivered()] == 2
    text = out.getvalue()
    assert "🚨 CTR drop! US banner: 5.00% -> 2.00% (-60.0%)" in text
    assert "✅ Resolved" in text and "band 4.00% – 6.00%" in text and text.count("┌") == 2


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        pytest.param(200, {"ok": False, "error": "internal_error"}, True, id="internal_error"),
        pytest.param(200, {"ok": False, "error": "service_unavailable"}, True, id="service_unavailable"),
        pytest.param(500, {"ok": False, "error": "fatal_error"}, True, id="http-500"),
        pytest.param(200, {"ok": False, "error": "invalid_blocks"}, False, id="invalid_blocks-permanent"),
    ],
)
def test_slack_bot_transient_errors_are_retryable(status: int, body: dict[str, Any], retryable: bool) -> None:
    with FakeSlack() as slack:
        slack.fail_next(status, body=body)
        settings = NotifierSettings(channel="slack", slack_bot_token="xoxb-test", slack_api_url=slack.api_url)
        channel = build_channel(settings)
        with pytest.raises(DeliveryError) as caught:
            channel.send(make_alert(), "#ads")
    assert caught.value.retryable is retryable
    assert "xoxb-test" not in str(caught.value)


def test_slack_retry_after_http_date_is_honoured() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    with FakeSlack() as slack:
        slack.fail_next(429, body={"ok": False, "error": "ratelimited"}, retry_after=when)
        settings = NotifierSettings(channel="slack", slack_bot_token="xoxb-test", slack_api_url=slack.api_url)
        with pytest.raises(DeliveryError) as caught:
            build_channel(settings).send(make_alert(), "#ads")
    assert caught.value.retry_after is not None and 25 <= caught.value.retry_after <= 31
