"""Anomaly scenarios: what to inject, where, when and how strongly, and their ground truth.

Text form (CLI ``--scenario``, drill): ``TYPE[:SEGMENTS[:START[:DURATION[:MAGNITUDE]]]]``

- TYPE: ``ctr_drop``, ``ctr_spike``, ``traffic_spike``, ``ecpm_drop``,
  ``click_flood_without_impressions``, ``traffic_drop`` (an outage; magnitude 0: dark) or ``clean``.
- SEGMENTS: comma-separated segment ids of any dimensions, ``;`` between them when an id has
  several dimensions (its own ``,``): ``campaign_id=cmp-0042``, ``app_id=com.adwatch.app0003``,
  ``country=US``, ``ad_format=banner,app_id=com.adwatch.app0003``,
  ``ad_format=banner,country=US``; or the country x format cells in the old spelling,
  ``US|banner`` / ``US/banner`` with ``*`` wildcards (``US|*``, ``*|native``, ``*``: each
  expands to the cells' ids). Default ``US|banner`` (``*``, every cell, for ``clean``).
- START: offset from the run start (``0``, ``90s``, ``5m``, ``1h``) or an ISO time
  (``2025-01-01T10:00:00Z``). Default ``0``.
- DURATION: ``90s``, ``5m``, ``1h`` (a bare number is seconds). Default ``5m``.
- MAGNITUDE: a multiplier; default per type (see :data:`DEFAULT_MAGNITUDE`).

Empty fields take the default: ``ctr_drop::2m:3m`` = US|banner from 2 to 5 minutes in.
Pure module: no I/O, time comes in as ``now_ms``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, get_args

from adwatch.contracts import TruthRecord, parse_segment_id, segment_id, segment_key
from adwatch.errors import AdwatchError
from adwatch_generator.catalog import SEGMENT_KEYS, SEGMENTS
from adwatch_generator.inventory import DIMENSIONS, known_values

ScenarioKind = Literal[
    "ctr_drop", "ctr_spike", "traffic_spike", "ecpm_drop", "click_flood_without_impressions", "traffic_drop", "clean"
]
SCENARIO_KINDS: tuple[ScenarioKind, ...] = get_args(ScenarioKind)

DEFAULT_MAGNITUDE: dict[ScenarioKind, float] = {
    "ctr_drop": 0.4,  # CTR x 0.4
    "ctr_spike": 3.0,  # bot clicks: CTR x 3
    "traffic_spike": 3.0,  # impressions x 3
    "ecpm_drop": 0.5,  # price x 0.5
    "click_flood_without_impressions": 1.0,  # orphan clicks = 1 x the normal click volume (>= 6/min)
    "traffic_drop": 0.1,  # impressions x 0.1 (an outage, a broken tag); 0 = the segment goes dark
    "clean": 1.0,
}
EXPECTED_ALERT: dict[ScenarioKind, str | None] = {
    "ctr_drop": "ctr_drop",
    "ctr_spike": "ctr_spike",
    "traffic_spike": "traffic_spike",
    "ecpm_drop": "ecpm_drop",
    "click_flood_without_impressions": "click_without_impression",
    "traffic_drop": "traffic_drop",
    "clean": None,
}
DEFAULT_SEGMENTS = (segment_key("US", "banner"),)
DEFAULT_DURATION_MS = 5 * 60_000

_DURATION_RE = re.compile(r"^\+?(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ][0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?")


class ScenarioError(AdwatchError):
    """A scenario that cannot be understood or does not make sense."""


@dataclass(frozen=True)
class Scenario:
    """One injected anomaly on some segments over ``[start_ms, end_ms)``."""

    kind: ScenarioKind
    segments: tuple[str, ...]
    start_ms: int
    end_ms: int
    magnitude: float
    scenario_id: str = field(default="")

    def __post_init__(self) -> None:
        if self.kind not in SCENARIO_KINDS:
            raise ScenarioError(f"unknown scenario type {self.kind!r}; choose one of {', '.join(SCENARIO_KINDS)}")
        if self.end_ms <= self.start_ms:
            raise ScenarioError(f"{self.kind}: the duration must be positive")
        check_magnitude(self.kind, self.magnitude)
        if not self.scenario_id:
            text = f"{self.kind}|{','.join(self.segments)}|{self.start_ms}|{self.end_ms}|{self.magnitude}"
            object.__setattr__(self, "scenario_id", f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}")

    @property
    def expected_alert_type(self) -> str | None:
        return EXPECTED_ALERT[self.kind]

    def overlap_ms(self, lo_ms: int, hi_ms: int) -> int:
        """How much of ``[lo_ms, hi_ms)`` this scenario covers."""
        return max(0, min(hi_ms, self.end_ms) - max(lo_ms, self.start_ms))

    def ended_at(self, end_ms: int) -> Scenario:
        """The same scenario (same id) stopped early at ``end_ms``."""
        return replace(self, end_ms=max(self.start_ms + 1, min(self.end_ms, end_ms)))


def check_magnitude(kind: str, magnitude: float) -> None:
    """Reject magnitudes that would not produce the anomaly the type names."""
    if kind == "traffic_drop":
        if not 0 <= magnitude < 1:
            raise ScenarioError(f"{kind}: magnitude is a multiplier in [0, 1), 0 = dark (got {magnitude})")
        return
    if not magnitude > 0:
        raise ScenarioError(f"{kind}: magnitude must be > 0 (got {magnitude})")
    if kind in ("ctr_drop", "ecpm_drop") and magnitude >= 1:
        raise ScenarioError(f"{kind}: magnitude is a multiplier below 1, e.g. 0.4 (got {magnitude})")
    if kind in ("ctr_spike", "traffic_spike") and magnitude <= 1:
        raise ScenarioError(f"{kind}: magnitude is a multiplier above 1, e.g. 3 (got {magnitude})")


def parse_duration_ms(text: str) -> int:
    """``90s``, ``5m``, ``1.5h``, ``250ms``; a bare number is seconds."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise ScenarioError(f"bad duration {text!r}: use e.g. 90s, 5m, 1h")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2)])


def parse_time_ms(text: str, now_ms: int) -> int:
    """An offset from ``now_ms`` (``90s``, ``-10m``) or an ISO time (UTC unless it says otherwise)."""
    text = text.strip()
    if _ISO_RE.match(text):
        try:
            moment = datetime.fromisoformat(text.replace(" ", "T"))
        except ValueError as exc:
            raise ScenarioError(f"bad time {text!r}: {exc}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if text.startswith("-"):
        return now_ms - parse_duration_ms(text[1:])
    return now_ms + parse_duration_ms(text)


def resolve_segments(text: str | Sequence[str], universe: Sequence[str] = SEGMENT_KEYS) -> tuple[str, ...]:
    """Segment ids from ``"US|banner,DE/native"``, ``"US|*"`` (cells of ``universe``, in its order)
    and ids of any dimensions (``campaign_id=cmp-0042``; ``;``-separated when one has several
    dimensions), canonical (names sorted), each once, in the order given (cells first as listed).

    Unknown dimensions, values the catalogue does not have, and cells outside ``universe`` are
    refused: a scenario on nothing would inject nothing.
    """
    items = _split_segments(text)
    cells: set[str] = set()
    others: list[str] = []
    for item in items:
        if item == "*":
            cells.update(universe)
        elif "=" in item:
            sid = _segment(item)
            if sid in universe:
                cells.add(sid)
            elif sid not in others:
                others.append(sid)
        else:
            cells.update(_cells(item, universe))
    return tuple(key for key in universe if key in cells) + tuple(others)


def _split_segments(text: str | Sequence[str]) -> list[str]:
    if not isinstance(text, str):
        return [p.strip() for p in text if p.strip()]
    if ";" in text:
        return [p.strip() for p in text.split(";") if p.strip()]
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if any("=" in p for p in parts) and not all("=" in p for p in parts):
        raise ScenarioError(f"bad segments {text!r}: separate segment ids with ';' when one has several dimensions")
    if len(parts) > 1 and all("=" in p for p in parts) and len({p.partition("=")[0] for p in parts}) == len(parts):
        # ``ad_format=banner,country=US`` is one segment (distinct names); ``campaign_id=a,campaign_id=b`` two
        return [text.strip()]
    return parts


def _segment(item: str) -> str:
    """The canonical id of ``name=value[,name=value...]``, checked against the catalogue."""
    try:
        dims = parse_segment_id(item)
    except ValueError as exc:
        raise ScenarioError(f"bad segment {item!r}: {exc}") from None
    for name, value in dims.items():
        if name not in DIMENSIONS:
            raise ScenarioError(f"bad segment {item!r}: unknown dimension {name!r}; known: {', '.join(DIMENSIONS)}")
        if value not in known_values(SEGMENTS, name):
            raise ScenarioError(f"unknown segment {item!r}: no {name} {value!r} in the catalogue")
    return segment_id(dims)


def _cells(item: str, universe: Sequence[str]) -> list[str]:
    parts = re.split(r"[|/]", item)
    if len(parts) != 2:
        raise ScenarioError(f"bad segment {item!r}: use COUNTRY|format (e.g. US|banner) or a segment id")
    country, ad_format = parts[0].strip().upper(), parts[1].strip().lower()
    matches = []
    for key in universe:
        dims = parse_segment_id(key)
        if country in ("*", dims.get("country")) and ad_format in ("*", dims.get("ad_format")):
            matches.append(key)
    if not matches:
        raise ScenarioError(f"unknown segment {item!r}; known: e.g. US|banner, DE/native, {', '.join(universe[:2])}")
    return matches


def segments_overlap(a: str, b: str) -> bool:
    """Whether two segment ids can share events: no dimension they both name has two values."""
    try:
        da, db = parse_segment_id(a), parse_segment_id(b)
    except ValueError:
        return a == b
    return all(db[name] == value for name, value in da.items() if name in db)


def make_scenario(
    kind: str,
    *,
    segments: str | Sequence[str] | None = None,
    start_ms: int,
    duration_ms: int = DEFAULT_DURATION_MS,
    magnitude: float | None = None,
    universe: Sequence[str] = SEGMENT_KEYS,
) -> Scenario:
    """A scenario with the defaults filled in (segments ``US|banner``, magnitude per type); segments
    as in :func:`resolve_segments`."""
    if kind not in SCENARIO_KINDS:
        raise ScenarioError(f"unknown scenario type {kind!r}; choose one of {', '.join(SCENARIO_KINDS)}")
    scenario_kind: ScenarioKind = kind  # narrowed by the check above
    if segments is None or (isinstance(segments, str) and not segments.strip()):
        segments = "*" if scenario_kind == "clean" else ",".join(DEFAULT_SEGMENTS)
    keys = resolve_segments(segments, universe)
    if not keys:
        raise ScenarioError(f"{kind}: no segments given")
    if duration_ms <= 0:
        raise ScenarioError(f"{kind}: the duration must be positive")
    value = DEFAULT_MAGNITUDE[scenario_kind] if magnitude is None else magnitude
    return Scenario(scenario_kind, keys, start_ms, start_ms + duration_ms, value)


def parse_scenario(text: str, now_ms: int, universe: Sequence[str] = SEGMENT_KEYS) -> Scenario:
    """Parse ``TYPE[:SEGMENTS[:START[:DURATION[:MAGNITUDE]]]]``; START is relative to ``now_ms``."""
    kind, _, rest = text.strip().partition(":")
    segments, _, rest = rest.partition(":")
    start_text = ""
    iso = _ISO_RE.match(rest)
    if iso:
        start_text, rest = iso.group(0), rest[iso.end() :].lstrip(":")
    else:
        start_text, _, rest = rest.partition(":")
    duration_text, _, magnitude_text = rest.partition(":")
    if ":" in magnitude_text:
        raise ScenarioError(
            f"bad scenario {text!r}: too many fields; use TYPE[:SEGMENTS[:START[:DURATION[:MAGNITUDE]]]]"
        )
    try:
        magnitude = float(magnitude_text) if magnitude_text.strip() else None
    except ValueError:
        raise ScenarioError(f"bad magnitude {magnitude_text!r} in {text!r}: use a number, e.g. 0.4") from None
    start_ms = parse_time_ms(start_text, now_ms) if start_text.strip() else now_ms
    duration_ms = parse_duration_ms(duration_text) if duration_text.strip() else DEFAULT_DURATION_MS
    return make_scenario(
        kind.strip(),
        segments=segments,
        start_ms=start_ms,
        duration_ms=duration_ms,
        magnitude=magnitude,
        universe=universe,
    )


def truth_record(scenario: Scenario) -> TruthRecord:
    """The ground truth a quality benchmark scores detection against."""
    return TruthRecord(
        scenario_id=scenario.scenario_id,
        scenario=scenario.kind,
        segments=list(scenario.segments),
        start_ms=scenario.start_ms,
        end_ms=scenario.end_ms,
        magnitude=scenario.magnitude,
        expected_alert_type=scenario.expected_alert_type,
    )


def scenario_from_truth(record: TruthRecord) -> Scenario:
    """Back from the truth topic (how a drill reaches a running live generator)."""
    if record.scenario not in SCENARIO_KINDS:
        raise ScenarioError(f"unknown scenario type {record.scenario!r} in truth record {record.scenario_id}")
    return Scenario(
        record.scenario,  # narrowed to a ScenarioKind by the check above
        tuple(_canonical(sid) for sid in record.segments),
        record.start_ms,
        record.end_ms,
        record.magnitude,
        record.scenario_id,
    )


def apply_control(
    current: dict[str, Scenario], records: Sequence[TruthRecord], now_ms: int
) -> tuple[list[Scenario], list[Scenario]]:
    """What truth-topic records mean for a running generator: (scenarios to upsert, corrections).

    A new or changed scenario is upserted unless it is already over. A ``clean`` record stops
    the running scenarios on segments that overlap its own (:func:`segments_overlap`: ``clean``
    on ``country=US`` stops one on a campaign, which may run in the US) at ``max(its start, now)``; those early ends are the
    corrections, to be re-published (same ``scenario_id``; the latest record per id wins).
    Records that do not parse are skipped.
    """
    known = dict(current)
    updates: list[Scenario] = []
    corrections: list[Scenario] = []
    for record in records:
        try:
            scenario = scenario_from_truth(record)
        except ScenarioError:
            continue
        if scenario.kind == "clean":
            if scenario.end_ms <= now_ms:
                continue
            stop_at = max(scenario.start_ms, now_ms)
            for other in list(known.values()):
                if other.kind != "clean" and other.end_ms > stop_at and _overlap(scenario.segments, other.segments):
                    ended = other.ended_at(stop_at)
                    known[ended.scenario_id] = ended
                    updates.append(ended)
                    corrections.append(ended)
            continue
        if scenario.end_ms <= now_ms or known.get(scenario.scenario_id) == scenario:
            continue
        known[scenario.scenario_id] = scenario
        updates.append(scenario)
    return updates, corrections


def _overlap(a: Sequence[str], b: Sequence[str]) -> bool:
    return any(segments_overlap(x, y) for x in a for y in b)


def _canonical(text: str) -> str:
    """A segment id in today's spelling (a version-1 ``US|banner`` becomes ``ad_format=banner,country=US``)."""
    try:
        return segment_id(parse_segment_id(text))
    except ValueError:
        return text
