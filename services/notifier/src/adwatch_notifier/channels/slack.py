"""Slack: incoming webhook (post only) or bot token (chat.postMessage; chat.update in place).

With a bot token, a message that follows the episode's first one (``ref`` = its ``channel|ts``:
recovery, escalation, a group's update) updates that message in place with ``chat.update`` and
answers on its thread with one line ("escalated high -> critical", "resolved after 23 min");
when the original is gone it is posted anew. An incoming webhook can only post: the follow-up is a
new message that starts with the same line.

slack-sdk's own retry handlers are turned off: the pipeline's retry stage owns retries,
honours ``Retry-After`` on 429 and stops at the deadline (one policy, counted once).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from adwatch.contracts import Alert
from adwatch_notifier.delivery import Delivery, DeliveryError, Reason, http_error, parse_retry_after, transport_error
from adwatch_notifier.formatting import Links, Thread, clip, slack_message, slack_thread_note, thread_line
from adwatch_notifier.settings import NotifierSettings
from adwatch_notifier.slack_actions import with_actions

logger = logging.getLogger(__name__)
_STALE_MESSAGE = {"message_not_found", "cant_update_message", "edit_window_closed", "channel_not_found"}
TRANSIENT_ERRORS = frozenset({"internal_error", "service_unavailable", "fatal_error", "request_timeout", "ratelimited"})
"""``ok:false`` errors that Slack documents as temporary: retried like a 5xx (``ratelimited`` like a 429)."""


class _Post(dict[str, Any]):
    """What :meth:`SlackChannel.render` builds: the message (a dict, as Slack takes it) and
    ``reply``, the thread reply of a follow-up ("" for a first message)."""

    def __init__(self, message: dict[str, Any], reply: str = "") -> None:
        super().__init__(message)
        self.reply = reply


class SlackChannel:
    name = "slack"
    provider_dedup = False

    def __init__(self, settings: NotifierSettings, grafana_url: str) -> None:
        self.grafana_url = grafana_url
        self.links = Links(settings.dashboard_url_template, settings.runbook_url_template)
        self.min_interval_ms = settings.slack_min_interval_ms
        self.default_target = settings.slack_channel
        self.interactive = settings.slack_signing_secret is not None  # buttons need a request URL to click to
        timeout = max(1, int(settings.request_timeout_seconds))
        self.web: WebClient | None = None
        self.hook: WebhookClient | None = None
        if settings.slack_bot_token is not None:
            self.web = WebClient(
                token=settings.slack_bot_token.get_secret_value(),
                base_url=settings.slack_api_url,
                timeout=timeout,
                retry_handlers=[],
            )
        elif settings.slack_webhook_url is not None:
            self.hook = WebhookClient(settings.slack_webhook_url.get_secret_value(), timeout=timeout, retry_handlers=[])

    def render(self, alert: Alert, target: str, thread: Thread | None = None) -> _Post:
        line = thread_line(alert, thread)
        message = slack_message(alert, self.grafana_url, self.links)
        message = with_actions(message, alert) if self.interactive else message
        return _Post(slack_thread_note(message, line), line)

    def send(self, alert: Alert, target: str, ref: str | None = None, payload: Any = None) -> Delivery:
        post = payload if isinstance(payload, _Post) else _Post(payload) if isinstance(payload, dict) else None
        post = post if post is not None else self.render(alert, target)
        if self.web is not None:
            return self._send_web(target, ref, post)
        return self._send_webhook(target, post)

    def _send_webhook(self, target: str, message: dict[str, Any]) -> Delivery:
        assert self.hook is not None
        try:
            resp = self.hook.send(text=message["text"], blocks=message["blocks"], attachments=message["attachments"])
        except Exception as exc:
            raise transport_error(exc) from None
        if resp.status_code == 200:
            return Delivery(self.name, target or "webhook")
        headers = {k.lower(): v for k, v in (resp.headers or {}).items()}
        body = clip(str(resp.body or ""), 80)
        if resp.status_code < 500 and body.strip() in TRANSIENT_ERRORS:  # incoming webhooks answer errors as text
            raise DeliveryError(
                "serverError", body.strip(), retryable=True, retry_after=parse_retry_after(headers.get("retry-after"))
            )
        raise http_error(resp.status_code, body, headers.get("retry-after"))

    def _send_web(self, target: str, ref: str | None, post: _Post) -> Delivery:
        """Update the episode's message in place and reply on its thread; else post a new message.

        A retry after a failed reply updates the message again (same content: harmless)."""
        assert self.web is not None
        channel_id, _, ts = (ref or "").partition("|")
        if channel_id and ts:
            try:
                self._call(self.web.chat_update, channel=channel_id, ts=ts, **post)
            except DeliveryError as exc:
                if exc.detail not in _STALE_MESSAGE:
                    raise
                logger.info("original Slack message gone (%s); posting it anew", exc.detail)
            else:
                if post.reply:
                    self._call(self.web.chat_postMessage, channel=channel_id, thread_ts=ts, text=post.reply)
                return Delivery(self.name, target, ref)
        resp = self._call(self.web.chat_postMessage, channel=target, **post)
        return Delivery(self.name, target, f"{resp.get('channel', target)}|{resp.get('ts', '')}")

    def _call(self, method: Any, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except SlackApiError as exc:
            status = exc.response.status_code
            error = str(exc.response.get("error", "")) if isinstance(exc.response.data, dict) else ""
            headers = {k.lower(): v for k, v in (exc.response.headers or {}).items()}
            if error in TRANSIENT_ERRORS and status < 500:  # Slack's own word that it is temporary
                reason: Reason = "rateLimited" if error == "ratelimited" else "serverError"
                retry_after = parse_retry_after(headers.get("retry-after"))
                raise DeliveryError(reason, error, retryable=True, retry_after=retry_after) from None
            if status == 200:  # ok:false: invalid payload, unknown channel... never retried
                raise DeliveryError("clientError", error or "ok:false", retryable=False) from None
            raise http_error(status, error, headers.get("retry-after")) from None
        except Exception as exc:
            raise transport_error(exc) from None

    def close(self) -> None:
        return None


def build(settings: NotifierSettings, grafana_url: str = "") -> SlackChannel:
    return SlackChannel(settings, grafana_url)
