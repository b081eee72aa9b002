"""Contract round-trips and rejection of bad input."""

from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from adwatch.contracts import (
    AD_FORMATS,
    ALERT_TYPES,
    EPOCH_MS_MAX,
    SEVERITIES,
    AdEvent,
    Alert,
    ContractError,
    SegmentWindow,
    decode,
    describe_segment,
    encode,
    format_message,
    make_alert_id,
    make_fingerprint,
    parse_segment_id,
    segment_id,
)

countries = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2)
ids = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20)
epoch_ms = st.integers(min_value=0, max_value=EPOCH_MS_MAX)
identifiers = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)

events = st.builds(
    AdEvent,
    event_id=ids,
    event_time_ms=epoch_ms,
    event_type=st.sampled_from(["impression", "click", "request", "conversion"]),
    country=countries,
    ad_format=st.sampled_from(AD_FORMATS),
    app_id=ids,
    placement_id=ids,
    campaign_id=ids,
    user_hash=ids,
    revenue_usd=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    impression_id=st.none() | ids,
)

alerts = st.builds(
    Alert,
    alert_id=identifiers,
    fingerprint=identifiers,
    status=st.sampled_from(["firing", "resolved"]),
    alert_type=st.sampled_from(ALERT_TYPES),
    severity=st.sampled_from(SEVERITIES),
    country=countries,
    ad_format=st.sampled_from(AD_FORMATS),
    metric=st.sampled_from(["ctr", "impressions", "ecpm", "orphan_clicks"]),
    current=finite,
    expected=finite,
    band_low=finite,
    band_high=finite,
    deviation_pct=finite,
    volume=st.integers(min_value=0, max_value=10**9),
    p_value=st.floats(min_value=0, max_value=1),
    z_score=finite,
    window_start_ms=epoch_ms,
    window_end_ms=epoch_ms,
    detected_at_ms=epoch_ms,
    message=st.text(max_size=4096),
    rule=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", max_size=32),
)


@given(events)
def test_ad_event_round_trips(event: AdEvent) -> None:
    assert decode(encode(event), AdEvent) == event


@given(alerts)
def test_alert_round_trips(alert: Alert) -> None:
    assert decode(encode(alert), Alert) == alert


def test_alert_rule_field_is_backward_compatible() -> None:
    """``rule`` arrived after the contract shipped: old producers' alerts decode (empty rule), and an
    alert carrying it decodes in a consumer that does not know the field yet (unknown keys are ignored)."""
    new = Alert(**{**_alert_fields(), "rule": "ctr"})
    old_bytes = json.dumps(_alert_fields()).encode()
    assert decode(old_bytes, Alert).rule == ""
    assert decode(encode(new), Alert).rule == "ctr"

    class OldAlert(msgspec.Struct, kw_only=True):  # the contract before the field
        alert_id: str
        rule_set: str = "default"

    assert msgspec.json.decode(encode(new), type=OldAlert).alert_id == new.alert_id
    with pytest.raises(ContractError, match="rule"):
        decode(json.dumps({**_alert_fields(), "rule": "bad\nid"}).encode(), Alert)


def _alert_fields() -> dict[str, object]:
    return {
        "alert_id": "a1",
        "fingerprint": "ctr_drop:US|banner",
        "status": "firing",
        "alert_type": "ctr_drop",
        "severity": "high",
        "country": "US",
        "ad_format": "banner",
        "metric": "ctr",
        "current": 0.01,
        "expected": 0.02,
        "band_low": 0.015,
        "band_high": 0.025,
        "deviation_pct": -50.0,
        "volume": 1000,
        "p_value": 1e-6,
        "z_score": -5.0,
        "window_start_ms": 1_700_000_000_000,
        "window_end_ms": 1_700_000_060_000,
        "detected_at_ms": 1_700_000_065_000,
        "message": "m",
    }


def _valid_event() -> dict[str, object]:
    return {
        "event_id": "e1",
        "event_time_ms": 1_700_000_000_000,
        "event_type": "impression",
        "country": "US",
        "ad_format": "banner",
        "app_id": "a",
        "placement_id": "p",
        "campaign_id": "c",
        "user_hash": "u",
        "revenue_usd": 0.002,
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("country", "usa", id="country-not-alpha2"),
        pytest.param("app_id", "com.example\r\nBcc: x", id="control-characters"),
        pytest.param("campaign_id", "c" * 257, id="over-long-value"),
        pytest.param("placement_id", "", id="empty-value"),
        pytest.param("event_type", "view", id="unknown-event-type"),
        pytest.param("revenue_usd", -1.0, id="negative-revenue"),
        pytest.param("event_time_ms", "yesterday", id="time-not-int"),
        pytest.param("event_time_ms", 10**17, id="time-in-microseconds"),
    ],
)
def test_bad_event_field_is_named(field: str, value: object) -> None:
    record = _valid_event() | {field: value}
    with pytest.raises(ContractError) as err:
        decode(json.dumps(record).encode(), AdEvent)
    assert err.value.field == field
    assert field in str(err.value)


def test_unknown_dimension_values_are_accepted() -> None:
    """A new app, a new ad format, an exchange the platform just added: not bad input."""
    record = _valid_event() | {"ad_format": "billboard", "app_id": "com.new.app", "dimensions": {"exchange": "x1"}}
    event = decode(json.dumps(record).encode(), AdEvent)
    assert event.ad_format == "billboard"
    assert event.dimensions == {"exchange": "x1"}


@given(st.dictionaries(st.from_regex(r"^[a-z][a-z0-9_]{0,10}$", fullmatch=True), ids, max_size=4))
def test_segment_id_round_trips(dims: dict[str, str]) -> None:
    sid = segment_id(dims)
    assume(not sid.startswith("h:"))  # too long to read back: hashed (next test)
    assert parse_segment_id(sid) == dims
    assert all(0x21 <= ord(ch) <= 0x7E for ch in sid)  # printable ASCII: safe in keys, headers, URLs
    assert segment_id(dict(reversed(list(dims.items())))) == sid  # order of the names does not matter


def test_long_segment_id_is_hashed_and_fits_a_fingerprint() -> None:
    sid = segment_id({"campaign_id": "c" * 256, "app_id": "a" * 256})
    assert sid.startswith("h:") and len(sid) <= 200
    assert len(make_fingerprint("ctr_drop", sid)) <= 255


def test_version_1_records_are_read_as_country_ad_format_segments() -> None:
    v1 = {
        "window_start_ms": 0,
        "window_end_ms": 60_000,
        "country": "US",
        "ad_format": "banner",
        "impressions": 10,
        "clicks": 1,
        "revenue_usd": 0.0,
        "schema_version": 1,
    }
    window = decode(json.dumps(v1).encode(), SegmentWindow)
    assert window.dimensions == {"country": "US", "ad_format": "banner"}
    assert window.segment_id == "ad_format=banner,country=US" == segment_id(window.dimensions)
    assert parse_segment_id("US|banner") == window.dimensions  # a version-1 segment key


def test_version_1_consumer_reads_a_country_format_segment() -> None:
    class V1Window(msgspec.Struct, kw_only=True):  # the version-1 contract's segment fields
        country: str
        ad_format: str
        impressions: int

    window = SegmentWindow(
        window_start_ms=0,
        window_end_ms=60_000,
        dimensions={"country": "US", "ad_format": "banner", "app_id": "com.a"},
        impressions=5,
        clicks=0,
        revenue_usd=0.0,
    )
    old = msgspec.json.decode(encode(window), type=V1Window)
    assert (old.country, old.ad_format, old.impressions) == ("US", "banner", 5)


def test_describe_segment() -> None:
    assert describe_segment({}) == "all traffic"
    assert describe_segment({"country": "US", "ad_format": "banner"}) == "US banner"
    assert describe_segment({"app_id": "com.g", "country": "US"}) == "US app_id=com.g"


def test_missing_field_is_named() -> None:
    record = _valid_event()
    del record["country"]
    with pytest.raises(ContractError) as err:
        decode(json.dumps(record).encode(), AdEvent)
    assert err.value.field == "country"


@given(st.binary(max_size=64))
def test_garbage_raises_contract_error_only(data: bytes) -> None:
    with contextlib.suppress(ContractError):
        decode(data, AdEvent)


def test_alert_id_is_deterministic() -> None:
    fp = make_fingerprint("ctr_drop", "US|banner")
    assert make_alert_id(fp, 60_000, "firing") == make_alert_id(fp, 60_000, "firing")
    assert make_alert_id(fp, 60_000, "firing") != make_alert_id(fp, 120_000, "firing")
    assert make_alert_id(fp, 60_000, "firing") != make_alert_id(fp, 60_000, "resolved")


def test_seed_message_shape() -> None:
    message = format_message("firing", "ctr_drop", "US banner", "ctr", 0.02, 0.05)
    assert message == "🚨 CTR drop! US banner: 5.00% -> 2.00% (-60.0%)"


def test_window_derived_metrics() -> None:
    window = SegmentWindow(
        window_start_ms=0,
        window_end_ms=60_000,
        country="US",
        ad_format="banner",
        impressions=1000,
        clicks=50,
        revenue_usd=2.0,
    )
    assert window.ctr == pytest.approx(0.05)
    assert window.ecpm == pytest.approx(2.0)


def test_exported_json_schemas_are_current() -> None:
    """schemas/*.json are generated by `make schemas`; non-Python consumers read them."""
    from pathlib import Path

    from adwatch.contracts import json_schemas

    folder = Path(__file__).resolve().parents[3] / "schemas"
    for name, schema in json_schemas().items():
        path = folder / f"{name}.json"
        assert path.exists(), f"{path} missing: run `make schemas`"
        assert json.loads(path.read_text()) == json.loads(msgspec.json.encode(schema)), f"{path} stale: `make schemas`"
