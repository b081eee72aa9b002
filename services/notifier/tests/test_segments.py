"""Segments of any dimensions (contracts v2): labels, routing, grouping, inhibition, and the
drill-down on every channel's message; pure, no broker, no Redis."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from adwatch.contracts import Alert, Contributor, encode
from adwatch.errors import ConfigError
from adwatch_notifier import NotifierSettings, matchers
from adwatch_notifier.channels import build_channel
from adwatch_notifier.formatting import (
    PD_EVENT_MAX,
    Links,
    console_box,
    drilldown_headline,
    email_html,
    email_subject,
    email_text,
    event_size,
    pagerduty_event,
    slack_message,
    trim_event,
    webhook_body,
)
from adwatch_notifier.grouping import GroupFlusher, MemoryGroupStore, summary
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


def drilled(**overrides: Any) -> Alert:
    """US banner CTR 5.00% -> 2.60% (-48%), explained by two apps, three child alerts folded in."""
    contributors = (
        Contributor(
            segment_id="ad_format=banner,app_id=com.example.game,country=US",
            dimensions=GAME,
            current=0.004,
            expected=0.031,
            share=0.91,
            volume=12_000,
            alerting=True,
        ),
        Contributor(
            segment_id="ad_format=banner,app_id=com.news.daily,country=US",
            dimensions=NEWS,
            current=0.045,
            expected=0.05,
            share=0.06,
            volume=3_000,
        ),
    )
    values: dict[str, Any] = {"current": 0.026, "expected": 0.05, "contributors": contributors, "folded": 3}
    values.update(overrides)
    return make_alert(**values)


HEADLINE = "US banner CTR -48%: 91% of the drop from app_id=com.example.game (CTR 3.10% -> 0.40%)"


def env(alert: Alert) -> Envelope:
    return Envelope(encode(alert), alert=alert)


# --- the drill-down on each channel -------------------------------------------------------------
def test_the_headline_names_the_child_that_explains_the_change() -> None:
    assert drilldown_headline(drilled()) == HEADLINE
    assert drilldown_headline(make_alert()) == ""  # no contributors
    assert drilldown_headline(drilled(status="resolved")) == ""  # a recovery has no cause to show


def test_console_shows_the_segment_and_the_drill_down() -> None:
    box = console_box(drilled())
    assert HEADLINE in box
    assert "app_id=com.example.game: 3.10% -> 0.40% (-87%) · 91% of the drop · volume 12,000 · alerting" in box
    assert "app_id=com.news.daily: 5.00% -> 4.50% (-10%) · 6% of the drop · volume 3,000" in box
    assert "+3 child alerts folded" in box
    assert "· US banner ·" in console_box(make_alert()) and "folded" not in console_box(make_alert())


def test_slack_shows_the_segment_and_the_drill_down() -> None:
    message = slack_message(drilled())
    blocks = message["blocks"]
    [drill] = [b for b in blocks if b["type"] == "section" and "Drill-down" in b.get("text", {}).get("text", "")]
    text = drill["text"]["text"]
    assert "US banner CTR -48%: 91% of the drop from `app_id=com.example.game` (CTR 3.10% -&gt; 0.40%)" in text
    assert "• `app_id=com.example.game`: 3.10% -&gt; 0.40% (-87%) · 91% of the drop · volume 12,000 · alerting" in text
    assert "• `app_id=com.news.daily`: 5.00% -&gt; 4.50%" in text and "_+3 child alerts folded_" in text
    assert "*Segment*\n`US banner`" in [f["text"] for f in blocks[1]["fields"]]
    cause = "US banner CTR -48%: 91% of the drop from `app_id=com.example.game` (CTR 3.10% -&gt; 0.40%)"
    assert message["text"].endswith(" · " + cause)  # the notification says the cause too
    assert not [b for b in slack_message(make_alert())["blocks"] if "Drill-down" in json.dumps(b)]


def test_pagerduty_shows_the_segment_and_the_drill_down() -> None:
    event = pagerduty_event(drilled(), "RK")
    payload = event["payload"]
    assert payload["summary"].endswith(" · " + HEADLINE)
    assert payload["source"] == "ad_format=banner,country=US"
    details = payload["custom_details"]
    assert details["segment"] == "US banner" and details["drilldown"] == HEADLINE and details["folded"] == 3
    assert details["dimensions"] == US_BANNER
    assert details["contributors"][0] == {
        "segment": "app_id=com.example.game",
        "segment_id": "ad_format=banner,app_id=com.example.game,country=US",
        "current": "0.40%",
        "expected": "3.10%",
        "share": "91%",
        "volume": 12_000,
        "alerting": True,
    }
    assert len(details["contributors"]) == 2


def test_pagerduty_app_segment_has_no_component_or_group() -> None:
    payload = pagerduty_event(make_alert(dimensions={"app_id": "com.x"}), "RK")["payload"]
    assert payload["source"] == "app_id=com.x" and "component" not in payload and "group" not in payload
    assert payload["summary"] == "🚨 CTR drop! app_id=com.x: 5.00% -> 2.00% (-60.0%)"


def test_pagerduty_with_many_large_contributors_stays_under_512_kb() -> None:
    big = {f"dim_{i}": "v" * 256 for i in range(40)}
    children = tuple(
        Contributor(
            segment_id=f"h:x:{i}", dimensions={**big, "app_id": f"app-{i}"}, current=0.01, expected=0.05, share=0.05
        )
        for i in range(20)
    )
    alert = make_alert(dimensions={**big, "country": "US"}, contributors=children, folded=19)
    event = pagerduty_event(alert, "RK")
    event["payload"]["custom_details"]["big"] = "x" * 600_000
    trimmed = trim_event(event)
    assert event_size(trimmed) <= PD_EVENT_MAX
    assert trimmed["payload"]["custom_details"]["alert_id"] == alert.alert_id
    assert event_size(pagerduty_event(alert, "RK")) <= PD_EVENT_MAX  # built under the limit on its own


def test_email_shows_the_segment_and_the_drill_down() -> None:
    alert = drilled()
    assert email_subject(alert) == "[adwatch] CTR drop: US banner"
    text = email_text(alert)
    assert HEADLINE in text
    assert "  - app_id=com.example.game: 3.10% -> 0.40% (-87%) · 91% of the drop · volume 12,000 · alerting" in text
    assert "  - +3 child alerts folded" in text and "segment: US banner" in text
    page = email_html(alert)
    assert "<code>app_id=com.example.game</code>: 3.10% -&gt; 0.40%" in page and "+3 child alerts folded" in page
    assert email_subject(make_alert(dimensions={"campaign_id": "c-42"})) == "[adwatch] CTR drop: campaign_id=c-42"


@pytest.mark.parametrize(
    ("settings", "text_of"),
    [
        pytest.param({"channel": "console"}, str, id="console"),
        pytest.param({"channel": "slack", "slack_webhook_url": "https://hooks.example/x"}, json.dumps, id="slack"),
        pytest.param(
            {"channel": "pagerduty", "pagerduty_routing_key": "RK"},
            lambda event: event["payload"]["summary"] + json.dumps(event["payload"]["custom_details"]),
            id="pagerduty",
        ),
        pytest.param(
            {"channel": "email", "smtp_host": "127.0.0.1", "smtp_from": "a@example.com", "smtp_to": "b@example.com"},
            lambda msg: msg["Subject"] + msg.get_body(("plain",)).get_content(),
            id="email",
        ),
    ],
)
def test_each_channel_renders_the_contributors(settings: dict[str, Any], text_of: Any) -> None:
    rendered = text_of(build_channel(NotifierSettings(**settings)).render(drilled(), ""))
    assert "US banner" in rendered and "app_id=com.example.game" in rendered and "app_id=com.news.daily" in rendered
    assert "91%" in rendered and ("3.10%" in rendered) and ("folded" in rendered or '"folded": 3' in rendered)


def test_webhook_carries_the_drill_down_and_the_raw_contributors() -> None:
    alert = drilled()
    body = webhook_body(alert, "k", msgspec.to_builtins(alert))
    assert body["where"] == "US banner" and body["drilldown"] == HEADLINE
    assert body["drilldown_lines"][-1] == "+3 child alerts folded"
    assert body["alert"]["contributors"][0]["dimensions"] == GAME and body["alert"]["folded"] == 3


def test_more_contributors_than_shown_say_how_many_more() -> None:
    children = tuple(
        Contributor(segment_id=f"app_id=a{i}", dimensions={"app_id": f"a{i}"}, current=1, expected=2, share=0.1)
        for i in range(8)
    )
    box = console_box(make_alert(dimensions={}, contributors=children))
    assert "all traffic CTR -60%: 10% of the drop from app_id=a0" in box
    assert "app_id=a4:" in box and "app_id=a5:" not in box and "... and 3 more" in box


# --- escaping -----------------------------------------------------------------------------
EVIL = "<!channel> *bold* _it_ & <https://evil.example|click> `x`"


def test_slack_escapes_an_injected_dimension_value() -> None:
    child = {**US_BANNER, "app_id": EVIL}
    contributor = Contributor(segment_id="h:evil:1", dimensions=child, current=0.01, expected=0.05, share=0.9)
    alert = make_alert(dimensions={**US_BANNER, "placement_id": EVIL}, contributors=(contributor,))
    message = slack_message(alert)
    header = message["blocks"][0]["text"]
    assert header["type"] == "plain_text"  # Slack parses no mention, link or formatting in plain_text
    dumped = json.dumps({**message, "blocks": message["blocks"][1:]}, ensure_ascii=False)
    assert "<!channel>" not in dumped and "<https://evil" not in dumped and "|click>" not in dumped
    escaped = "&lt;!channel&gt; *bold* _it_ &amp; &lt;https://evil.example|click&gt; ˋxˋ"
    # in every mrkdwn text the value is inside inline code: no mention, no link, no formatting
    mrkdwn_texts = [message["text"], message["attachments"][0]["fallback"]]
    for block in message["blocks"]:
        mrkdwn_texts += [f["text"] for f in block.get("fields", []) if f["type"] == "mrkdwn"]
        if block.get("text", {}).get("type") == "mrkdwn":
            mrkdwn_texts.append(block["text"]["text"])
    with_value = [t for t in mrkdwn_texts if "bold" in t]
    assert len(with_value) >= 4  # text, fallback, the Segment field, the drill-down
    for text in with_value:
        assert "*bold*" not in text.replace(escaped, "")  # every occurrence sits in a literal
    [drill] = [t for t in with_value if "Drill-down" in t]
    assert f"• `app_id={escaped}`:" in drill


def test_dimension_values_are_url_encoded_in_dashboard_links() -> None:
    links = Links(
        "https://grafana.example/d/ads?var-segment={segment}&var-app={app_id}&var-campaign={campaign_id}&{grafana_vars}"
        "&from={from_ms}"
    )
    alert = make_alert(dimensions={"country": "US", "app_id": "com.x&y=1#z"})
    [(name, url)] = links.for_alert(alert)
    assert name == "Dashboard"
    assert url.startswith(
        "https://grafana.example/d/ads?var-segment=app_id%3Dcom.x%2526y%253D1%2523z%2Ccountry%3DUS"
        "&var-app=com.x%26y%3D1%23z&var-campaign=&var-app_id=com.x%26y%3D1%23z&var-country=US&from="
    )
    legacy = Links("https://g/d?var-country={country}&var-format={ad_format}").for_alert(make_alert())
    assert legacy == [("Dashboard", "https://g/d?var-country=US&var-format=banner")]


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
    [us_note] = [a for a in channel.rendered if "country=US" in a.fingerprint]
    assert "US banner -60%" in us_note.message and "US app_id=com.x -60%" in us_note.message
    assert "US banner app_id=com.example.game -60%" in us_note.message


def test_a_group_lists_each_members_cause_and_keeps_a_lone_members_drill_down() -> None:
    lone = summary("g0:alert_type=ctr_drop", [drilled()], "d")
    assert lone.contributors and lone.folded == 3 and drilldown_headline(lone)
    both = summary("g0:alert_type=ctr_drop", [drilled(), make_alert(country="DE")], "d")
    assert "US banner -48% (91% from app_id=com.example.game, +3 folded)" in both.message
    assert "DE banner -60%" in both.message and not both.contributors and both.folded == 0


def test_an_outage_on_a_segment_of_any_dimensions_mutes_its_own_ctr_alerts_only() -> None:
    stage = InhibitStage(MemoryInhibitStore(), DEFAULT_RULES, source_ttl_s=900, now=FakeClock())
    app_a, app_b = {"app_id": "com.a"}, {"app_id": "com.b"}
    assert stage(env(make_alert(dimensions=app_a, alert_type="traffic_drop"))) == Continue()
    assert stage(env(make_alert(dimensions=app_a, alert_type="ctr_drop"))) == Suppressed("inhibited")
    assert stage(env(make_alert(dimensions=app_a, alert_type="ecpm_drop"))) == Suppressed("inhibited")
    assert stage(env(make_alert(dimensions=app_b, alert_type="ctr_drop"))) == Continue()  # another app
    assert stage(env(make_alert(dimensions={"app_id": "com.a", "country": "US"}))) == Continue()  # a child
    assert stage(env(make_alert(dimensions={}, alert_type="ctr_drop"))) == Continue()  # all traffic
