"""Slack buttons: signature checks, payload parsing, the silence and the replacement message (pure, no I/O)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from adwatch.contracts import Alert
from adwatch.telemetry import HttpRequest
from adwatch_notifier.formatting import slack_message
from adwatch_notifier.matchers import alert_labels
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.silences import MemorySilenceStore
from adwatch_notifier.slack_actions import (
    ACK_ACTION,
    SILENCE_ACTION,
    Ack,
    ActionError,
    SlackAction,
    SlackActionsRoute,
    check_signature,
    parse_action,
    replacement,
    signature,
    silence_for_action,
    with_actions,
)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
NOW = 1_764_590_400.0  # 2025-12-01 12:00 UTC
FP = "ctr_drop:ad_format=banner,country=US"  # make_alert()'s fingerprint


def click_body(action_id: str = SILENCE_ACTION, value: str = FP, **extra: Any) -> bytes:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0ONCALL", "username": "ana", "name": "ana", "team_id": "T000"},
        "actions": [{"action_id": action_id, "block_id": "adwatch_actions", "value": value, "type": "button"}],
        "response_url": "https://hooks.slack.com/actions/T000/1/XXXX",
        "message": {"text": "CTR dropped", "blocks": [{"type": "header"}]},
        **extra,
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed_headers(body: bytes, secret: str = SECRET, ts: float = NOW) -> dict[str, str]:
    stamp = str(int(ts))
    return {"x-slack-request-timestamp": stamp, "x-slack-signature": signature(secret, stamp, body)}


# --- signatures -------------------------------------------------------------------------------
def test_signature_is_slacks_documented_v0_hmac_sha256() -> None:
    body = b"token=xyz&payload=%7B%7D"
    expected = hmac.new(SECRET.encode(), b"v0:1531420618:" + body, hashlib.sha256).hexdigest()
    assert signature(SECRET, "1531420618", body) == "v0=" + expected


@pytest.mark.parametrize(
    ("timestamp", "sig", "body", "now_s", "want"),
    [
        pytest.param("T", "S", b"payload=x", NOW, None, id="correct"),
        pytest.param("T", "S", b"payload=x", NOW + 299, None, id="within-five-minutes"),
        pytest.param("T", "wrong-secret", b"payload=x", NOW, "bad_signature", id="wrong-secret"),
        pytest.param("T", "S", b"payload=y", NOW, "bad_signature", id="tampered-body"),
        pytest.param("T", "S", b"payload=x", NOW + 301, "stale", id="stale"),
        pytest.param("T", "S", b"payload=x", NOW - 301, "stale", id="from-the-future"),
        pytest.param(None, "S", b"payload=x", NOW, "unsigned", id="no-timestamp"),
        pytest.param("T", None, b"payload=x", NOW, "unsigned", id="no-signature"),
        pytest.param("12ab", "S", b"payload=x", NOW, "unsigned", id="timestamp-not-a-number"),
        pytest.param("¹²³", "S", b"payload=x", NOW, "unsigned", id="timestamp-unicode-digits"),
        pytest.param("T", "v0=", b"payload=x", NOW, "bad_signature", id="empty-digest"),
    ],
)
def test_check_signature(timestamp: str | None, sig: str | None, body: bytes, now_s: float, want: str | None) -> None:
    stamp = str(int(NOW)) if timestamp == "T" else timestamp
    if sig == "S":
        sig = signature(SECRET, str(int(NOW)), b"payload=x")
    elif sig == "wrong-secret":
        sig = signature("another-secret", str(int(NOW)), body)
    assert check_signature(SECRET, stamp, sig, body, now_s) == want


# --- payloads ---------------------------------------------------------------------------------
def test_parse_a_silence_click() -> None:
    action = parse_action(click_body())
    assert action == SlackAction(
        "silence",
        FP,
        "U0ONCALL",
        "ana",
        "https://hooks.slack.com/actions/T000/1/XXXX",
        {"text": "CTR dropped", "blocks": [{"type": "header"}]},
    )
    ack = parse_action(click_body(ACK_ACTION))
    assert ack is not None and ack.kind == "acknowledge"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"payload=%7Bnot-json", id="not-json"),
        pytest.param(b"payload=1&payload=2", id="two-payloads"),
        pytest.param(b"other=1", id="no-payload"),
        pytest.param(urlencode({"payload": "[1]"}).encode(), id="not-an-object"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(click_body(value="ctr drop; rm -rf"), id="value-not-a-fingerprint"),
        pytest.param(click_body(user={"id": "<!channel>"}), id="bad-user-id"),
        pytest.param(click_body(actions="x"), id="actions-not-a-list"),
    ],
)
def test_parse_refuses_what_is_not_a_click(body: bytes) -> None:
    with pytest.raises(ActionError):
        parse_action(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(urlencode({"payload": json.dumps({"type": "view_submission"})}).encode(), id="other-type"),
        pytest.param(click_body("someone_elses_button"), id="other-button"),
    ],
)
def test_parse_ignores_other_interactions(body: bytes) -> None:
    assert parse_action(body) is None


def test_silence_for_action_mutes_the_fingerprint_for_one_hour(alert_factory: Callable[..., Alert]) -> None:
    action = parse_action(click_body())
    assert action is not None
    silence = silence_for_action(action, NOW)
    assert (silence.starts_at, silence.ends_at, silence.created_by) == (NOW, NOW + 3600, "slack:ana")
    assert "U0ONCALL" in silence.comment
    assert silence.mutes(alert_labels(alert_factory()), NOW + 10)
    assert not silence.mutes(alert_labels(alert_factory(country="DE")), NOW + 10)
    assert not silence.mutes(alert_labels(alert_factory()), NOW + 3600)


# --- the message --------------------------------------------------------------------------------
def test_buttons_only_on_firing_messages(alert_factory: Callable[..., Alert]) -> None:
    firing = alert_factory()
    message = with_actions(slack_message(firing), firing)
    actions = message["blocks"][-1]
    assert actions["type"] == "actions"
    assert [(e["action_id"], e["text"]["text"], e["value"]) for e in actions["elements"]] == [
        (ACK_ACTION, "Acknowledge", firing.fingerprint),
        (SILENCE_ACTION, "Silence 1h", firing.fingerprint),
    ]
    resolved = alert_factory(status="resolved")
    assert with_actions(slack_message(resolved), resolved) == slack_message(resolved)
    group = msgspec.structs.replace(firing, fingerprint="g0:alert_type=ctr_drop")  # a group summary
    assert with_actions(slack_message(group), group) == slack_message(group)


def test_replacement_drops_the_clicked_button_and_says_who(alert_factory: Callable[..., Alert]) -> None:
    alert = alert_factory()
    original = with_actions(slack_message(alert), alert)
    ack = SlackAction("acknowledge", alert.fingerprint, "U0ONCALL", "ana", "u", original)
    replaced = replacement(ack, "Acknowledged by <@U0ONCALL>")
    assert replaced["replace_original"] is True and replaced["text"] == original["text"]
    assert replaced["attachments"] == original["attachments"]
    [actions] = [b for b in replaced["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == [SILENCE_ACTION]  # silencing is still possible
    assert replaced["blocks"][-1]["elements"][0]["text"] == "Acknowledged by <@U0ONCALL>"
    silenced = replacement(SlackAction("silence", alert.fingerprint, "U0ONCALL", "ana", "u", original), "Silenced")
    assert [b for b in silenced["blocks"] if b["type"] == "actions"] == []


# --- the route with in-memory stores ------------------------------------------------------------
class MemoryAcks:
    def __init__(self) -> None:
        self.acks: dict[str, Ack] = {}

    def record(self, ack: Ack) -> None:
        self.acks[ack.fingerprint] = ack

    def get(self, fingerprint: str) -> Ack | None:
        return self.acks.get(fingerprint)


def test_route_acts_only_on_signed_requests(caplog: pytest.LogCaptureFixture) -> None:
    registry, silences, acks, posted = CollectorRegistry(), MemorySilenceStore(), MemoryAcks(), []
    route = SlackActionsRoute(
        SecretStr(SECRET),
        silences,
        acks,
        NotifierMetrics(registry),
        now=lambda: NOW,
        post=lambda url, body: posted.append((url, body)),
    )
    body = click_body()
    caplog.set_level("DEBUG")
    refused = route(HttpRequest("POST", "/slack/actions", headers=signed_headers(body, "wrong"), body=body))
    assert refused.status == 401 and silences.all() == []
    stale = route(HttpRequest("POST", "/slack/actions", headers=signed_headers(body, ts=NOW - 600), body=body))
    assert stale.status == 401
    assert registry.get_sample_value("adwatch_notifier_slack_rejected_total", {"reason": "bad_signature"}) == 1
    assert registry.get_sample_value("adwatch_notifier_slack_rejected_total", {"reason": "stale"}) == 1
    ok = route(HttpRequest("POST", "/slack/actions", headers=signed_headers(body), body=body))
    assert ok.status == 200 and ok.then is not None
    [silence] = silences.all()
    assert silence.created_by == "slack:ana" and [str(m) for m in silence.matchers] == [f"fingerprint={FP}"]
    ok.then()
    [(url, replaced)] = posted
    assert url.startswith("https://hooks.slack.com/actions/") and "Silenced by <@U0ONCALL>" in json.dumps(replaced)
    ack_body = click_body(ACK_ACTION)
    assert route(HttpRequest("POST", "/slack/actions", headers=signed_headers(ack_body), body=ack_body)).status == 200
    assert acks.get(FP) == Ack(FP, "U0ONCALL", "ana", NOW)
    assert registry.get_sample_value("adwatch_notifier_slack_actions_total", {"action": "acknowledge"}) == 1
    bad = b"payload=%7B"
    assert route(HttpRequest("POST", "/slack/actions", headers=signed_headers(bad), body=bad)).status == 400
    assert route(HttpRequest("GET", "/slack/actions")).status == 405
    assert SECRET not in caplog.text


def test_slack_channel_adds_buttons_only_with_a_signing_secret(alert_factory: Callable[..., Alert]) -> None:
    from adwatch_notifier import NotifierSettings
    from adwatch_notifier.channels import build_channel

    plain = NotifierSettings(channel="slack", slack_webhook_url=SecretStr("https://hooks.example/x"))
    interactive = plain.model_copy(update={"slack_signing_secret": SecretStr(SECRET)})
    alert = alert_factory()
    assert "actions" not in [b["type"] for b in build_channel(plain).render(alert, "")["blocks"]]
    assert build_channel(interactive).render(alert, "")["blocks"][-1]["type"] == "actions"
    assert SECRET not in repr(interactive)
