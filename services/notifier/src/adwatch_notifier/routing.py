"""Which alerts go to which channel and target: a routing table read from YAML, decided purely.

The first route of a channel whose filters all match wins; an empty filter matches all.
Targets mean: Slack channel (``#ad-alerts``), email recipients (``a@x,b@y``), PagerDuty
routing key name (``default`` = ``PAGERDUTY_ROUTING_KEY``); empty = the channel's default.

The same file may hold ``maintenance_windows:`` (recurring, UTC) and ``inhibit_rules:``
(Alertmanager's; without the key the defaults of :mod:`adwatch_notifier.inhibit` apply,
``inhibit_rules: []`` turns inhibition off)::

    maintenance_windows:
      - name: weekly-db
        weekdays: [sat]          # mon..sun; empty: every day
        start: "02:00"           # UTC; an end before the start crosses midnight
        end: "04:00"
        matchers: ["country=US"] # optional: empty mutes every firing
    inhibit_rules:
      - source_matchers: ["alert_type=~traffic_.*"]
        target_matchers: ["alert_type=~ctr_.*|ecpm_.*"]
        equal: [segment]         # the same segment, whatever its dimensions

A route may also filter with ``matchers:`` (every one must match) over the alert's labels, every
dimension of its segment included (``app_id=~com\\.example\\..*``, ``campaign_id=c-42``), and
``group_by`` any label (``[alert_type, country]``: alerts of ``US banner`` and of
``US app_id=com.x`` share a group). ``segments:`` lists segment ids (``ad_format=banner,country=US``,
``app_id=com.x``, ``*``); the version-1 form ``US|banner`` is read as its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from pydantic_core import ErrorDetails

from adwatch.contracts import Alert, AlertStatus, AlertType, Severity
from adwatch.errors import ConfigError
from adwatch_notifier.delivery import Channel
from adwatch_notifier.grouping import GroupSpec
from adwatch_notifier.inhibit import DEFAULT_RULES, InhibitRule, inhibit_rule
from adwatch_notifier.matchers import (
    LABELS_MAX,
    Matcher,
    alert_labels,
    all_match,
    normalize_segment,
    parse_matchers,
    unknown_labels,
)
from adwatch_notifier.silences import MaintenanceWindow, maintenance_window, parse_duration

# Default escalation: everything to Slack, high/critical also page, critical also mails.
# Slack, PagerDuty and email group by alert type, as Alertmanager users group by ``alertname``:
# a problem over 64 segments is one message, one incident, one mail thread. ``group_wait`` is
# 10 s (not Alertmanager's 30 s) so the first notification stays inside the 30 s end-to-end SLO
# (detection takes up to 15 s). Webhook and console stay one notification per alert.
DEFAULT_ROUTES_YAML = """\
routes:
  - channel: slack
    group_by: [alert_type]
    group_wait: 10s
    group_interval: 5m
    repeat_interval: 4h
  - channel: pagerduty
    severities: [high, critical]
    group_by: [alert_type]
    group_wait: 10s
    group_interval: 5m
    repeat_interval: 4h
  - channel: email
    severities: [critical]
    group_by: [alert_type]
    group_wait: 10s
    group_interval: 5m
    repeat_interval: 4h
  - channel: webhook
  - channel: console
"""

_FILTERS = ("alert_types", "severities", "countries", "ad_formats", "segments", "statuses")
_ROUTES_MAX, _FILTER_MAX, _TARGET_MAX = 1000, 500, 2000  # bounds: far above real tables, below accidents


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
    group: GroupSpec | None = None  # Alertmanager's group_by and timers; None: one notification per alert
    matchers: tuple[Matcher, ...] = ()  # over alert_labels (every dimension of the segment)

    def matches(self, alert: Alert, any_severity: bool = False) -> bool:
        checks = (
            (self.alert_types, alert.alert_type),
            (frozenset() if any_severity else self.severities, alert.severity),
            (self.countries, alert.country),
            (self.ad_formats, alert.ad_format),
            (self.segments, alert.segment_id),
            (self.statuses, alert.status),
        )
        if not all(not allowed or value in allowed for allowed, value in checks):
            return False
        return not self.matchers or all_match(self.matchers, alert_labels(alert))


@dataclass(frozen=True)
class RoutingTable:
    routes: tuple[Route, ...]
    maintenance: tuple[MaintenanceWindow, ...] = ()
    inhibit_rules: tuple[InhibitRule, ...] = DEFAULT_RULES


def route(table: RoutingTable, alert: Alert, channel: str, notified_firing: bool = False) -> Route | None:
    """The route that sends ``alert`` to ``channel``, or None when it is not for this channel.

    A recovery follows its firing: when this channel notified the firing (``notified_firing``),
    the resolved alert is routed whatever its own severity, so no page stays open.
    """
    any_severity = notified_firing and alert.status == "resolved"
    return next((r for r in table.routes if r.channel == channel and r.matches(alert, any_severity)), None)


_Matchers = list[Annotated[str, StringConstraints(min_length=3, max_length=1000)]]


class RouteSpec(BaseModel):
    """One route as written in the file; unknown keys are errors (a typo must not match everything)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Channel
    target: str = Field("", max_length=_TARGET_MAX, description="Slack channel, recipients, routing key name")
    alert_types: tuple[AlertType, ...] = Field((), max_length=_FILTER_MAX)
    severities: tuple[Severity, ...] = Field((), max_length=_FILTER_MAX)
    countries: tuple[Annotated[str, StringConstraints(min_length=1, max_length=16)], ...] = Field(
        (), max_length=_FILTER_MAX
    )
    ad_formats: tuple[Annotated[str, StringConstraints(min_length=1, max_length=256)], ...] = Field(
        (), max_length=_FILTER_MAX
    )
    segments: tuple[Annotated[str, StringConstraints(min_length=1, max_length=255)], ...] = Field(
        (), max_length=_FILTER_MAX
    )
    statuses: tuple[AlertStatus, ...] = Field((), max_length=_FILTER_MAX)
    matchers: _Matchers = Field(default_factory=list, max_length=_FILTER_MAX)
    group_by: tuple[str, ...] = Field((), max_length=LABELS_MAX)
    group_wait: str = "30s"
    group_interval: str = "5m"
    repeat_interval: str = "4h"

    @field_validator("target", mode="before")
    @classmethod
    def _join_recipients(cls, value: Any) -> Any:
        """``target: [a@x, b@y]`` is the comma-separated recipient list ``a@x,b@y``."""
        return ",".join(str(v) for v in value) if isinstance(value, list) else value

    @field_validator(*_FILTERS, "matchers", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """A single value stands for a one-element list (``severities: critical``)."""
        return [value] if isinstance(value, str) else value

    @field_validator("segments")
    @classmethod
    def _segment_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each segment as its id (``US|banner`` and ``country=US,ad_format=banner`` are one segment)."""
        return tuple(normalize_segment(v) for v in value)

    def to_route(self) -> Route:
        filters = {name: frozenset(getattr(self, name)) for name in _FILTERS}
        group = None
        if self.group_by:
            unknown = unknown_labels(self.group_by)
            if unknown:
                raise ConfigError(f"group_by: unknown labels {unknown}")
            timers = (parse_duration(t) for t in (self.group_wait, self.group_interval, self.repeat_interval))
            group = GroupSpec(tuple(self.group_by), *timers)
        matchers = parse_matchers(self.matchers)
        return Route(channel=self.channel, target=self.target, group=group, matchers=matchers, **filters)


class MaintenanceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    weekdays: list[str] = Field(default_factory=list, max_length=7)
    start: str
    end: str
    matchers: _Matchers = Field(default_factory=list, max_length=_FILTER_MAX)

    def to_window(self) -> MaintenanceWindow:
        return maintenance_window(self.name, self.weekdays, self.start, self.end, self.matchers)


class InhibitSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source_matchers: _Matchers = Field(min_length=1, max_length=_FILTER_MAX)
    target_matchers: _Matchers = Field(min_length=1, max_length=_FILTER_MAX)
    equal: list[str] = Field(default_factory=list, max_length=LABELS_MAX)

    def to_rule(self) -> InhibitRule:
        unknown = unknown_labels(self.equal)
        if unknown:
            raise ConfigError(f"inhibit rule: unknown equal labels {unknown}")
        return inhibit_rule(self.source_matchers, self.target_matchers, self.equal)


class RoutesFile(BaseModel):
    """The whole routing file: ``routes:``, a list of :class:`RouteSpec`; maintenance windows, inhibit rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: list[RouteSpec] = Field(max_length=_ROUTES_MAX)
    maintenance_windows: list[MaintenanceSpec] = Field(default_factory=list, max_length=_ROUTES_MAX)
    inhibit_rules: list[InhibitSpec] | None = Field(None, max_length=_ROUTES_MAX)


def parse_routes(text: str, source: str = "<routes>") -> RoutingTable:
    """Parse routing YAML; a mistake raises :class:`ConfigError` naming the file and the key."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or "routes" not in doc:
        raise ConfigError(f"{source}: expected a top-level 'routes:' list")
    try:
        parsed = RoutesFile.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(err['loc'])}: {_problem(err)}" for err in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None
    try:
        windows = tuple(spec.to_window() for spec in parsed.maintenance_windows)
        rules = DEFAULT_RULES if parsed.inhibit_rules is None else tuple(r.to_rule() for r in parsed.inhibit_rules)
        routes = tuple(spec.to_route() for spec in parsed.routes)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return RoutingTable(routes, windows, rules)


def _problem(err: ErrorDetails) -> str:
    return "unknown key" if err["type"] == "extra_forbidden" else err["msg"]


def _where(loc: tuple[int | str, ...]) -> str:
    """``("routes", 2, "severity")`` -> ``routes[2].severity``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<file>"


def load_routes(path: str = "") -> RoutingTable:
    """The table from ``path`` (ADWATCH_NOTIFIER_ROUTES_FILE), else the built-in default."""
    if not path:
        return parse_routes(DEFAULT_ROUTES_YAML, "<default routes>")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"ADWATCH_NOTIFIER_ROUTES_FILE: cannot read {path}: {exc.strerror}") from None
    return parse_routes(text, path)
