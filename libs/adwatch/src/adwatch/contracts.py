"""The records that flow between adwatch services, defined once.

Every service imports these; nobody redefines them. JSON on the wire via msgspec
(fast, strict). Decoding bad bytes raises :class:`ContractError`, naming the field.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from adwatch.errors import AdwatchError

SCHEMA_VERSION = 1

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
AlertType = Literal["ctr_drop", "ctr_spike", "traffic_spike", "traffic_drop", "ecpm_drop", "click_without_impression"]
AlertStatus = Literal["firing", "resolved"]
Severity = Literal["low", "medium", "high", "critical"]
Metric = Literal["ctr", "impressions", "ecpm", "orphan_clicks"]

AD_FORMATS: tuple[AdFormat, ...] = ("banner", "interstitial", "rewarded_video", "native")
EVENT_TYPES: tuple[EventType, ...] = ("impression", "click", "request", "conversion")
ALERT_TYPES: tuple[AlertType, ...] = (
    "ctr_drop",
    "ctr_spike",
    "traffic_spike",
    "traffic_drop",
    "ecpm_drop",
    "click_without_impression",
)
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")

CountryCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
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
    """One ad-serving event. Clicks carry the id of the impression they follow."""

    event_id: str
    event_time_ms: EpochMs
    event_type: EventType
    country: CountryCode
    ad_format: AdFormat
    app_id: str
    placement_id: str
    campaign_id: str
    user_hash: str
    revenue_usd: NonNegative = 0.0
    impression_id: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def segment_key(self) -> str:
        return segment_key(self.country, self.ad_format)


class SegmentWindow(msgspec.Struct, frozen=True, kw_only=True):
    """Metrics of one segment over one event-time window [start, end)."""

    window_start_ms: EpochMs
    window_end_ms: EpochMs
    country: CountryCode
    ad_format: AdFormat
    impressions: Count
    clicks: Count
    revenue_usd: NonNegative
    orphan_clicks: Count = 0
    event_counts: dict[str, int] = {}
    schema_version: int = SCHEMA_VERSION

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def ecpm(self) -> float:
        return 1000.0 * self.revenue_usd / self.impressions if self.impressions else 0.0

    @property
    def segment_key(self) -> str:
        return segment_key(self.country, self.ad_format)


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """A firing or resolved anomaly on one segment, with the evidence behind it."""

    alert_id: Identifier
    fingerprint: Identifier
    status: AlertStatus
    alert_type: AlertType
    severity: Severity
    country: CountryCode
    ad_format: AdFormat
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
def segment_key(country: str, ad_format: str) -> str:
    return f"{country}|{ad_format}"


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
}


def format_value(metric: str, value: float) -> str:
    if metric == "ctr":
        return f"{value * 100:.2f}%"
    if metric == "ecpm":
        return f"${value:.2f}"
    return f"{value:,.0f}"


def alert_title(alert_type: str) -> str:
    return _TITLES.get(alert_type, alert_type.replace("_", " ").capitalize())


def format_message(
    status: str, alert_type: str, country: str, ad_format: str, metric: str, current: float, expected: float
) -> str:
    """The message users know: ``🚨 CTR drop! US banner: 5.00% -> 2.00% (-60.0%)``."""
    title = alert_title(alert_type)
    where = f"{country} {ad_format}"
    cur, exp = format_value(metric, current), format_value(metric, expected)
    if status == "resolved":
        return f"✅ Resolved: {title} {where}: back to {cur} (expected {exp})"
    change = f" ({deviation_pct(current, expected):+.1f}%)" if expected else ""
    return f"🚨 {title}! {where}: {exp} -> {cur}{change}"


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
