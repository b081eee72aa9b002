"""Which segments are watched: configured dimension sets and the hierarchy between them.

A *segment set* is a tuple of dimension names (``()`` is all traffic, ``("country",)``,
``("country", "ad_format")``...); each event feeds one segment of every configured set. A set's
*parents* are the largest configured sets it strictly contains the dimensions of (``country`` is
the parent of ``country, ad_format``; the global set is the parent of every top set), so a
country-wide drop is one alert on the country with its formats as the drill-down.

Pure: parsing, validation (the cardinality guard), parent lookup, and the Spark key of a segment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from adwatch.contracts import UNBOUNDED_FIELDS, segment_id
from adwatch.errors import ConfigError

SegmentSet = tuple[str, ...]
KEY_SEPARATOR = "\x1f"
"""Joins a segment's dimension names and values into its Spark grouping key: a dimension value
never holds a control character (those events are dead-lettered), so the key splits back
unambiguously. Names, not the set's position, so reordering or adding sets keeps every state."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_GLOBAL_SPELLINGS = ("", "*", "-", "all")


def parse_segment_sets(text: str) -> tuple[SegmentSet, ...]:
    """``'*;country;country,ad_format;app_id'`` -> the sets, in order, duplicates removed.

    Refuses (:class:`ConfigError`) a malformed name and an unbounded field (``user_hash``,
    ``event_id``...): a segment per user is an out-of-memory, not a segment.
    """
    sets: list[SegmentSet] = []
    for raw in text.split(";"):
        raw = raw.strip()
        names = () if raw in _GLOBAL_SPELLINGS else tuple(n.strip() for n in raw.split(","))
        for name in names:
            if not _NAME.match(name):
                raise ConfigError(f"segment set {raw!r}: {name!r} is not a dimension name (lower snake_case)")
            if name in UNBOUNDED_FIELDS:
                raise ConfigError(
                    f"segment set {raw!r}: {name!r} has one value per event or user (unbounded cardinality); "
                    "a segment keyed by it would hold one state per value. Watch a bounded dimension instead"
                )
        if len(set(names)) != len(names):
            raise ConfigError(f"segment set {raw!r} names a dimension twice")
        if names not in sets and not any(set(names) == set(s) for s in sets):
            sets.append(names)
    if not sets:
        raise ConfigError("no segment set configured")
    return tuple(sets)


@dataclass(frozen=True)
class Hierarchy:
    """The configured segment sets and who is whose parent."""

    sets: tuple[SegmentSet, ...]

    @classmethod
    def parse(cls, text: str) -> Hierarchy:
        return cls(parse_segment_sets(text))

    @cached_property
    def dimensions(self) -> tuple[str, ...]:
        """Every dimension any set uses, in first-use order."""
        seen: dict[str, None] = {}
        for s in self.sets:
            seen.update(dict.fromkeys(s))
        return tuple(seen)

    @cached_property
    def parent_sets(self) -> dict[SegmentSet, tuple[SegmentSet, ...]]:
        """Each set's direct parents: configured proper subsets with no configured set between."""
        out: dict[SegmentSet, tuple[SegmentSet, ...]] = {}
        for child in self.sets:
            below = [s for s in self.sets if set(s) < set(child)]
            direct = [p for p in below if not any(set(p) < set(q) for q in below)]
            out[child] = tuple(direct)
        return out

    @cached_property
    def child_sets(self) -> dict[SegmentSet, tuple[SegmentSet, ...]]:
        out: dict[SegmentSet, list[SegmentSet]] = {s: [] for s in self.sets}
        for child, parents in self.parent_sets.items():
            for p in parents:
                out[p].append(child)
        return {s: tuple(c) for s, c in out.items()}

    def set_of(self, dimensions: Mapping[str, str]) -> SegmentSet | None:
        names = set(dimensions)
        return next((s for s in self.sets if set(s) == names), None)

    def parents(self, dimensions: Mapping[str, str]) -> list[dict[str, str]]:
        """The parent segments of a segment (its dimensions restricted to each parent set)."""
        own = self.set_of(dimensions)
        if own is None:
            return []
        return [{n: dimensions[n] for n in p} for p in self.parent_sets[own]]

    def is_child_of(self, child: Mapping[str, str], parent: Mapping[str, str]) -> bool:
        """Whether ``child`` is a direct child segment of ``parent`` in this hierarchy."""
        return any(p == dict(parent) for p in self.parents(child))

    @staticmethod
    def spark_key(names: Sequence[str], values: Sequence[str]) -> str:
        return KEY_SEPARATOR.join([",".join(names), *values])

    @staticmethod
    def dimensions_of_key(key: str) -> dict[str, str]:
        """The dimensions of a Spark grouping key built by the job (the names, then the values)."""
        head, *values = key.split(KEY_SEPARATOR)
        return dict(zip(head.split(",") if head else [], values, strict=True))


def parent_segment_ids(hierarchy: Hierarchy, dimensions: Mapping[str, str]) -> list[str]:
    return [segment_id(p) for p in hierarchy.parents(dimensions)]
