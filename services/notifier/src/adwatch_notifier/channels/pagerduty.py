"""PagerDuty Events API v2: trigger on firing, resolve on recovery, dedup_key = fingerprint.

An escalation is one more ``trigger`` with the same ``dedup_key`` (and routing key: the episode's
target), so PagerDuty appends it to the open alert at the new severity instead of opening a second
incident; a group's ``dedup_key`` is ``group:<group key>`` (one incident per group, in a namespace no
alert's fingerprint can enter: :func:`~adwatch_notifier.formatting.pagerduty_dedup_key`).
"""

from __future__ import annotations

from typing import Any

import httpx

from adwatch.contracts import Alert
from adwatch_notifier.delivery import Delivery, DeliveryError, http_error, transport_error
from adwatch_notifier.formatting import Links, Thread, clip, pagerduty_event
from adwatch_notifier.settings import NotifierSettings


class PagerDutyChannel:
    name = "pagerduty"
    provider_dedup = True  # a repeated trigger with one dedup_key is one incident
    default_target = "default"

    def __init__(self, settings: NotifierSettings, grafana_url: str) -> None:
        self.grafana_url = grafana_url
        self.links = Links(settings.dashboard_url_template or grafana_url, settings.runbook_url_template)
        self.min_interval_ms = settings.pagerduty_min_interval_ms
        self.keys = {name: key.get_secret_value() for name, key in settings.pagerduty_routing_keys.items()}
        if settings.pagerduty_routing_key is not None:
            self.keys.setdefault("default", settings.pagerduty_routing_key.get_secret_value())
        self.http = httpx.Client(base_url=settings.pagerduty_url, timeout=settings.request_timeout_seconds)

    def render(self, alert: Alert, target: str, thread: Thread | None = None) -> dict[str, Any]:
        name = target or self.default_target
        key = self.keys.get(name)
        if key is None:
            raise DeliveryError("clientError", f"no routing key named {name!r}", retryable=False)
        return pagerduty_event(alert, key, self.grafana_url, self.links, thread)

    def send(self, alert: Alert, target: str, ref: str | None = None, payload: Any = None) -> Delivery:
        name = target or self.default_target
        event = payload if isinstance(payload, dict) else self.render(alert, target)
        try:
            resp = self.http.post("/v2/enqueue", json=event)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from None
        if resp.status_code == 202:
            return Delivery(
                self.name, name, str(_json(resp).get("dedup_key") or event.get("dedup_key") or alert.fingerprint)
            )
        raise http_error(
            resp.status_code, clip(str(_json(resp).get("message", "")), 80), resp.headers.get("Retry-After")
        )

    def close(self) -> None:
        self.http.close()


def _json(resp: httpx.Response) -> dict[str, object]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def build(settings: NotifierSettings, grafana_url: str = "") -> PagerDutyChannel:
    return PagerDutyChannel(settings, grafana_url)
