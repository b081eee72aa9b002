"""Channel modules of one shape: ``build(settings, grafana_url) -> channel`` with ``send``."""

from __future__ import annotations

from typing import IO, Any, Protocol

from adwatch.contracts import Alert
from adwatch_notifier.delivery import Delivery
from adwatch_notifier.formatting import Thread
from adwatch_notifier.settings import NotifierSettings


class BaseChannel(Protocol):
    """What the pipeline needs from a channel."""

    name: str
    min_interval_ms: int  # provider rate limit per target (0: none)
    provider_dedup: bool  # the provider dedups repeats itself (PagerDuty dedup_key)
    default_target: str

    def render(self, alert: Alert, target: str, thread: Thread | None = None) -> Any:
        """The payload to send (pure, no I/O); raises DeliveryError (or ValueError) when none can be built.

        ``thread``: how the alert follows its episode's first notification (escalation, recovery
        evidence, a group's change); None when it opens the episode."""
        ...

    def send(self, alert: Alert, target: str, ref: str | None = None, payload: Any = None) -> Delivery:
        """Deliver once; raise DeliveryError. ``ref`` = provider id of the episode's first message,
        given when this one follows it (recovery, escalation, a group's update): the channel
        updates it in place or answers on its thread, and returns that same id.
        ``payload`` = what :meth:`render` built (built here when None)."""
        ...

    def close(self) -> None: ...


def build_channel(settings: NotifierSettings, grafana_url: str = "", stream: IO[str] | None = None) -> BaseChannel:
    """The channel named by ``settings.channel``."""
    from adwatch_notifier.channels import console, email, pagerduty, slack, webhook

    match settings.channel:
        case "slack":
            return slack.build(settings, grafana_url)
        case "pagerduty":
            return pagerduty.build(settings, grafana_url)
        case "email":
            return email.build(settings, grafana_url)
        case "webhook":
            return webhook.build(settings, grafana_url)
        case _:
            return console.build(settings, grafana_url, stream)


__all__ = ["BaseChannel", "build_channel"]
