"""Which alerts go to which channel and target: a routing table read from YAML, decided purely.

The first route of a channel whose filters all match wins; an empty filter matches all.
Targets mean: Slack channel (``#ad-alerts``), email recipients (``a@x,b@y``), PagerDuty
routing key name (``default`` = ``PAGERDUTY_ROUTING_KEY``); empty = the channel's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adwatch.contracts import Alert, segment_key
from adwatch.errors import ConfigError
from adwatch_notifier.delivery import CHANNELS

# Default escalation: everything to Slack, high/critical also page, critical also mails.
DEFAULT_ROUTES_YAML = """\
routes:
  - channel: slack
  - channel: pagerduty
    severities: [high, critical]
  - channel: email
    severities: [critical]
  - channel: webhook
  - channel: console
"""

_FILTERS = ("alert_types", "severities", "countries", "ad_formats", "segments", "statuses")


@dataclass(frozen=True)
class Route:
    """One line of the table; empty filters match everything."""

    channel: str
    target: str = ""
    alert_types: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    countries: frozenset[str] = frozenset()
    ad_formats: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()

    def matches(self, alert: Alert, any_severity: bool = False) -> bool:
        checks = (
            (self.alert_types, alert.alert_type),
            (frozenset() if any_severity else self.severities, alert.severity),
            (self.countries, alert.country),
            (self.ad_formats, alert.ad_format),
            (self.segments, segment_key(alert.country, alert.ad_format)),
            (self.statuses, alert.status),
        )
        return all(not allowed or value in allowed for allowed, value in checks)


@dataclass(frozen=True)
class RoutingTable:
    routes: tuple[Route, ...]


def route(table: RoutingTable, alert: Alert, channel: str, notified_firing: bool = False) -> Route | None:
    """The route that sends ``alert`` to ``channel``, or None when it is not for this channel.

    A recovery follows its firing: when this channel notified the firing (``notified_firing``),
    the resolved alert is routed whatever its own severity, so no page stays open.
    """
    any_severity = notified_firing and alert.status == "resolved"
    return next((r for r in table.routes if r.channel == channel and r.matches(alert, any_severity)), None)


def parse_routes(text: str, source: str = "<routes>") -> RoutingTable:
    """Parse routing YAML; a mistake raises :class:`ConfigError` naming the route."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    items = doc.get("routes") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"{source}: expected a top-level 'routes:' list")
    return RoutingTable(tuple(_parse_route(item, i, source) for i, item in enumerate(items)))


def _parse_route(item: Any, index: int, source: str) -> Route:
    where = f"{source}: routes[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = set(item) - {"channel", "target", *_FILTERS}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    channel = item.get("channel")
    if channel not in CHANNELS:
        raise ConfigError(f"{where}: channel must be one of {list(CHANNELS)}, got {channel!r}")
    target = item.get("target", "")
    if isinstance(target, list):
        target = ",".join(str(t) for t in target)
    filters: dict[str, frozenset[str]] = {}
    for name in _FILTERS:
        value = item.get(name, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {name} must be a list")
        filters[name] = frozenset(str(v) for v in value)
    return Route(channel=channel, target=str(target), **filters)


def load_routes(path: str = "") -> RoutingTable:
    """The table from ``path`` (ADWATCH_NOTIFIER_ROUTES_FILE), else the built-in default."""
    if not path:
        return parse_routes(DEFAULT_ROUTES_YAML, "<default routes>")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"ADWATCH_NOTIFIER_ROUTES_FILE: cannot read {path}: {exc.strerror}") from None
    return parse_routes(text, path)
