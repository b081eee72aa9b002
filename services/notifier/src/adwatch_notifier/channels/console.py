"""Pretty terminal output for ``make run``: a small box per alert on stdout."""

from __future__ import annotations

import sys
from typing import IO, Any

from adwatch.contracts import Alert
from adwatch_notifier.delivery import Delivery
from adwatch_notifier.formatting import Thread, console_box, thread_line
from adwatch_notifier.settings import NotifierSettings


class ConsoleChannel:
    name = "console"
    provider_dedup = False
    min_interval_ms = 0
    default_target = "stdout"

    def __init__(self, stream: IO[str] | None = None, link: str = "") -> None:
        self.stream = stream
        self.link = link

    def render(self, alert: Alert, target: str, thread: Thread | None = None) -> str:
        line = thread_line(alert, thread)  # escalated ..., resolved after ..., a group's change
        box = console_box(alert, self.link)
        return f"{line}\n{box}" if line else box

    def send(self, alert: Alert, target: str, ref: str | None = None, payload: Any = None) -> Delivery:
        stream = self.stream or sys.stdout  # looked up late so pytest's capture sees it
        stream.write((payload if isinstance(payload, str) else self.render(alert, target)) + "\n")
        stream.flush()
        return Delivery(self.name, target or self.default_target)

    def close(self) -> None:
        return None


def build(settings: NotifierSettings, grafana_url: str = "", stream: IO[str] | None = None) -> ConsoleChannel:
    return ConsoleChannel(stream, grafana_url)
