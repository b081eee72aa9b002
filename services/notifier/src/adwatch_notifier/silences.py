"""Silences and recurring maintenance windows: which firings not to send, for how long, and who said so.

A :class:`Silence` (Alertmanager's): matchers, ``starts_at``/``ends_at`` (epoch seconds),
``created_by``, ``comment`` and an id; it mutes a firing while active and every matcher matches.
Silences live in a :class:`SilenceStore`: :class:`RedisSilenceStore` (one hash shared by every
channel and replica, ``<prefix>:silences``) or :class:`MemorySilenceStore` (tests). Expiring a
silence sets its end to now; ended silences stay listed for ``RETENTION_S`` (as Alertmanager's
retention), then go.

A :class:`MaintenanceWindow` is recurring: weekdays and a UTC time range (``end`` before
``start`` crosses midnight, counted from the day it starts), with optional matchers.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import redis

from adwatch.errors import ConfigError
from adwatch_notifier.ledger import _guarded
from adwatch_notifier.matchers import Matcher, all_match, parse_matchers

RETENTION_S = 24 * 3600
"""How long an ended silence stays listed."""
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclass(frozen=True)
class Silence:
    """Mute the firings every matcher matches, from ``starts_at`` until ``ends_at`` (epoch seconds)."""

    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def active(self, now_s: float) -> bool:
        return self.starts_at <= now_s < self.ends_at

    def mutes(self, labels: dict[str, str], now_s: float) -> bool:
        return self.active(now_s) and all_match(self.matchers, labels)

    def encode(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "matchers": [str(m) for m in self.matchers],
                "starts_at": self.starts_at,
                "ends_at": self.ends_at,
                "created_by": self.created_by,
                "comment": self.comment,
            }
        )

    @staticmethod
    def parse(value: str | bytes) -> Silence | None:
        """None for a record that is not a silence (it is skipped, never raised on)."""
        try:
            data = json.loads(value)
            return Silence(
                parse_matchers(data["matchers"], strict=False),  # as written: checked when created
                float(data["starts_at"]),
                float(data["ends_at"]),
                str(data.get("created_by", "")),
                str(data.get("comment", "")),
                str(data["id"]),
            )
        except (ValueError, KeyError, TypeError, ConfigError):
            return None


def new_silence(matchers: Sequence[str], *, now_s: float, duration_s: float, created_by: str, comment: str) -> Silence:
    """A silence starting now; at least one matcher (an empty list would mute everything)."""
    if not matchers:
        raise ConfigError("a silence needs at least one matcher")
    if duration_s <= 0:
        raise ConfigError("a silence needs a positive duration")
    if not created_by.strip():
        raise ConfigError("a silence needs an author")
    return Silence(parse_matchers(matchers), now_s, now_s + duration_s, created_by, comment)


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``1h30m``, ``2d`` -> seconds."""
    found = _DURATION.match(text.strip())
    if not text.strip() or found is None:
        raise ConfigError(f"duration {text!r}: expected e.g. 90s, 15m, 1h30m, 2d")
    d, h, m, s = (int(g or 0) for g in found.groups())
    return float(((d * 24 + h) * 60 + m) * 60 + s)


class SilenceStore(Protocol):
    """Where silences are kept, shared by every channel and replica."""

    def add(self, silence: Silence) -> None: ...

    def all(self) -> list[Silence]:
        """Every silence still kept (active, pending, or ended less than ``RETENTION_S`` ago)."""
        ...

    def expire(self, silence_id: str, now_s: float) -> bool:
        """End the silence now; False when there is no such active or pending silence."""
        ...


class MemorySilenceStore:
    """The store on a dict (tests)."""

    def __init__(self, *silences: Silence) -> None:
        self.data = {s.id: s for s in silences}

    def add(self, silence: Silence) -> None:
        self.data[silence.id] = silence

    def all(self) -> list[Silence]:
        return list(self.data.values())

    def expire(self, silence_id: str, now_s: float) -> bool:
        current = self.data.get(silence_id)
        if current is None or current.ends_at <= now_s:
            return False
        self.data[silence_id] = _ended(current, now_s)
        return True


class RedisSilenceStore:
    """One Redis hash ``<prefix>:silences``: id -> silence JSON."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r, self.key = client, f"{prefix}:silences"

    @_guarded
    def add(self, silence: Silence) -> None:
        self.r.hset(self.key, silence.id, silence.encode())

    @_guarded
    def all(self) -> list[Silence]:
        raw: dict[bytes, bytes] = self.r.hgetall(self.key)  # type: ignore[assignment]
        return [s for s in (Silence.parse(v) for v in raw.values()) if s is not None]

    @_guarded
    def expire(self, silence_id: str, now_s: float) -> bool:
        raw = self.r.hget(self.key, silence_id)
        current = Silence.parse(raw) if isinstance(raw, (bytes, str)) else None
        if current is None or current.ends_at <= now_s:
            return False
        self.r.hset(self.key, silence_id, _ended(current, now_s).encode())
        return True

    @_guarded
    def collect(self, now_s: float) -> int:
        """Drop silences ended more than ``RETENTION_S`` ago; how many went."""
        gone = [s.id for s in self.all() if s.ends_at < now_s - RETENTION_S]
        if gone:
            self.r.hdel(self.key, *gone)
        return len(gone)


def _ended(silence: Silence, now_s: float) -> Silence:
    return Silence(
        silence.matchers,
        min(silence.starts_at, now_s),
        now_s,
        silence.created_by,
        silence.comment,
        silence.id,
    )


@dataclass(frozen=True)
class MaintenanceWindow:
    """Every ``weekdays`` from ``start`` to ``end`` (``HH:MM`` UTC) the matching firings are muted."""

    name: str
    weekdays: frozenset[int]  # 0 = Monday
    start_min: int
    end_min: int
    matchers: tuple[Matcher, ...] = ()

    def active(self, now_s: float) -> bool:
        t = datetime.fromtimestamp(now_s, UTC)
        minute, day = t.hour * 60 + t.minute, t.weekday()
        if self.start_min < self.end_min:
            return day in self.weekdays and self.start_min <= minute < self.end_min
        # crosses midnight: the part after midnight belongs to the previous day's window
        return (day in self.weekdays and minute >= self.start_min) or (
            (day - 1) % 7 in self.weekdays and minute < self.end_min
        )

    def mutes(self, labels: dict[str, str], now_s: float) -> bool:
        return self.active(now_s) and all_match(self.matchers, labels)


def parse_hhmm(text: str) -> int:
    found = re.match(r"^([01]\d|2[0-3]):([0-5]\d)$", text.strip())
    if found is None:
        raise ConfigError(f"time {text!r}: expected HH:MM (UTC)")
    return int(found.group(1)) * 60 + int(found.group(2))


def maintenance_window(
    name: str, weekdays: Sequence[str], start: str, end: str, matchers: Sequence[str] = ()
) -> MaintenanceWindow:
    days = [d.strip().lower()[:3] for d in weekdays] or list(WEEKDAYS)
    unknown = sorted(set(days) - set(WEEKDAYS))
    if unknown:
        raise ConfigError(f"maintenance window {name!r}: unknown weekdays {unknown} (mon..sun)")
    start_min, end_min = parse_hhmm(start), parse_hhmm(end)
    if start_min == end_min:
        raise ConfigError(f"maintenance window {name!r}: start equals end")
    return MaintenanceWindow(
        name, frozenset(WEEKDAYS.index(d) for d in days), start_min, end_min, parse_matchers(matchers)
    )
