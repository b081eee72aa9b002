"""The records that flow between adwatch services, defined once.

Every service imports these; nobody redefines them. JSON on the wire via msgspec
(fast, strict). Decoding bad bytes raises :class:`ContractError`, naming the field.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import quote, unquote

import msgspec

from adwatch.errors import AdwatchError

SCHEMA_VERSION = 2
"""2: segments are dimension maps with a segment id (``SegmentWindow``/``Alert`` gained ``segment_id``,
``dimensions``; ``Alert`` gained ``contributors``/``folded``; ``AdEvent`` gained open ``dimensions``
and ``ad_format`` became an open value). Version-1 consumers still read a version-2 record of a
segment that has a ``country`` and an ``ad_format`` in their version-1 vocabulary (msgspec ignores
the new fields); a version-2 consumer reads version-1 records (the dimensions are derived from
``country``/``ad_format``). The fingerprint moved from ``type:US|banner`` to ``type:<segment id>``."""

# --- topics and headers: names, partitions -------------------------------------------------
TOPIC_AD_EVENTS = "ad-events"
TOPIC_AD_EVENTS_DLQ = "ad-events.dlq"
TOPIC_TRUTH = "ad-events.truth"
TOPIC_ALERTS = "alerts"
TOPIC_ALERTS_DLQ = "alerts.dlq"
TOPIC_ALERTS_DELIVERIES = "alerts.deliveries"  # the notifiers' delivery records, key = channel|fingerprint

TOPIC_PARTITIONS: dict[str, int] = {
    TOPIC_AD_EVENTS: 6,
    TOPIC_AD_EVENTS_DLQ: 1,
    TOPIC_TRUTH: 1,
    TOPIC_ALERTS: 3,
    TOPIC_ALERTS_DLQ: 1,
    TOPIC_ALERTS_DELIVERIES: 1,
}

COMPACTED = {"cleanup.policy": "compact", "delete.retention.ms": str(24 * 3600 * 1000)}
"""A log-compacted topic: the last record per key is kept; a tombstone (no value) for a day."""

TOPIC_CONFIGS: dict[str, dict[str, str]] = {TOPIC_ALERTS_DELIVERIES: COMPACTED}
"""Topic configs that matter to correctness (``ensure_topics`` creates the topics with them)."""

HEADER_TRACEPARENT = "traceparent"
HEADER_TRACESTATE = "tracestate"
HEADER_SCHEMA_VERSION = "adwatch-schema-version"

# --- closed vocabularies -------------------------------------------------------------------
EventType = Literal["impression", "click", "request", "conversion"]
AdFormat = Literal["banner", "interstitial", "rewarded_video", "native"]
AlertType = Literal[
    "ctr_drop",
    "ctr_spike",
    "traffic_spike",
    "traffic_drop",
    "ecpm_drop",
    "click_without_impression",
    "value_anomaly",
    "no_data",
    "partition_lagging",
]
AlertStatus = Literal["firing", "resolved"]
Resolution = Literal["recovered", "new_normal", "superseded"]
"""How an episode ended: back inside its pre-incident band, a lasting shift accepted as the new
baseline, or (stream level) replaced by another alert."""
Severity = Literal["low", "medium", "high", "critical"]
Metric = Literal["ctr", "impressions", "ecpm", "orphan_clicks", "value", "events", "lag_seconds"]

AD_FORMATS: tuple[AdFormat, ...] = ("banner", "interstitial", "rewarded_video", "native")
EVENT_TYPES: tuple[EventType, ...] = ("impression", "click", "request", "conversion")
ALERT_TYPES: tuple[AlertType, ...] = get_args(AlertType)
STREAM_ALERT_TYPES: tuple[AlertType, ...] = ("no_data", "partition_lagging")
"""Alert types about the input stream itself (segment ``*``), raised by the job's driver, not by a rule."""
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")

CountryCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
MAX_DIMENSION_VALUE = 256
DimensionName = Annotated[
    str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="lower-case snake_case dimension name")
]
DimensionValue = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[^\x00-\x1f\x7f]{1,256}$",
        description="any value (a new app is not bad input): 1-256 characters, no control characters",
    ),
]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]
EPOCH_MS_MAX = 4_102_444_800_000  # 2100-01-01 UTC: a larger value is a unit mistake (microseconds), not a date
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=EPOCH_MS_MAX, description="UTC epoch milliseconds (before 2100)")]
Identifier = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[\x21-\x7e]{1,255}$",
        description="printable ASCII without spaces or control characters (safe in mail headers and URLs)",
    ),
]


class ContractError(AdwatchError):
    """Bytes that do not decode into a contract record; ``field`` names the culprit."""

    def __init__(self, record: str, field: str, reason: str) -> None:
        super().__init__(f"invalid {record}: {field}: {reason}")
        self.record = record
        self.field = field
        self.reason = reason


class AdEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One ad-serving event. Clicks carry the id of the impression they follow.

    Its dimensions are the named fields of :data:`EVENT_DIMENSIONS` plus any in ``dimensions``
    (``exchange``, ``device_os``...): see :func:`event_dimensions`.
    """

    event_id: str
    event_time_ms: EpochMs
    event_type: EventType
    country: CountryCode
    ad_format: DimensionValue
    app_id: DimensionValue
    placement_id: DimensionValue
    campaign_id: DimensionValue
    user_hash: str
    revenue_usd: NonNegative = 0.0
    impression_id: str | None = None
    dimensions: dict[DimensionName, DimensionValue] = {}
    """Further dimensions of the platform (``exchange``, ``device_os``...); the named fields win."""
    schema_version: int = SCHEMA_VERSION


LegacyCountry = Annotated[str, msgspec.Meta(pattern=r"^([A-Z]{2})?$")]
LegacyValue = Annotated[str, msgspec.Meta(pattern=r"^[^\x00-\x1f\x7f]{0,256}$")]
Dimensions = dict[DimensionName, DimensionValue]


class _Segmented(msgspec.Struct, frozen=True, kw_only=True):
    """A record of one segment: its dimensions, its id, and the version-1 fields kept beside them.

    ``country``/``ad_format`` are the segment's values of those dimensions ('' when it has none),
    kept so version-1 consumers still read it; a version-1 record (no ``dimensions``) gets its
    dimensions and id from them on decode.
    """

    country: LegacyCountry = ""
    ad_format: LegacyValue = ""
    dimensions: Dimensions = {}
    segment_id: Annotated[str, msgspec.Meta(max_length=255)] = ""

    def __post_init__(self) -> None:
        if not self.dimensions and (self.country or self.ad_format):
            legacy = {k: v for k, v in (("country", self.country), ("ad_format", self.ad_format)) if v}
            msgspec.structs.force_setattr(self, "dimensions", legacy)
        if not self.segment_id:
            msgspec.structs.force_setattr(self, "segment_id", segment_id(self.dimensions))
        if self.dimensions and not (self.country or self.ad_format):
            msgspec.structs.force_setattr(self, "country", self.dimensions.get("country", ""))
            msgspec.structs.force_setattr(self, "ad_format", self.dimensions.get("ad_format", ""))

    @property
    def segment_key(self) -> str:
        """The segment's id (the key of its Redis hash, its ClickHouse rows and its fingerprint)."""
        return self.segment_id

    @property
    def where(self) -> str:
        """The segment for people: ``US banner app_id=com.example.game`` (see :func:`describe_segment`)."""
        return describe_segment(self.dimensions)


class SegmentWindow(_Segmented, frozen=True, kw_only=True):
    """Metrics of one segment over one event-time window [start, end)."""

    window_start_ms: EpochMs
    window_end_ms: EpochMs
    impressions: Count
    clicks: Count
    revenue_usd: NonNegative
    orphan_clicks: Count = 0
    event_counts: dict[str, int] = {}
    value: float | None = None
    """A gauge reading for a segment fed by a value stream (eCPM, CPC, latency series that come
    without counts; one series per segment, e.g. ``metric=latency_ms``): the ``value`` rule's input."""
    schema_version: int = SCHEMA_VERSION

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def ecpm(self) -> float:
        return 1000.0 * self.revenue_usd / self.impressions if self.impressions else 0.0


class Contributor(msgspec.Struct, frozen=True, kw_only=True):
    """A child segment that explains part of its parent's change (drill-down)."""

    segment_id: Annotated[str, msgspec.Meta(max_length=255)]
    dimensions: Dimensions
    current: float
    expected: float
    share: float
    """Fraction of the parent's change from this child (0.91: 91% of the drop)."""
    volume: Count = 0
    alerting: bool = False
    """Whether the child breached on its own in the same window (its alert is folded into this one)."""


class Alert(_Segmented, frozen=True, kw_only=True):
    """A firing or resolved anomaly on one segment, with the evidence behind it."""

    alert_id: Identifier
    fingerprint: Identifier
    status: AlertStatus
    alert_type: AlertType
    severity: Severity
    metric: Metric
    current: float
    expected: float
    band_low: float
    band_high: float
    deviation_pct: float
    volume: Count
    p_value: float
    z_score: float
    window_start_ms: EpochMs
    window_end_ms: EpochMs
    detected_at_ms: EpochMs
    message: Annotated[str, msgspec.Meta(max_length=4096)]
    rule_set: Annotated[str, msgspec.Meta(pattern=r"^[^\x00-\x1f\x7f]{0,255}$")] = "default"
    rule: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{0,128}$")] = ""
    """Id of the rule that raised it (``ctr``, ``classic_traffic``...; see the detector's rules/registry.py).
    Empty from producers older than the field; a consumer must not require it."""
    contributors: Annotated[list[Contributor], msgspec.Meta(max_length=20)] = []
    """Drill-down: the child segments that explain the change, largest share first."""
    folded: Count = 0
    """How many child alerts of the same window were folded into this one (not sent on their own)."""
    parent_segment_id: Annotated[str, msgspec.Meta(max_length=255)] = ""
    """Set on an alert folded into another's (one problem, one alert): that alert's segment id,
    usually the parent's (a parent explained by one child is folded into the child). Such alerts
    are stored, not published."""
    previous_severity: Severity | None = None
    """Set on a re-emitted firing alert whose severity rose during the episode (an escalation)."""
    resolution: Resolution | None = None
    """Set on a resolved alert: how the episode ended."""
    duration_ms: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Set on a resolved alert: from the first firing window's start to this window's start. Its
    ``severity`` is then the episode's peak, not the last window's."""
    schema_version: int = SCHEMA_VERSION


class TruthRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Ground truth of one injected anomaly, for scoring detection."""

    scenario_id: str
    scenario: str
    segments: list[str]
    start_ms: EpochMs
    end_ms: EpochMs
    magnitude: float
    expected_alert_type: str | None = None
    schema_version: int = SCHEMA_VERSION


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A record a stage could not handle: the original bytes and why."""

    source_topic: str
    stage: str
    reason: str
    payload: str
    partition: int = -1
    offset: int = -1
    channel: str | None = None
    attempts: int = 0
    failed_at_ms: EpochMs = 0
    payload_b64: str = ""
    """The original bytes, base64 (``payload`` is their lossy UTF-8 text, for reading)."""
    headers: dict[str, str] = {}
    """The original record's headers (``traceparent`` kept); a value that is not UTF-8 is ``base64:<b64>``."""
    key_b64: str = ""
    target: str = ""
    reason_code: str = ""
    """The closed-set reason (``permanent``, ``deadline``, ``contract``...); ``reason`` is the human text."""
    payload_size: int = 0
    """The original record's size in bytes (0 from older producers)."""
    payload_sha256: str = ""
    """Set when the record was too large to park whole: ``payload`` is then a prefix, and
    ``payload_b64`` the whole record only while it fits the broker's message limit."""
    schema_version: int = SCHEMA_VERSION


# --- identity -----------------------------------------------------------------------------
EVENT_DIMENSIONS: tuple[str, ...] = ("country", "ad_format", "app_id", "placement_id", "campaign_id")
"""The dimensions every AdEvent has as named fields; others travel in ``AdEvent.dimensions``."""
UNBOUNDED_FIELDS: frozenset[str] = frozenset({"event_id", "user_hash", "impression_id", "event_time_ms"})
"""Per-event or per-user fields: a segment keyed by one of them is one segment per event (refused)."""
GLOBAL_SEGMENT_ID = "*"
_SEGMENT_ID_MAX = 200  # room for 'alert_type:' in a 255-character fingerprint


def event_dimensions(event: AdEvent) -> dict[str, str]:
    """Every dimension of an event: the open ``dimensions`` map, then the named fields over it."""
    named = {name: getattr(event, name) for name in EVENT_DIMENSIONS}
    return {**event.dimensions, **named}


def segment_id(dimensions: Mapping[str, str]) -> str:
    """One stable, printable-ASCII id per segment: ``ad_format=banner,country=US`` (names sorted,
    values percent-encoded); ``*`` for the global segment; a hash when the id would be too long."""
    if not dimensions:
        return GLOBAL_SEGMENT_ID
    text = ",".join(f"{name}={quote(dimensions[name], safe='')}" for name in sorted(dimensions))
    if len(text) <= _SEGMENT_ID_MAX:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:40]
    names = "+".join(sorted(dimensions))[: _SEGMENT_ID_MAX - 48]
    return f"h:{names}:{digest}"


def parse_segment_id(text: str) -> dict[str, str]:
    """The dimensions of a readable segment id (the inverse of :func:`segment_id`), a version-1
    ``US|banner`` key included. A hashed id cannot be read back: :class:`ValueError`."""
    if text in ("", GLOBAL_SEGMENT_ID):
        return {}
    if text.startswith("h:"):
        raise ValueError(f"hashed segment id {text!r} has no readable dimensions")
    if "=" not in text and text.count("|") == 1:
        country, ad_format = text.split("|")
        return {"country": country, "ad_format": ad_format}
    dims: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise ValueError(f"not a segment id: {text!r}")
        dims[name] = unquote(value)
    return dims


def segment_key(country: str, ad_format: str) -> str:
    """The id of a country x ad format segment."""
    return segment_id({"country": country, "ad_format": ad_format})


def describe_segment(dimensions: Mapping[str, str]) -> str:
    """For people: ``US banner``, ``US app_id=com.example.game``, ``all traffic``."""
    if not dimensions:
        return "all traffic"
    parts = [dimensions[k] for k in ("country", "ad_format") if k in dimensions]
    parts += [f"{k}={dimensions[k]}" for k in sorted(dimensions) if k not in ("country", "ad_format")]
    return " ".join(parts)


def make_fingerprint(alert_type: str, segment: str) -> str:
    """Stable identity of 'this kind of problem on this segment' (PagerDuty dedup_key)."""
    return f"{alert_type}:{segment}"


def make_alert_id(fingerprint: str, window_start_ms: int, status: str) -> str:
    """Same fingerprint, window and status give the same id, so replays mint nothing new."""
    digest = hashlib.sha256(f"{fingerprint}@{window_start_ms}#{status}".encode()).hexdigest()
    return digest[:32]


# --- human message ------------------------------------------------------------------------
_TITLES: dict[str, str] = {
    "ctr_drop": "CTR drop",
    "ctr_spike": "CTR spike",
    "traffic_spike": "Traffic spike",
    "traffic_drop": "Traffic drop",
    "ecpm_drop": "eCPM drop",
    "click_without_impression": "Clicks without impressions",
    "value_anomaly": "Value anomaly",
    "no_data": "No data",
    "partition_lagging": "Partition lagging",
}


def format_value(metric: str, value: float) -> str:
    if metric == "ctr":
        return f"{value * 100:.2f}%"
    if metric == "ecpm":
        return f"${value:.2f}"
    if metric == "value":
        return f"{value:,.4g}"
    if metric == "lag_seconds":
        return f"{value:,.0f} s"
    return f"{value:,.0f}"


def alert_title(alert_type: str) -> str:
    return _TITLES.get(alert_type, alert_type.replace("_", " ").capitalize())


def format_message(
    status: str,
    alert_type: str,
    where: str,
    metric: str,
    current: float,
    expected: float,
    *,
    resolution: str | None = None,
    previous_severity: str | None = None,
    severity: str | None = None,
) -> str:
    """The message users know: ``🚨 CTR drop! US banner: 5.00% -> 2.00% (-60.0%)``.

    ``where`` is the segment for people (:func:`describe_segment`). An escalation says so
    (``⬆️ ... escalated medium -> high``); a level accepted as the new normal is not "resolved"
    as if it had recovered (``🔁 New normal: ...``)."""
    title = alert_title(alert_type)
    cur, exp = format_value(metric, current), format_value(metric, expected)
    if status == "resolved" and resolution == "new_normal":
        return f"🔁 New normal accepted: {title} {where}: stays at {cur} (was {exp}); baseline re-learnt"
    if status == "resolved":
        return f"✅ Resolved: {title} {where}: back to {cur} (expected {exp})"
    change = f" ({deviation_pct(current, expected):+.1f}%)" if expected else ""
    if previous_severity and severity:
        return f"⬆️ {title} escalated {previous_severity} -> {severity}! {where}: {exp} -> {cur}{change}"
    return f"🚨 {title}! {where}: {exp} -> {cur}{change}"


def duration_text(ms: int) -> str:
    """``45 s``, ``23 min``, ``2 h 5 min``, ``3 d 4 h``."""
    s = max(0, ms // 1000)
    if s < 60:
        return f"{s} s"
    minutes = s // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def deviation_pct(current: float, expected: float) -> float:
    return 100.0 * (current - expected) / expected if expected else 0.0


# --- wire format --------------------------------------------------------------------------
_encoder = msgspec.json.Encoder()
_T = TypeVar("_T", bound=msgspec.Struct)
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}

_FIELD_RE = re.compile(r"at `\$\.?([^`]*)`")


def encode(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


def decode(data: bytes | str, record_type: type[_T]) -> _T:
    """Decode and validate one record; raise :class:`ContractError` naming the field."""
    decoder = _decoders.get(record_type)
    if decoder is None:
        decoder = _decoders[record_type] = msgspec.json.Decoder(record_type)
    try:
        result: _T = decoder.decode(data)
    except msgspec.ValidationError as exc:
        match = _FIELD_RE.search(str(exc))
        field = match.group(1) if match else _missing_field(str(exc))
        raise ContractError(record_type.__name__, field or "<root>", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ContractError(record_type.__name__, "<json>", str(exc)) from None
    return result


def _missing_field(message: str) -> str:
    match = re.search(r"missing required field `([^`]*)`", message)
    return match.group(1) if match else ""


CONTRACTS: tuple[type[msgspec.Struct], ...] = (AdEvent, SegmentWindow, Alert, TruthRecord, DeadLetter)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each contract, for non-Python consumers (see ``schemas/``)."""
    return {cls.__name__: msgspec.json.schema(cls) for cls in CONTRACTS}
