"""Segment sets, the hierarchy between them, tracking, and the drill-down that folds children
into their parent's alert (pure: no Spark)."""

from __future__ import annotations

import pytest

from adwatch.contracts import Alert, make_alert_id, make_fingerprint, segment_id
from adwatch.errors import ConfigError
from adwatch_detector.drilldown import Folder, delta
from adwatch_detector.evidence import BandPoint
from adwatch_detector.hierarchy import Hierarchy
from adwatch_detector.rules import RuleEngine, RuleSettings
from adwatch_detector.rules.engine import budget_tests
from adwatch_detector.settings import DetectorSettings
from adwatch_detector.tracking import Census, DetectorContext, TrackingPolicy, decode_context, encode_context

H = Hierarchy.parse("*;country;country,ad_format;app_id")
W0 = 1_790_000_040_000


def test_sets_and_parents() -> None:
    assert H.sets == ((), ("country",), ("country", "ad_format"), ("app_id",))
    assert H.parent_sets[("country", "ad_format")] == (("country",),)
    assert H.parent_sets[("country",)] == ((),)
    assert H.parent_sets[("app_id",)] == ((),)
    assert H.parents({"country": "US", "ad_format": "banner"}) == [{"country": "US"}]
    assert H.is_child_of({"country": "US", "ad_format": "banner"}, {"country": "US"})
    assert not H.is_child_of({"country": "DE", "ad_format": "banner"}, {"country": "US"})
    key = H.spark_key(("country", "ad_format"), ["US", "banner"])
    assert H.dimensions_of_key(key) == {"country": "US", "ad_format": "banner"}
    assert H.dimensions_of_key(H.spark_key((), [])) == {}


@pytest.mark.parametrize("bad", ["country,user_hash", "event_id", "Country", "country,country"])
def test_unbounded_or_malformed_sets_are_refused_at_start_up(bad: str) -> None:
    with pytest.raises(ConfigError):
        Hierarchy.parse(bad)
    with pytest.raises(ValueError, match="segment_sets"):
        DetectorSettings(segment_sets=bad)


def test_user_hash_refusal_says_why() -> None:
    with pytest.raises(ConfigError, match="unbounded cardinality"):
        Hierarchy.parse("*;user_hash")


def test_tracking_needs_volume_and_room_and_lets_go_with_hysteresis() -> None:
    policy = TrackingPolicy(min_volume=100, max_tracked=2)
    tracked, volume = policy.update(False, 0.0, 0, 150, live=0)
    assert tracked and volume == 150
    assert policy.update(False, 0.0, 0, 150, live=2) == (False, 150), "at the cap: rolled up, not tracked"
    assert policy.update(False, 0.0, 0, 20, live=0)[0] is False, "too small: counts only in its parents"
    assert policy.update(True, 100.0, 50, 60, live=5)[0] is True, "hysteresis: tracked until half the minimum"
    assert policy.idle(1000, 1000 + policy.idle_ms) and not policy.idle(1000, 1000 + policy.idle_ms - 1)


def _window_dims(dims: dict[str, str], imps: int = 1000, clicks: int = 10) -> tuple[object, bool]:
    from adwatch.contracts import SegmentWindow

    return SegmentWindow(
        window_start_ms=W0, window_end_ms=W0 + 60_000, dimensions=dims, impressions=imps, clicks=clicks, revenue_usd=1.0
    ), True


def test_census_counts_live_segments_and_keeps_parent_priors() -> None:
    census = Census({frozenset({"country"})})
    census.observe([_window_dims({"country": "US"}, 1000, 30), _window_dims({"country": "US", "ad_format": "b"})])  # type: ignore[list-item]
    context = census.context()
    assert context.live_segments == 2
    assert set(context.priors) == {"country=US"}
    assert context.priors["country=US"].ctr == pytest.approx(0.03)
    again = decode_context(encode_context(context))
    assert again.live_segments == 2 and again.priors["country=US"].ctr == pytest.approx(0.03)
    assert decode_context("not json") == DetectorContext()
    assert again.prior_for(["country=DE", "country=US"]) == again.priors["country=US"]


def test_the_budget_follows_the_live_segment_count() -> None:
    """Spread over more segments, each segment's test is stricter; over fewer, looser."""
    engine = RuleEngine.build(RuleSettings())
    few, many = engine.for_live_segments(10), engine.for_live_segments(100_000)
    assert few.settings.default.expected_segments == budget_tests(10, 4) == 64
    assert many.settings.default.expected_segments == budget_tests(100_000, 4) == 1 << 19
    assert many.settings.z_threshold > engine.settings.z_threshold > few.settings.z_threshold
    assert many.settings.cusum_h > few.settings.cusum_h
    assert engine.for_live_segments(None) is engine
    assert engine.for_live_segments(100_001) is many, "engines are reused across counts of one bucket"


def _alert(dims: dict[str, str], status: str = "firing", start: int = W0, current: float = 0.01) -> Alert:
    sid = segment_id(dims)
    fp = make_fingerprint("ctr_drop", sid)
    return Alert(
        alert_id=make_alert_id(fp, start, status),
        fingerprint=fp,
        status=status,  # type: ignore[arg-type]
        alert_type="ctr_drop",
        severity="high",
        dimensions=dims,
        metric="ctr",
        current=current,
        expected=0.03,
        band_low=0.025,
        band_high=0.035,
        deviation_pct=-66.0,
        volume=4000,
        p_value=1e-9,
        z_score=-6.0,
        window_start_ms=start,
        window_end_ms=start + 60_000,
        detected_at_ms=start + 65_000,
        message=f"🚨 CTR drop! {sid}",
    )


def _band(dims: dict[str, str], current: float, expected: float, volume: int, start: int = W0) -> BandPoint:
    return BandPoint(
        segment=segment_id(dims),
        alert_type="ctr_drop",
        metric="ctr",
        window_start_ms=start,
        window_end_ms=start + 60_000,
        current=current,
        expected=expected,
        band_low=expected * 0.8,
        band_high=expected * 1.2,
        volume=volume,
        breach=current < expected * 0.8,
    )


FORMATS = ("banner", "interstitial", "rewarded_video", "native")


def test_a_country_wide_drop_is_one_alert_with_its_formats_as_contributors() -> None:
    folder = Folder(H, top=5)
    de = {"country": "DE"}
    children = [{"country": "DE", "ad_format": f} for f in FORMATS]
    bands = [_band(c, 0.01, 0.03, v) for c, v in zip(children, (4000, 2000, 1000, 1000), strict=True)]
    bands.append(_band({"country": "US", "ad_format": "banner"}, 0.01, 0.03, 9000))  # not DE's child
    alerts = [_alert(de), *(_alert(c) for c in children)]
    dims = {b.segment: c for b, c in zip(bands, [*children, {"country": "US", "ad_format": "banner"}], strict=True)}
    published, folded = folder.fold(alerts, bands, dims)
    assert [a.segment_id for a in published] == ["country=DE"]
    parent = published[0]
    assert parent.folded == 4 and len(folded) == 4
    assert all(a.parent_segment_id == "country=DE" for a in folded)
    assert [c.dimensions["ad_format"] for c in parent.contributors] == [
        "banner",
        "interstitial",
        "rewarded_video",
        "native",
    ]
    assert parent.contributors[0].share == pytest.approx(0.5) and all(c.alerting for c in parent.contributors)
    assert "50% of the drop from banner" in parent.message
    # the formats keep firing a window later: still folded into DE's active alert
    later = [_alert(c, start=W0 + 60_000) for c in children]
    published, folded = folder.fold(later, [], {})
    assert published == [] and len(folded) == 4
    # DE resolves while banner still fires: banner's alert is released, on its own
    published, _ = folder.fold([_alert(de, "resolved", W0 + 120_000)], [], {})
    assert [(a.segment_id, a.status) for a in published] == [
        ("country=DE", "resolved"),
        *((segment_id(c), "firing") for c in children),
    ]


def test_a_child_breaching_alone_alerts_alone_with_its_own_fingerprint() -> None:
    folder = Folder(H)
    a1, a2 = {"app_id": "com.a"}, {"app_id": "com.b"}
    published, folded = folder.fold([_alert(a1), _alert(a2)], [], {})
    assert folded == [] and len({a.alert_id for a in published}) == 2
    assert {a.fingerprint for a in published} == {"ctr_drop:app_id=com.a", "ctr_drop:app_id=com.b"}


def test_a_parent_explained_by_one_child_is_that_childs_alert() -> None:
    """US CTR falls because one format fell: the page is about US banner, the US alert folds into it."""
    folder = Folder(H)
    us, banner = {"country": "US"}, {"country": "US", "ad_format": "banner"}
    calm = [{"country": "US", "ad_format": f} for f in FORMATS[1:]]
    de = {"country": "DE"}
    bands = [_band(banner, 0.01, 0.03, 5000), *(_band(c, 0.0299, 0.03, 1000) for c in calm)]
    bands += [_band(us, 0.018, 0.03, 8000), _band(de, 0.0299, 0.03, 3000)]
    dims = {segment_id(d): d for d in (banner, *calm, us, de)}
    published, folded = folder.fold([_alert({}), _alert(us), _alert(banner)], bands, dims)
    assert [a.segment_id for a in published] == [segment_id(banner)]
    assert published[0].folded == 2
    assert {(a.segment_id, a.parent_segment_id) for a in folded} == {
        ("*", segment_id(banner)),
        ("country=US", segment_id(banner)),
    }


def test_a_folded_childs_resolve_is_stored_not_sent() -> None:
    folder = Folder(H)
    us, child = {"country": "US"}, {"country": "US", "ad_format": "banner"}
    folder.fold([_alert(us), _alert(child)], [], {})
    published, folded = folder.fold([_alert(child, "resolved", W0 + 60_000)], [], {})
    assert published == [] and [a.status for a in folded] == ["resolved"]


def test_delta_is_in_units_that_add_up() -> None:
    assert delta("ctr", 0.01, 0.03, 1000) == pytest.approx(-20.0)  # clicks lost
    assert delta("ecpm", 1.0, 2.0, 1000) == pytest.approx(-1.0)  # dollars lost
    assert delta("impressions", 50, 100, 50) == -50


def test_only_tracked_segments_get_silent_windows() -> None:
    """A dark minute of a tracked segment is judged (an outage); the rolled-up long tail costs nothing."""
    import numpy as np

    from adwatch_detector.tracking import close_tracked
    from adwatch_detector.windowing import OpenWindows, fold_events

    def segment_with(events: int) -> OpenWindows:
        ow = OpenWindows()
        times = np.arange(events, dtype=np.int64) * 10
        zeros = np.zeros(events, dtype=np.int64)
        fold_events(ow, times, zeros, zeros.astype(float), zeros, [None] * events, 60_000, 0)
        return ow

    policy = TrackingPolicy(min_volume=50)
    big, small = segment_with(200), segment_with(5)
    closed_big, _ = close_tracked(big, 5 * 60_000, 60_000, policy, None, max_gap_fill=60)
    closed_small, gap = close_tracked(small, 5 * 60_000, 60_000, policy, None, max_gap_fill=60)
    assert big.tracked and [s for s, _ in closed_big] == [0, 60_000, 120_000, 180_000, 240_000]
    assert not small.tracked and gap == 0 and [s for s, _ in closed_small] == [0]


def test_the_folder_forgets_episodes_past_its_horizon() -> None:
    folder = Folder(H, horizon_ms=3_600_000)
    us, banner = {"country": "US"}, {"country": "US", "ad_format": "banner"}
    folder.fold([_alert(us), _alert({"country": "US", "ad_format": "native"}), _alert(banner)], [], {})
    later = W0 + 2 * 3_600_000
    published, folded = folder.fold([_alert(banner, start=later)], [], {})
    assert [a.segment_id for a in published] == [segment_id(banner)] and folded == [], "US's old episode is gone"


def test_a_parent_firing_after_the_child_that_explains_it_folds_into_the_childs_page() -> None:
    """DE paged at 04:00; all traffic breaches a window later only because of DE: no second page."""
    folder = Folder(H)
    de, us = {"country": "DE"}, {"country": "US"}
    published, _ = folder.fold([_alert(de)], [], {})
    assert [a.segment_id for a in published] == ["country=DE"]
    later = W0 + 60_000
    bands = [_band(de, 0.01, 0.03, 4000, later), _band(us, 0.0299, 0.03, 4000, later)]
    published, folded = folder.fold([_alert({}, start=later)], bands, {"country=DE": de, "country=US": us})
    assert published == [] and [(a.segment_id, a.parent_segment_id) for a in folded] == [("*", "country=DE")]
    assert folded[0].contributors[0].segment_id == "country=DE"  # its own drill-down, kept for the record


def test_a_young_segment_borrows_its_parents_ctr_and_price_and_does_not_page_for_differing() -> None:
    """A small app starts from its country's CTR and eCPM instead of the global prior; its own, lower,
    price then takes over without an eCPM page."""
    import math

    import numpy as np

    from adwatch.contracts import SegmentWindow
    from adwatch_detector.rules.base import SegmentPrior
    from adwatch_detector.rules.ctr import CtrState
    from adwatch_detector.rules.ecpm import EcpmState
    from adwatch_detector.rules.state import SegmentState

    engine = RuleEngine.build(RuleSettings())
    state = SegmentState()
    engine.seed(state, SegmentPrior(ctr=0.04, ecpm=4.0, impressions=5000))
    ctr, ecpm = state.rules["ctr"].state, state.rules["ecpm_drop"].state
    assert isinstance(ctr, CtrState) and ctr.clicks / ctr.imps == pytest.approx(0.04)
    assert isinstance(ecpm, EcpmState) and ecpm.mu == pytest.approx(math.log(4.0))
    rng = np.random.default_rng(4)
    windows = []
    for i in range(120):
        n = int(rng.poisson(60))
        windows.append(
            SegmentWindow(
                window_start_ms=W0 + i * 60_000,
                window_end_ms=W0 + (i + 1) * 60_000,
                dimensions={"app_id": "com.small"},
                impressions=n,
                clicks=int(rng.binomial(n, 0.04)),
                revenue_usd=float(rng.lognormal(math.log(2.0 / 1000), 0.4, n).sum()),
            )
        )
    first = engine.detect(state, windows[:1], 0)[0].rules["ecpm_drop"].state
    assert isinstance(first, EcpmState) and math.log(2.0) < first.mu < math.log(4.0)  # blended, prior first
    _, alerts = engine.detect(state, windows[1:], 0)
    assert [a for a in alerts if a.alert_type == "ecpm_drop"] == []


def test_a_stalled_input_leaves_its_silence_unknown_to_every_segment() -> None:
    """No batch for longer than no_data_seconds: the event time since the newest closed window is
    unknown, and a segment's empty windows in it are neither replayed as zero traffic nor aged over
    (one no_data page, not a traffic_drop per segment); the same gap otherwise is an outage."""
    from adwatch.contracts import SegmentWindow
    from adwatch_detector.rules.engine import engine_for
    from adwatch_detector.tracking import stall_span, stalled_silence
    from adwatch_detector.windowing import PartialWindow

    minute = 60_000
    assert stall_span(None, 500_000, 120_000, 60 * minute) is None  # the first batch
    assert stall_span(400_000, 500_000, 120_000, 60 * minute) is None  # batches 100 s apart
    assert stall_span(100_000, 500_000, 120_000, 0) is None  # nothing closed yet
    assert stall_span(100_000, 500_000, 0, 60 * minute) is None  # no_data off
    assert stall_span(100_000, 500_000, 120_000, 60 * minute) == (60 * minute, 60 * minute)  # a backfill
    assert stall_span(0, 90 * minute, 120_000, 60 * minute) == (60 * minute, 90 * minute)  # live
    context = DetectorContext(7, {}, (60 * minute, 90 * minute))
    assert decode_context(encode_context(context)) == context
    assert stalled_silence(61 * minute, PartialWindow(), minute, (60 * minute, 90 * minute))
    assert not stalled_silence(61 * minute, PartialWindow(counts=[1, 0, 0, 0]), minute, (60 * minute, 90 * minute))
    assert not stalled_silence(95 * minute, PartialWindow(), minute, (60 * minute, 90 * minute))

    def window(i: int, imps: int) -> SegmentWindow:
        return SegmentWindow(
            window_start_ms=i * minute,
            window_end_ms=(i + 1) * minute,
            dimensions={"country": "DE"},
            impressions=imps,
            clicks=imps // 50,
            revenue_usd=imps * 0.002,
        )

    engine = engine_for(RuleSettings())
    before = [window(i, 1000 + (i % 3) * 10) for i in range(60)]
    after = [window(i, 1000) for i in range(90, 95)]
    _, alerts = engine.detect(None, [*before, *after], 0)
    assert [a.alert_type for a in alerts if a.status == "firing"] == ["traffic_drop"], "30 silent minutes: an outage"
    state, alerts = engine.detect(None, before, 0)
    level = state.rules["traffic"].state.level
    state, alerts = engine.detect(state, after, 0, unknown=(60 * minute, 90 * minute))
    assert alerts == [] and state.rules["traffic"].state.level == pytest.approx(level, rel=0.05)
