"""Segments of any dimensions (contracts v2): labels, routing, grouping, inhibition; pure, no broker, no Redis."""

from __future__ import annotations

import pytest

from adwatch.contracts import Alert, encode
from adwatch.errors import ConfigError
from adwatch_notifier import matchers
from adwatch_notifier.grouping import GroupFlusher, MemoryGroupStore
from adwatch_notifier.inhibit import DEFAULT_RULES, MemoryInhibitStore
from adwatch_notifier.matchers import alert_labels, allow_dimensions, parse_matcher
from adwatch_notifier.outcomes import Continue, Grouped, Suppressed
from adwatch_notifier.routing import parse_routes, route
from adwatch_notifier.silences import MemorySilenceStore, new_silence
from adwatch_notifier.stages import Envelope, GroupStage, InhibitStage, SilenceStage

from .conftest import make_alert
from .fakes import T0_S, FakeClock, FuncChannel

US_BANNER = {"country": "US", "ad_format": "banner"}
GAME = {**US_BANNER, "app_id": "com.example.game"}
NEWS = {**US_BANNER, "app_id": "com.news.daily"}


def env(alert: Alert) -> Envelope:
    return Envelope(encode(alert), alert=alert)


# --- labels: silences, routes, grouping, inhibition -----------------------------------------
def test_every_dimension_is_a_label_and_a_missing_one_is_empty() -> None:
    labels = alert_labels(make_alert(dimensions={"app_id": "com.x", "campaign_id": "c-1"}))
    assert (labels["app_id"], labels["campaign_id"], labels["segment"]) == (
        "com.x",
        "c-1",
        "app_id=com.x,campaign_id=c-1",
    )
    assert labels["country"] == labels["ad_format"] == ""
    assert parse_matcher("country=").matches(labels) and not parse_matcher("country=~.+").matches(labels)
    assert parse_matcher("exchange!=adx").matches(labels)  # a known dimension the alert lacks
    assert parse_matcher("segment=US|banner").matches(alert_labels(make_alert()))  # the v1 form, as its id


def test_an_unknown_label_is_refused_until_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(matchers, "_dimensions", set(matchers._dimensions))  # the test's own registry
    with pytest.raises(ConfigError, match="unknown label 'bidder'"):
        parse_matcher("bidder=x")
    allow_dimensions(["bidder"])
    assert parse_matcher("bidder=x").matches(alert_labels(make_alert(dimensions={"bidder": "x"})))
    with pytest.raises(ConfigError):
        allow_dimensions(["Not A Name"])


def test_a_silence_on_an_app_regex_mutes_only_those_apps() -> None:
    silence = new_silence([r"app_id=~com\.example\..*"], now_s=T0_S - 60, duration_s=3600, created_by="a", comment="c")
    stage = SilenceStage(MemorySilenceStore(silence), now=FakeClock(), refresh_s=0)
    game = make_alert(dimensions=GAME)
    other_example = make_alert(dimensions={"app_id": "com.example.news"}, alert_type="traffic_drop")
    lookalike = make_alert(dimensions={"app_id": "com.examplex.game"})
    news = make_alert(dimensions=NEWS)
    parent = make_alert()  # US banner: no app_id
    assert stage(env(game)) == Suppressed("silenced") and stage(env(other_example)) == Suppressed("silenced")
    assert [stage(env(a)) for a in (lookalike, news, parent)] == [Continue()] * 3


def test_routes_match_any_dimension() -> None:
    table = parse_routes(
        """
routes:
  - channel: slack
    matchers: ['app_id=~com\\.example\\..*']
    target: "#games"
  - channel: slack
    segments: ["campaign_id=c-42"]
    target: "#c42"
  - channel: slack
"""
    )
    assert route(table, make_alert(dimensions=GAME), "slack").target == "#games"  # type: ignore[union-attr]
    assert route(table, make_alert(dimensions={"campaign_id": "c-42"}), "slack").target == "#c42"  # type: ignore[union-attr]
    assert route(table, make_alert(dimensions=NEWS), "slack").target == ""  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="unknown label 'colour'"):
        parse_routes("routes:\n  - {channel: slack, matchers: ['colour=red']}")
    with pytest.raises(ConfigError, match=r"group_by: unknown labels \['colour'\]"):
        parse_routes("routes:\n  - {channel: slack, group_by: [colour]}")


def test_group_by_country_groups_segments_of_different_dimension_sets() -> None:
    table = parse_routes("routes:\n  - {channel: console, group_by: [alert_type, country], group_wait: 30s}\n")
    store, clock, channel = MemoryGroupStore(), FakeClock(), FuncChannel(name="console")
    stage = GroupStage(table, channel, store, now=clock)  # type: ignore[arg-type]
    us = [make_alert(), make_alert(dimensions={"country": "US", "app_id": "com.x"}), make_alert(dimensions=GAME)]
    de = make_alert(dimensions={"country": "DE", "campaign_id": "c-1"})
    for alert in (*us, de):
        assert stage(env(alert)) == Grouped()
    assert sorted(store.groups) == ["g0:alert_type=ctr_drop,country=DE", "g0:alert_type=ctr_drop,country=US"]
    assert len(store.groups["g0:alert_type=ctr_drop,country=US"].alerts or {}) == 3
    flusher = GroupFlusher(store, channel, {0: table.routes[0].group}, owner="me", now=clock)  # type: ignore[dict-item]
    clock.s += 30
    assert flusher.tick().sent == 2


def test_an_outage_on_a_segment_of_any_dimensions_mutes_its_own_ctr_alerts_only() -> None:
    stage = InhibitStage(MemoryInhibitStore(), DEFAULT_RULES, source_ttl_s=900, now=FakeClock())
    app_a, app_b = {"app_id": "com.a"}, {"app_id": "com.b"}
    assert stage(env(make_alert(dimensions=app_a, alert_type="traffic_drop"))) == Continue()
    assert stage(env(make_alert(dimensions=app_a, alert_type="ctr_drop"))) == Suppressed("inhibited")
    assert stage(env(make_alert(dimensions=app_a, alert_type="ecpm_drop"))) == Suppressed("inhibited")
    assert stage(env(make_alert(dimensions=app_b, alert_type="ctr_drop"))) == Continue()  # another app
    assert stage(env(make_alert(dimensions={"app_id": "com.a", "country": "US"}))) == Continue()  # a child
    assert stage(env(make_alert(dimensions={}, alert_type="ctr_drop"))) == Continue()  # all traffic
