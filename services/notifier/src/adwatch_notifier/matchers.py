"""Label matchers (Alertmanager's ``name=value``, ``!=``, ``=~``, ``!~``) over an alert's labels, decided purely.

An alert's labels are its fields and segment dimensions (:func:`alert_labels`); a label the
alert does not have matches as the empty string, and a regex is anchored at both ends, as in
Alertmanager (``alert_type=~ctr_.*`` matches ``ctr_drop``, not ``xctr_drop``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from adwatch.contracts import Alert, segment_key
from adwatch.errors import ConfigError

MatchOp = Literal["=", "!=", "=~", "!~"]
LABELS = ("alert_id", "fingerprint", "status", "alert_type", "severity", "country", "ad_format", "segment", "metric")
"""The names a matcher may use (also ``rule_set``)."""

_SYNTAX = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
_MAX_VALUE = 1000


def alert_labels(alert: Alert) -> dict[str, str]:
    """The alert as labels: what matchers, inhibition ``equal`` lists and silences see."""
    return {
        "alert_id": alert.alert_id,
        "fingerprint": alert.fingerprint,
        "status": alert.status,
        "alert_type": alert.alert_type,
        "severity": alert.severity,
        "country": alert.country,
        "ad_format": alert.ad_format,
        "segment": segment_key(alert.country, alert.ad_format),
        "metric": alert.metric,
        "rule_set": alert.rule_set,
    }


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


def parse_matcher(text: str) -> Matcher:
    """``country=US``, ``alert_type=~ctr_.*``, ``severity!=low``; quotes around the value are dropped."""
    found = _SYNTAX.match(text)
    if found is None:
        raise ConfigError(f"matcher {text!r}: expected name=value, name!=value, name=~regex or name!~regex")
    name, op, value = found.groups()
    if name not in LABELS and name != "rule_set":
        raise ConfigError(f"matcher {text!r}: unknown label {name!r} (one of {', '.join(LABELS)}, rule_set)")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    if len(value) > _MAX_VALUE:
        raise ConfigError(f"matcher {name}: value longer than {_MAX_VALUE} characters")
    return Matcher(name, op, value)  # type: ignore[arg-type]


def parse_matchers(texts: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(parse_matcher(t) for t in texts)


def all_match(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Every matcher matches (an empty list matches every alert)."""
    return all(m.matches(labels) for m in matchers)
