"""Generic JSON POST for anything else; the receiver gets an ``Idempotency-Key`` header."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from adwatch.contracts import Alert
from adwatch_notifier.delivery import Delivery, http_error, transport_error
from adwatch_notifier.formatting import Thread, webhook_body
from adwatch_notifier.settings import NotifierSettings


class WebhookChannel:
    name = "webhook"
    provider_dedup = False
    min_interval_ms = 0
    default_target = "webhook"

    def __init__(self, settings: NotifierSettings, grafana_url: str) -> None:
        assert settings.webhook_url is not None
        self.url = settings.webhook_url.get_secret_value()
        self.http = httpx.Client(timeout=settings.request_timeout_seconds)

    def render(self, alert: Alert, target: str, thread: Thread | None = None) -> dict[str, Any]:
        return webhook_body(alert, f"{alert.alert_id}:{self.name}", msgspec.to_builtins(alert))

    def send(self, alert: Alert, target: str, ref: str | None = None, payload: Any = None) -> Delivery:
        key = f"{alert.alert_id}:{self.name}"
        body = payload if isinstance(payload, dict) else self.render(alert, target)
        try:
            resp = self.http.post(self.url, json=body, headers={"Idempotency-Key": key})
        except httpx.HTTPError as exc:
            raise transport_error(exc) from None
        if 200 <= resp.status_code < 300:
            return Delivery(self.name, target or self.default_target)
        raise http_error(resp.status_code, "", resp.headers.get("Retry-After"))

    def close(self) -> None:
        self.http.close()


def build(settings: NotifierSettings, grafana_url: str = "") -> WebhookChannel:
    return WebhookChannel(settings, grafana_url)
