r"""Label matchers (Alertmanager's ``name=value``, ``!=``, ``=~``, ``!~``) over an alert's labels, decided purely.

An alert's labels are its fields and every dimension of its segment (:func:`alert_labels`:
``country``, ``ad_format``, ``app_id``, ``campaign_id``, ``exchange``...; ``segment`` is the segment
id); a label the alert does not have matches as the empty string, and a regex is anchored at both
ends, as in Alertmanager (``alert_type=~ctr_.*`` matches ``ctr_drop``, not ``xctr_drop``;
``app_id=~com\.example\..*`` matches the apps of ``com.example``, and no alert of a segment
without an ``app_id``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from adwatch.contracts import EVENT_DIMENSIONS, GLOBAL_SEGMENT_ID, Alert, parse_segment_id, segment_id
from adwatch.errors import ConfigError

MatchOp = Literal["=", "!=", "=~", "!~"]
LABELS = ("alert_id", "fingerprint", "status", "alert_type", "severity", "country", "ad_format", "segment", "metric")
"""The alert's own labels (also ``rule_set``); any dimension name is a label too (:data:`LABEL_NAME`)."""
LABEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
"""The shape of a dimension name (the contract's ``DimensionName``)."""
LABELS_MAX = 64
"""Most labels in a ``group_by`` or an inhibition ``equal`` list."""
DEFAULT_DIMENSIONS = ("exchange", "device_os")
"""Dimensions beyond the events' named fields that matchers know without configuration."""
_dimensions: set[str] = {*EVENT_DIMENSIONS, *DEFAULT_DIMENSIONS}


def allow_dimensions(names: Iterable[str]) -> None:
    """Make more dimension names known labels (``ADWATCH_NOTIFIER_DIMENSIONS``, read at start-up).

    A matcher, ``group_by`` or ``equal`` naming a label that is neither a field of the alert nor a
    known dimension is refused (``colour=red`` is a typo, not a dimension): a silence with a typo
    would mute nothing, and its ``!=`` form everything."""
    for name in names:
        if not LABEL_NAME.match(name):
            raise ConfigError(f"dimension {name!r}: expected a lower-case snake_case name")
        _dimensions.add(name)


def known_labels() -> frozenset[str]:
    """Every name a matcher may use: the alert's labels, ``rule_set`` and the known dimensions."""
    return frozenset({*LABELS, "rule_set", *_dimensions})


_SYNTAX = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
_MAX_VALUE = 1000


def alert_labels(alert: Alert) -> dict[str, str]:
    """The alert as labels: what matchers, routes, group_by, inhibition ``equal`` lists and silences see.

    Every dimension of the alert's segment is a label (``app_id``, ``campaign_id``...), ``segment`` is
    its segment id (``ad_format=banner,country=US``, ``*`` for all traffic); ``country`` and
    ``ad_format`` are '' when the segment has none. The alert's own fields win over a dimension
    of the same name (``status``, ``severity``...)."""
    labels = dict(alert.dimensions)
    labels.setdefault("country", alert.country)
    labels.setdefault("ad_format", alert.ad_format)
    labels.update(
        {
            "alert_id": alert.alert_id,
            "fingerprint": alert.fingerprint,
            "status": alert.status,
            "alert_type": alert.alert_type,
            "severity": alert.severity,
            "segment": alert.segment_id,
            "metric": alert.metric,
            "rule_set": alert.rule_set,
        }
    )
    return labels


def unknown_labels(names: Iterable[str]) -> list[str]:
    """The names that are no known label (see :func:`allow_dimensions`), sorted."""
    known = known_labels()
    return sorted(set(names) - known)


def normalize_segment(text: str) -> str:
    """A segment id as routes write it: ``ad_format=banner,country=US`` (names in any order), ``*``,
    a hashed ``h:...`` id, or the version-1 ``US|banner``; :class:`ValueError` when it is none."""
    text = text.strip()
    if text == GLOBAL_SEGMENT_ID or text.startswith("h:"):
        return text
    dims = parse_segment_id(text)
    if not dims:
        raise ValueError(f"not a segment id: {text!r}")
    return segment_id(dims)


def _known_text() -> str:
    return ", ".join(sorted(known_labels()))


@dataclass(frozen=True)
class Matcher:
    """One condition on one label; ``str(m)`` is the syntax :func:`parse_matcher` reads."""

    name: str
    op: MatchOp
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_regex", re.compile(f"(?:{self.value})\\Z"))
            except re.error as exc:
                raise ConfigError(f"matcher {self}: bad regex: {exc}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        match self.op:
            case "=":
                return actual == self.value
            case "!=":
                return actual != self.value
            case "=~":
                return self._regex is not None and self._regex.match(actual) is not None
            case "!~":
                return self._regex is None or self._regex.match(actual) is None

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matcher(text: str, *, strict: bool = True) -> Matcher:
    """``country=US``, ``alert_type=~ctr_.*``, ``app_id=~com\\.example\\..*``, ``severity!=low``; quotes
    around the value are dropped. ``strict``: the name must be a known label (a typo is refused);
    not strict (a silence read back from Redis, written by a replica that knew more dimensions):
    any dimension-shaped name."""
    found = _SYNTAX.match(text)
    if found is None:
        raise ConfigError(f"matcher {text!r}: expected name=value, name!=value, name=~regex or name!~regex")
    name, op, value = found.groups()
    if not strict and not LABEL_NAME.match(name):
        raise ConfigError(f"matcher {text!r}: {name!r} is no label name")
    if strict and name not in known_labels():
        raise ConfigError(
            f"matcher {text!r}: unknown label {name!r} (one of {_known_text()}; "
            "more dimensions: ADWATCH_NOTIFIER_DIMENSIONS)"
        )
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if len(value) > _MAX_VALUE:
        raise ConfigError(f"matcher {name}: value longer than {_MAX_VALUE} characters")
    if name == "segment" and op in ("=", "!=") and "|" in value and "=" not in value:
        # a version-1 ``segment=US|banner`` (also a silence stored before v2) names that segment's id
        with contextlib.suppress(ValueError):
            value = normalize_segment(value)
    return Matcher(name, op, value)  # type: ignore[arg-type]


def parse_matchers(texts: Iterable[str], *, strict: bool = True) -> tuple[Matcher, ...]:
    return tuple(parse_matcher(t, strict=strict) for t in texts)


def all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Every matcher matches (an empty list matches every alert)."""
    return all(m.matches(labels) for m in matchers)
