"""Inhibition (Alertmanager's ``inhibit_rules``): a firing source alert mutes matching target alerts.

A rule mutes a firing *target* (every ``target_matchers`` matches) while some *source* alert
(every ``source_matchers`` matches) fires with the same values of the ``equal`` labels. As in
Alertmanager, an alert never inhibits itself: when it matches both sides, another source
fingerprint must be firing.

Sources are recorded when seen, by every channel's consumer (each sees every alert), in an
:class:`InhibitStore` shared by channels and replicas: a firing source is recorded for
``source_ttl_s`` (renewed by its next window), its recovery removes it.

Default rules (:data:`DEFAULT_RULES`, used unless the routes file has ``inhibit_rules:``):

- a traffic alert (``alert_type=~traffic_.*``) on a segment mutes the CTR and eCPM alerts
  (``alert_type=~ctr_.*|ecpm_.*``) of that segment (``equal: [segment]``, the segment id, so it
  holds for a segment of any dimensions: ``US banner``, ``app_id=com.x``, all traffic): with the
  traffic itself anomalous, the ratios built on it are noise;
- a ``critical`` alert mutes lower-severity alerts with the same fingerprint labels
  (``equal: [alert_type, segment]``).

As in Alertmanager, a label that neither alert has is equal ('' on both sides): ``equal:
[country, ad_format]`` puts every segment without those dimensions (``app_id=com.a``,
``app_id=com.b``) in one group, so a rule about "the same segment" says ``segment``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis

from adwatch.contracts import ALERT_TYPES, segment_id
from adwatch_notifier.ledger import _guarded
from adwatch_notifier.matchers import Matcher, all_match, parse_matchers


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @property
    def id(self) -> str:
        """Stable across restarts and replicas while the rule is unchanged (the store's key)."""
        text = "|".join([",".join(map(str, self.source)), ",".join(map(str, self.target)), ",".join(self.equal)])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def group(self, labels: Mapping[str, str]) -> str:
        """The values of the ``equal`` labels: a source and a target meet under the same group."""
        return "|".join(labels.get(name, "") for name in self.equal)

    def is_source(self, labels: Mapping[str, str]) -> bool:
        return all_match(self.source, labels)

    def is_target(self, labels: Mapping[str, str]) -> bool:
        return all_match(self.target, labels)


def inhibit_rule(source: Sequence[str], target: Sequence[str], equal: Sequence[str]) -> InhibitRule:
    return InhibitRule(parse_matchers(source), parse_matchers(target), tuple(equal))


def fixes_fingerprint(equal: Sequence[str], labels: Mapping[str, str]) -> bool:
    """Whether alerts equal on ``equal`` to these labels have their fingerprint (their Kafka key,
    ``adwatch.contracts.make_fingerprint``): the alert type and the segment (named, or by every one of its dimensions, e.g. ``country`` and ``ad_format``)."""
    names = set(equal)
    if "alert_type" not in names:
        return False
    if "segment" in names:
        return True
    segment = labels.get("segment", "")
    dims = [n for n in names if n != "alert_type"]
    return bool(dims) and segment_id({n: labels.get(n, "") for n in dims if labels.get(n)}) == segment


def source_types(rule: InhibitRule) -> tuple[str, ...]:
    """The alert types a source of ``rule`` can have: the contract's types its ``alert_type`` matchers accept."""
    checks = [m for m in rule.source if m.name == "alert_type"]
    return tuple(t for t in ALERT_TYPES if all(m.matches({"alert_type": t}) for m in checks))


def source_may_follow(rule: InhibitRule, labels: Mapping[str, str]) -> bool:
    """Could a source of ``rule`` for this target still arrive *after* it? Only then is it worth waiting.

    Not when the ``equal`` labels fix the whole fingerprint: a source then has the target's Kafka
    key, so it is on the same partition and consumed in order (the default ``critical`` rule). Not
    when no alert type of the contract can be a source with the target's ``equal`` labels.
    """
    if not rule.is_target(labels) or fixes_fingerprint(rule.equal, labels):
        return False
    types = source_types(rule)
    if "alert_type" in rule.equal:
        types = tuple(t for t in types if t == labels.get("alert_type"))
    return bool(types)


DEFAULT_RULES = (
    inhibit_rule(["alert_type=~traffic_.*"], ["alert_type=~ctr_.*|ecpm_.*"], ["segment"]),
    inhibit_rule(["severity=critical"], ["severity=~low|medium|high"], ["alert_type", "segment"]),
)


class InhibitStore(Protocol):
    """Firing sources per (rule, group): fingerprint -> until when (epoch ms)."""

    def mark(self, rule_id: str, group: str, fingerprint: str, until_ms: int) -> None: ...

    def clear(self, rule_id: str, group: str, fingerprint: str) -> None: ...

    def firing(self, queries: Sequence[tuple[str, str]], now_ms: int) -> list[list[str]]:
        """For each ``(rule_id, group)``: the fingerprints of the sources firing now (one round trip)."""
        ...


class MemoryInhibitStore:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, int]] = {}

    def mark(self, rule_id: str, group: str, fingerprint: str, until_ms: int) -> None:
        self.data.setdefault((rule_id, group), {})[fingerprint] = until_ms

    def clear(self, rule_id: str, group: str, fingerprint: str) -> None:
        self.data.get((rule_id, group), {}).pop(fingerprint, None)

    def firing(self, queries: Sequence[tuple[str, str]], now_ms: int) -> list[list[str]]:
        return [[fp for fp, until in self.data.get(q, {}).items() if until > now_ms] for q in queries]


class RedisInhibitStore:
    """A sorted set per (rule, group), ``<prefix>:inhibit:<rule>:<group>``: fingerprint scored by its end (ms)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r, self.prefix = client, prefix

    def key(self, rule_id: str, group: str) -> str:
        return f"{self.prefix}:inhibit:{rule_id}:{group}"

    @_guarded
    def mark(self, rule_id: str, group: str, fingerprint: str, until_ms: int) -> None:
        key = self.key(rule_id, group)
        pipe = self.r.pipeline()
        pipe.zadd(key, {fingerprint: until_ms}, gt=True)  # adds, or moves the end only later
        pipe.pexpireat(key, until_ms)  # every source of a key shares one TTL: the latest mark's
        pipe.execute()

    @_guarded
    def clear(self, rule_id: str, group: str, fingerprint: str) -> None:
        self.r.zrem(self.key(rule_id, group), fingerprint)

    @_guarded
    def firing(self, queries: Sequence[tuple[str, str]], now_ms: int) -> list[list[str]]:
        if not queries:
            return []
        pipe = self.r.pipeline(transaction=False)
        for rule_id, group in queries:
            pipe.zrangebyscore(self.key(rule_id, group), f"({now_ms}", "+inf", start=0, num=2)
        replies: list[list[bytes]] = pipe.execute()
        return [[v.decode() if isinstance(v, bytes) else str(v) for v in raw] for raw in replies]
