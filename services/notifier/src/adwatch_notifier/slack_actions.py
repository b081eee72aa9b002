"""Slack interactivity: the Acknowledge / Silence 1h buttons of firing messages and the endpoint taking their clicks.

Pure functions decide (:func:`check_signature`, :func:`parse_action`, :func:`silence_for_action`,
:func:`replacement`); :class:`SlackActionsRoute` does the I/O at the edges (Redis, the follow-up
post). Slack's protocol, as documented at docs.slack.dev ("Verifying requests from Slack",
"Handling user interaction"):

- Every request carries ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature``:
  ``v0=`` + hex HMAC-SHA256, keyed by the app's signing secret, of ``v0:{timestamp}:{raw body}``.
  It is compared in constant time; a timestamp more than five minutes away from now is refused
  (a replayed request). Refused requests answer 401 and act on nothing.
- A click arrives as ``application/x-www-form-urlencoded`` with one field, ``payload``: the JSON
  of a ``block_actions`` interaction (``user``, ``actions``, ``response_url``, ``message``).
- Slack wants an HTTP 200 within 3 seconds; the message is then replaced by posting
  ``{"replace_original": true, ...}`` to the ``response_url`` (after the 200 is sent). The
  ``response_url`` is trusted because it comes inside a signed payload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs

import redis
from pydantic import SecretStr

from adwatch.contracts import Alert
from adwatch.errors import AdwatchError
from adwatch.telemetry import HttpRequest, HttpResponse
from adwatch_notifier.formatting import BLOCKS_MAX, clip, mrkdwn
from adwatch_notifier.ledger import _guarded
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.silences import Silence, SilenceStore, new_silence

logger = logging.getLogger(__name__)

PATH = "/slack/actions"
ACK_ACTION = "adwatch_ack"
SILENCE_ACTION = "adwatch_silence_1h"
ACTIONS_BLOCK_ID = "adwatch_actions"
SILENCE_S = 3600.0
"""How long "Silence 1h" mutes the alert's fingerprint."""
MAX_AGE_S = 300
"""Slack's replay window: requests signed longer ago (or ahead) than this are refused."""
ACK_TTL_S = 7 * 24 * 3600
_FINGERPRINT = re.compile(r"^[A-Za-z0-9_:|.\-=,%*+~]{1,256}$")
"""``type:<segment id>`` (``ctr_drop:ad_format=banner,country=US``, ``ctr_drop:app_id=com%2Fx``,
``ctr_drop:*``, a hashed ``ctr_drop:h:app_id+country:<hex>``) and version-1 ``ctr_drop:US|banner``;
no quote or space, so ``fingerprint=<value>`` is one matcher as written."""
_USER_ID = re.compile(r"^[A-Z0-9]{1,32}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_GROUP_KEY = re.compile(r"^g[0-9]+:")  # grouping.group_key: a group summary's fingerprint

Rejection = Literal["unsigned", "stale", "bad_signature"]
ActionKind = Literal["acknowledge", "silence"]
_KINDS: dict[str, ActionKind] = {ACK_ACTION: "acknowledge", SILENCE_ACTION: "silence"}


class ActionError(AdwatchError, ValueError):
    """A signed request that is not a click this endpoint understands (answered 400)."""


# --- the buttons ----------------------------------------------------------------------------
def actions_block(alert: Alert) -> dict[str, Any]:
    """The Block Kit ``actions`` block of a firing alert; each button's value is its fingerprint."""
    return {
        "type": "actions",
        "block_id": ACTIONS_BLOCK_ID,
        "elements": [
            {
                "type": "button",
                "action_id": ACK_ACTION,
                "text": {"type": "plain_text", "text": "Acknowledge", "emoji": True},
                "style": "primary",
                "value": alert.fingerprint,
            },
            {
                "type": "button",
                "action_id": SILENCE_ACTION,
                "text": {"type": "plain_text", "text": "Silence 1h", "emoji": True},
                "value": alert.fingerprint,
            },
        ],
    }


def with_actions(message: dict[str, Any], alert: Alert) -> dict[str, Any]:
    """The message with the buttons appended when the alert is firing.

    A recovery gets none, nor does a group summary: its fingerprint is the group key, which no
    member alert carries, so a silence of it would mute nothing.
    """
    if alert.status != "firing" or _GROUP_KEY.match(alert.fingerprint) or not _FINGERPRINT.match(alert.fingerprint):
        return message
    blocks = list(message.get("blocks", []))[: BLOCKS_MAX - 1]
    return {**message, "blocks": [*blocks, actions_block(alert)]}


# --- verifying a request ---------------------------------------------------------------------
def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}`` keyed by the signing secret."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def check_signature(
    secret: str,
    timestamp: str | None,
    sig: str | None,
    body: bytes,
    now_s: float,
    max_age_s: float = MAX_AGE_S,
) -> Rejection | None:
    """None when Slack signed ``body`` with ``secret`` less than ``max_age_s`` ago; else why not."""
    if not timestamp or not sig or not _TIMESTAMP.match(timestamp.strip()):
        return "unsigned"
    if abs(now_s - int(timestamp)) > max_age_s:
        return "stale"
    expected = signature(secret, timestamp.strip(), body).encode()
    if not hmac.compare_digest(expected, sig.strip().encode("utf-8", "replace")):
        return "bad_signature"
    return None


# --- what was clicked ------------------------------------------------------------------------
@dataclass(frozen=True)
class SlackAction:
    """One click on one of our buttons, as much of it as we use."""

    kind: ActionKind
    fingerprint: str
    user_id: str
    user_name: str
    response_url: str = ""
    message: dict[str, Any] = field(default_factory=dict)


def parse_action(body: bytes) -> SlackAction | None:
    """The click in a form-encoded ``payload=``; None for a well-formed interaction that is not ours.

    Raises :class:`ActionError` for a body that is not a Slack interaction at all.
    """
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise ActionError("body: expected form-encoded payload=<json>") from None
    values = form.get("payload", [])
    if len(values) != 1:
        raise ActionError("body: expected exactly one payload field")
    try:
        payload = json.loads(values[0])
    except ValueError:
        raise ActionError("payload: not JSON") from None
    if not isinstance(payload, dict):
        raise ActionError("payload: expected a JSON object")
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list):
        raise ActionError("payload.actions: expected a list")
    ours = [a for a in actions if isinstance(a, dict) and a.get("action_id") in _KINDS]
    if not ours:
        return None
    action = ours[0]
    fingerprint = action.get("value")
    if not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        raise ActionError("payload.actions[].value: expected an alert fingerprint")
    user = payload.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise ActionError("payload.user.id: expected a Slack user id")
    assert isinstance(user, dict)
    name = user.get("username") or user.get("name") or user_id
    response_url = payload.get("response_url", "")
    message = payload.get("message")
    return SlackAction(
        kind=_KINDS[str(action["action_id"])],
        fingerprint=fingerprint,
        user_id=user_id,
        user_name=clip(str(name), 80),
        response_url=response_url if isinstance(response_url, str) else "",
        message=message if isinstance(message, dict) else {},
    )


def silence_for_action(action: SlackAction, now_s: float, duration_s: float = SILENCE_S) -> Silence:
    """A silence of the clicked alert's fingerprint from now, authored by the Slack user."""
    return new_silence(
        [f"fingerprint={action.fingerprint}"],
        now_s=now_s,
        duration_s=duration_s,
        created_by=f"slack:{action.user_name}",
        comment=f"Silence 1h clicked in Slack by {action.user_name} ({action.user_id})",
    )


def outcome_text(action: SlackAction, now_s: float, silence: Silence | None = None) -> str:
    """The line added to the message: who did what, when (mrkdwn, escaped)."""
    at = datetime.fromtimestamp(now_s, UTC).strftime("%H:%M UTC")
    if action.kind == "silence" and silence is not None:
        until = datetime.fromtimestamp(silence.ends_at, UTC).strftime("%H:%M UTC")
        return f"🔕 Silenced by <@{action.user_id}> at {at} until {until} (silence `{mrkdwn(silence.id)}`)"
    return f"👀 Acknowledged by <@{action.user_id}> at {at}"


def replacement(action: SlackAction, text: str) -> dict[str, Any]:
    """The original message for ``response_url``: the clicked button gone, ``text`` added as context."""
    original = action.message
    blocks: list[dict[str, Any]] = []
    clicked = ACK_ACTION if action.kind == "acknowledge" else None  # a silence ends every action
    for block in original.get("blocks", []) if isinstance(original.get("blocks"), list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "actions" and block.get("block_id") == ACTIONS_BLOCK_ID:
            kept = [e for e in block.get("elements", []) if clicked is not None and e.get("action_id") != clicked]
            if kept:
                blocks.append({**block, "elements": kept})
            continue
        blocks.append(block)
    blocks = blocks[: BLOCKS_MAX - 1]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
    out: dict[str, Any] = {"replace_original": True, "text": str(original.get("text") or text), "blocks": blocks}
    if isinstance(original.get("attachments"), list):
        out["attachments"] = original["attachments"]
    return out


# --- acknowledgements ------------------------------------------------------------------------
@dataclass(frozen=True)
class Ack:
    """Who acknowledged a fingerprint, when (epoch seconds)."""

    fingerprint: str
    user_id: str
    user_name: str
    at: float

    def encode(self) -> str:
        return json.dumps({"user_id": self.user_id, "user_name": self.user_name, "at": self.at})


class AckStore(Protocol):
    def record(self, ack: Ack) -> None: ...

    def get(self, fingerprint: str) -> Ack | None: ...


class RedisAckStore:
    """``<prefix>:ack:<fingerprint>`` -> the last acknowledgement, kept ``ACK_TTL_S``."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int = ACK_TTL_S) -> None:
        self.r, self.prefix, self.ttl_s = client, f"{prefix}:ack:", ttl_s

    @_guarded
    def record(self, ack: Ack) -> None:
        self.r.set(self.prefix + ack.fingerprint, ack.encode(), ex=self.ttl_s)

    @_guarded
    def get(self, fingerprint: str) -> Ack | None:
        raw = self.r.get(self.prefix + fingerprint)
        if not isinstance(raw, (bytes, str)):
            return None
        try:
            data = json.loads(raw)
            return Ack(fingerprint, str(data["user_id"]), str(data["user_name"]), float(data["at"]))
        except (ValueError, KeyError, TypeError):
            return None


# --- the endpoint ----------------------------------------------------------------------------
PostJson = Callable[[str, dict[str, Any]], None]


def post_to_response_url(url: str, body: dict[str, Any], timeout_s: float = 5.0) -> None:
    """POST the replacement message to Slack's ``response_url`` (its status logged, never the URL)."""
    from slack_sdk.webhook import WebhookClient

    resp = WebhookClient(url, timeout=max(1, int(timeout_s)), retry_handlers=[]).send_dict(body)
    if resp.status_code != 200:
        logger.warning("slack response_url answered %d", resp.status_code)


class SlackActionsRoute:
    """``POST /slack/actions``: verify, parse, act (silence or ack), answer 200, then replace the message."""

    def __init__(
        self,
        signing_secret: SecretStr,
        silences: SilenceStore,
        acks: AckStore,
        metrics: NotifierMetrics,
        *,
        now: Callable[[], float],
        post: PostJson = post_to_response_url,
    ) -> None:
        self._secret = signing_secret
        self.silences, self.acks, self.metrics, self.now, self.post = silences, acks, metrics, now, post

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self._handle(request)
        self.metrics.http_requests.labels("slack_actions", str(response.status)).inc()
        return response

    def _handle(self, request: HttpRequest) -> HttpResponse:
        if request.path != PATH:
            return HttpResponse.json(404, {"error": "not found"})
        if request.method != "POST":
            return HttpResponse.json(405, {"error": "use POST"}, (("Allow", "POST"),))
        now_s = self.now()
        rejection = check_signature(
            self._secret.get_secret_value(),
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
            request.body,
            now_s,
        )
        if rejection is not None:
            self.metrics.slack_rejected.labels(rejection).inc()
            logger.warning("slack request refused: %s", rejection)
            return HttpResponse.json(401, {"error": "request not signed by Slack", "reason": rejection})
        try:
            action = parse_action(request.body)
        except ActionError as exc:
            return HttpResponse.json(400, {"error": str(exc)})
        if action is None:
            return HttpResponse(200)  # another interaction of the app: acknowledged, nothing to do
        try:
            silence = self._act(action, now_s)
        except AdwatchError as exc:  # Redis unavailable: Slack shows the user an error
            logger.warning("slack %s not recorded: %s", action.kind, exc)
            return HttpResponse.json(503, {"error": "state store unavailable"})
        self.metrics.slack_actions.labels(action.kind).inc()
        if not action.response_url:
            return HttpResponse(200)
        body, url = replacement(action, outcome_text(action, now_s, silence)), action.response_url
        return HttpResponse(200, then=lambda: self.post(url, body))

    def _act(self, action: SlackAction, now_s: float) -> Silence | None:
        if action.kind == "silence":
            silence = silence_for_action(action, now_s)
            self.silences.add(silence)
            logger.info(
                "silenced %s for 1h from Slack by %s (silence %s)", action.fingerprint, action.user_name, silence.id
            )
            return silence
        self.acks.record(Ack(action.fingerprint, action.user_id, action.user_name, now_s))
        logger.info("acknowledged %s from Slack by %s", action.fingerprint, action.user_name)
        return None
