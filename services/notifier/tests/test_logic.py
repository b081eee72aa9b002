"""Table tests of the pure parts: routing, dedup decisions, retry arithmetic, formats, settings."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from adwatch.config import load_settings
from adwatch.contracts import Alert
from adwatch.errors import ConfigError
from adwatch_notifier import NotifierSettings, check_channel_settings, classify_status, load_routes, parse_routes, route
from adwatch_notifier.dedup import claim_value, cooldown_decision, cooldown_value, idempotency_decision
from adwatch_notifier.delivery import classify_smtp, parse_retry_after
from adwatch_notifier.formatting import (
    FIELDS_MAX,
    HEADER_MAX,
    PD_DEDUP_MAX,
    PD_EVENT_MAX,
    PD_SUMMARY_MAX,
    Links,
    event_size,
    pagerduty_dedup_key,
    pagerduty_event,
    reserved_fingerprint,
    slack_message,
    trim_event,
)
from adwatch_notifier.grouping import summary
from adwatch_notifier.retry import RetryPolicy, backoff_delay, next_delay
from adwatch_notifier.settings import check_route_targets

DEFAULT = load_routes()


@pytest.mark.parametrize(
    ("severity", "channel", "routed"),
    [
        pytest.param("low", "slack", True, id="low-slack"),
        pytest.param("low", "pagerduty", False, id="low-no-page"),
        pytest.param("medium", "pagerduty", False, id="medium-no-page"),
        pytest.param("high", "pagerduty", True, id="high-pages"),
        pytest.param("critical", "pagerduty", True, id="critical-pages"),
        pytest.param("high", "email", False, id="high-no-mail"),
        pytest.param("critical", "email", True, id="critical-mails"),
        pytest.param("low", "console", True, id="console-all"),
    ],
)
def test_default_escalation(alert_factory: Callable[..., Alert], severity: str, channel: str, routed: bool) -> None:
    assert (route(DEFAULT, alert_factory(severity=severity), channel) is not None) is routed


def test_routes_file_filters_and_targets(alert_factory: Callable[..., Alert]) -> None:
    table = parse_routes(
        """
routes:
  - channel: slack
    segments: ["US|banner"]
    target: "#us-banner"
  - channel: slack
    alert_types: [traffic_spike]
    target: "#traffic"
  - channel: email
    countries: [DE]
    target: [a@example.com, b@example.com]
"""
    )
    assert route(table, alert_factory(), "slack").target == "#us-banner"  # type: ignore[union-attr]
    spike = alert_factory(country="DE", alert_type="traffic_spike")
    assert route(table, spike, "slack").target == "#traffic"  # type: ignore[union-attr]
    assert route(table, alert_factory(country="FR"), "slack") is None
    assert route(table, spike, "email").target == "a@example.com,b@example.com"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("routes: 3", id="not-a-list"),
        pytest.param("routes:\n  - channel: fax", id="unknown-channel"),
        pytest.param("routes:\n  - channel: slack\n    severity: [high]", id="typo-key"),
        pytest.param("routes: [", id="bad-yaml"),
    ],
)
def test_bad_routes_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_routes(text)


def test_bad_routes_file_names_the_file_and_the_key(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "routes.yaml"
    path.write_text("routes:\n  - channel: slack\n  - channel: pagerduty\n    severity: [high]\n")
    with pytest.raises(ConfigError) as err:
        load_routes(str(path))
    assert str(err.value) == f"{path}: routes[1].severity: unknown key"
    path.write_text("routes:\n  - channel: email\n    severities: [hgh]\n")
    with pytest.raises(ConfigError, match=r"routes\[0\]\.severities\[0\]: Input should be 'low'"):
        load_routes(str(path))


@pytest.mark.parametrize(
    ("text", "filters"),
    [
        pytest.param("routes: []", None, id="empty-table"),
        pytest.param(
            "routes:\n  - channel: email\n    severities: critical", {"severities": {"critical"}}, id="scalar"
        ),
        pytest.param(
            "routes:\n  - channel: slack\n    segments: ['US|banner']\n    statuses: [resolved]",
            {"segments": {"ad_format=banner,country=US"}, "statuses": {"resolved"}},  # the v1 key read as its id
            id="segments-statuses",
        ),
        pytest.param(
            "routes:\n  - channel: slack\n    segments: ['country=US,ad_format=banner', 'app_id=com.x', '*']",
            {"segments": {"ad_format=banner,country=US", "app_id=com.x", "*"}},
            id="segment-ids",
        ),
    ],
)
def test_routes_file_shorthands(text: str, filters: dict[str, set[str]] | None) -> None:
    table = parse_routes(text)
    if filters is None:
        assert table.routes == ()
    else:
        [only] = table.routes
        assert {name: set(getattr(only, name)) for name in filters} == filters


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("routes:\n  - channel: slack\n    segments: [US]", id="segment-without-format"),
        pytest.param("routes:\n  - channel: slack\n    target: '" + "x" * 3000 + "'", id="target-too-long"),
        pytest.param("routes:\n" + "  - channel: slack\n" * 1001, id="too-many-routes"),
        pytest.param("route:\n  - channel: slack", id="top-level-typo"),
    ],
)
def test_routes_file_bounds(text: str) -> None:
    with pytest.raises(ConfigError, match="<routes>: "):
        parse_routes(text)


NOW = 1_000_000


@pytest.mark.parametrize(
    ("value", "in_doubt_ok", "action", "reason"),
    [
        pytest.param(None, False, "send", "new", id="new"),
        pytest.param("sent", False, "skip", "duplicate", id="already-sent"),
        pytest.param(claim_value("claimed", "me", NOW + 5), False, "send", "own", id="own-claim"),
        pytest.param(claim_value("claimed", "other", NOW + 5), False, "wait", "held", id="live-replica"),
        pytest.param(claim_value("claimed", "other", NOW - 5), False, "send", "takeover", id="dead-before-send"),
        pytest.param(claim_value("inflight", "other", NOW - 5), False, "park", "in_doubt", id="dead-while-sending"),
        pytest.param(claim_value("inflight", "other", NOW - 5), True, "send", "resend_in_doubt", id="provider-dedups"),
        pytest.param("garbage", False, "send", "takeover", id="garbage"),
    ],
)
def test_idempotency_decision(value: str | None, in_doubt_ok: bool, action: str, reason: str) -> None:
    decision = idempotency_decision(value, "me", NOW, in_doubt_ok)
    assert (decision.action, decision.reason) == (action, reason)


@pytest.mark.parametrize(
    ("status", "value", "action", "reason"),
    [
        pytest.param("firing", None, "send", "new", id="first"),
        pytest.param("firing", cooldown_value("other", NOW + 1), "skip", "cooldown", id="within-window"),
        pytest.param("firing", cooldown_value("other", NOW), "send", "expired", id="window-over"),
        pytest.param("firing", cooldown_value("a1", NOW + 1), "send", "own", id="own-claim"),
        pytest.param("resolved", cooldown_value("other", NOW + 1), "send", "resolved", id="resolved-bypasses"),
    ],
)
def test_cooldown_decision(status: str, value: str | None, action: str, reason: str) -> None:
    decision = cooldown_decision(status, value, "a1", NOW)
    assert (decision.action, decision.reason) == (action, reason)


@pytest.mark.parametrize(
    ("status", "retry", "reason"),
    [
        (202, False, "other"),
        (400, False, "clientError"),
        (404, False, "clientError"),
        (429, True, "rateLimited"),
        (500, True, "serverError"),
        (503, True, "serverError"),
    ],
)
def test_classify_status(status: int, retry: bool, reason: str) -> None:
    assert classify_status(status) == (retry, reason)


def test_classify_smtp_and_retry_after() -> None:
    assert classify_smtp(451) == (True, "serverError")
    assert classify_smtp(554) == (False, "clientError")
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 30.0, id="http-date"),
        pytest.param("Wed, 21 Oct 2015 07:27:00 GMT", 0.0, id="http-date-past"),
        pytest.param("Wed, 21 Oct 2015 07:28:00", None, id="http-date-without-zone"),
        pytest.param("-5", 0.0, id="negative"),
        pytest.param("99999999", 3600.0, id="capped"),
    ],
)
def test_retry_after_both_forms(header: str, seconds: float | None) -> None:
    now = 1445412450.0  # 2015-10-21 07:27:30 UTC
    assert parse_retry_after(header, now=now) == seconds


def test_backoff_grows_with_jitter_and_stops_at_deadline() -> None:
    policy = RetryPolicy(initial_s=1, max_s=8, deadline_s=20)
    assert [backoff_delay(policy, n, 0.999999) for n in (1, 2, 3, 4, 5)] == pytest.approx([1, 2, 4, 8, 8], rel=1e-4)
    assert backoff_delay(policy, 3, 0.0) == 2  # jitter keeps at least half
    assert next_delay(policy, 1, 0, 0.5, retry_after=5) == 5  # Retry-After wins when longer
    assert next_delay(policy, 4, 15, 0.999) is None  # would pass the deadline


def test_slack_blocks_respect_limits(alert_factory: Callable[..., Alert]) -> None:
    alert = alert_factory()
    message = slack_message(alert, "http://grafana.local/d/adwatch")
    header = message["blocks"][0]
    assert header["type"] == "header"
    assert header["text"]["text"] == "🚨 CTR drop! US banner: 5.00% -> 2.00% (-60.0%)"
    fields = message["blocks"][1]["fields"]
    assert len(fields) <= FIELDS_MAX
    text = " ".join(f["text"] for f in fields)
    for expected in ("US", "banner", "ctr", "high", "2.00%", "5.00%", "4.00% – 6.00%", "-60.0%", alert.alert_id):
        assert expected in text
    assert "grafana.local" in message["blocks"][-1]["text"]["text"]
    assert len(alert_factory(country="US").message) < HEADER_MAX


def test_pagerduty_event(alert_factory: Callable[..., Alert]) -> None:
    for severity, expected in [("critical", "critical"), ("high", "error"), ("medium", "warning"), ("low", "info")]:
        event = pagerduty_event(alert_factory(severity=severity), "rk")
        assert event["payload"]["severity"] == expected
    event = pagerduty_event(alert_factory(), "rk")
    assert event["dedup_key"] == "ctr_drop:ad_format=banner,country=US"
    assert len(event["payload"]["summary"]) <= PD_SUMMARY_MAX
    assert event["payload"]["custom_details"]["expected"] == "5.00%"
    assert pagerduty_event(alert_factory(status="resolved"), "rk") == {
        "routing_key": "rk",
        "event_action": "resolve",
        "dedup_key": "ctr_drop:ad_format=banner,country=US",
    }


@pytest.mark.parametrize(
    ("channel", "variable"),
    [
        ("slack", "ADWATCH_NOTIFIER_SLACK_WEBHOOK_URL"),
        ("pagerduty", "ADWATCH_NOTIFIER_PAGERDUTY_ROUTING_KEY"),
        ("email", "ADWATCH_NOTIFIER_SMTP_HOST"),
        ("webhook", "ADWATCH_NOTIFIER_WEBHOOK_URL"),
    ],
)
def test_missing_channel_settings_name_the_variable(
    channel: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SLACK_WEBHOOK_URL", "SLACK_BOT_TOKEN", "PAGERDUTY_ROUTING_KEY", "SMTP_HOST", "WEBHOOK_URL"):
        monkeypatch.delenv(f"ADWATCH_NOTIFIER_{name}", raising=False)
    with pytest.raises(ConfigError, match=variable):
        check_channel_settings(NotifierSettings(channel=channel))  # type: ignore[arg-type]


def test_secret_from_mounted_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "key").write_text("R0UTINGKEY\n")
    monkeypatch.setenv("ADWATCH_NOTIFIER_PAGERDUTY_ROUTING_KEY_FILE", str(tmp_path / "key"))
    settings = NotifierSettings(channel="pagerduty")
    assert settings.pagerduty_routing_key is not None
    assert settings.pagerduty_routing_key.get_secret_value() == "R0UTINGKEY"
    assert "R0UTINGKEY" not in repr(settings)
    assert settings.consumer_group == "notifier-pagerduty"


def test_secrets_dir(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Files named like the variables in ADWATCH_SECRETS_DIR (a mounted Kubernetes/Docker secret)."""
    (tmp_path / "adwatch_notifier_webhook_url").write_text("https://hooks.example/T0KEN\n")
    (tmp_path / "adwatch_notifier_smtp_password").write_text("pw-from-file")
    monkeypatch.setenv("ADWATCH_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("ADWATCH_NOTIFIER_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("ADWATCH_NOTIFIER_SMTP_PASSWORD", raising=False)
    settings = load_settings(NotifierSettings, channel="webhook")
    assert settings.webhook_url is not None and settings.webhook_url.get_secret_value() == "https://hooks.example/T0KEN"
    assert settings.smtp_password is not None and settings.smtp_password.get_secret_value() == "pw-from-file"
    assert "T0KEN" not in repr(settings) and "pw-from-file" not in str(settings.model_dump())
    monkeypatch.setenv("ADWATCH_NOTIFIER_SMTP_PASSWORD", "pw-from-env")  # the environment wins over files
    assert load_settings(NotifierSettings).smtp_password.get_secret_value() == "pw-from-env"  # type: ignore[union-attr]
    monkeypatch.setenv("ADWATCH_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="ADWATCH_SECRETS_DIR"):
        load_settings(NotifierSettings)


# --- issue 15: escaping, trimming, links ------------------------------------------------------
def test_slack_mrkdwn_cannot_be_injected(alert_factory: Callable[..., Alert]) -> None:
    import msgspec

    evil = msgspec.structs.replace(
        alert_factory(), alert_id="<!channel>", rule_set="<https://evil.example|click here> & <@U123>"
    )
    text = json.dumps(slack_message(evil))
    assert "<!channel>" not in text and "<https://evil" not in text and "<@U123>" not in text
    assert "&lt;!channel&gt;" in text and "&amp;" in text


def test_pagerduty_event_trimmed_under_512_kb_with_client_and_links(alert_factory: Callable[..., Alert]) -> None:
    links = Links(
        "https://grafana.example/d/ads?var-country={country}&from={from_ms}", "https://runbooks.example/{alert_type}"
    )
    event = pagerduty_event(alert_factory(), "RK", links=links)
    event["payload"]["custom_details"]["big"] = "x" * 600_000
    trimmed = trim_event(event)
    assert event_size(trimmed) <= PD_EVENT_MAX and trimmed["payload"]["custom_details"]["alert_id"]
    assert trimmed["client"] == "adwatch" and trimmed["client_url"].startswith(
        "https://grafana.example/d/ads?var-country=US"
    )
    assert [link["text"] for link in trimmed["links"]] == ["Dashboard", "Runbook"]
    assert trimmed["links"][1]["href"] == "https://runbooks.example/ctr_drop"


@pytest.mark.parametrize(
    ("settings", "targets", "names"),
    [
        pytest.param(
            {"channel": "slack", "slack_bot_token": "xoxb-1"}, [""], "SLACK_CHANNEL", id="bot-without-channel"
        ),
        pytest.param(
            {"channel": "pagerduty", "pagerduty_routing_key": "RK"}, ["", "payments"], "payments", id="unknown-key-name"
        ),
    ],
)
def test_start_up_refuses_routes_the_settings_cannot_reach(
    settings: dict[str, str], targets: list[str], names: str
) -> None:
    with pytest.raises(ConfigError, match=names):
        check_route_targets(NotifierSettings(**settings), targets)  # type: ignore[arg-type]
    check_route_targets(NotifierSettings(**settings), ["#ads"] if settings["channel"] == "slack" else [""])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fingerprint", "key"),
    [
        pytest.param("ctr_drop:US|banner", "ctr_drop:US|banner", id="alert"),
        pytest.param("g0:alert_type=ctr_drop", "group:g0:alert_type=ctr_drop", id="group"),
        pytest.param("g12:country=US,ad_format=banner", "group:g12:country=US,ad_format=banner", id="group-two-labels"),
    ],
)
def test_pagerduty_dedup_key_puts_groups_in_their_own_namespace(fingerprint: str, key: str) -> None:
    """A group's incident key is ``group:<key>``; no alert's fingerprint may take that shape (decode parks it)."""
    assert pagerduty_dedup_key(fingerprint) == key
    assert reserved_fingerprint(fingerprint) == fingerprint.startswith("g")
    assert reserved_fingerprint("group:ctr_drop:US|banner")


def test_long_group_dedup_keys_stay_distinct_and_within_pagerduty_limit() -> None:
    head = "g0:rule_set=" + "x" * 300
    one, two = pagerduty_dedup_key(head + "a"), pagerduty_dedup_key(head + "b")
    assert len(one) == len(two) == PD_DEDUP_MAX and one != two and one.startswith("group:g0:")


def test_grouped_pagerduty_event_never_shares_an_alerts_dedup_key(alert_factory: Callable[..., Alert]) -> None:
    """The group notification for ``alert_type=ctr_drop`` and an alert of that type on any segment: two incidents."""
    alert = alert_factory()
    group = summary("g0:alert_type=ctr_drop", [alert], "d")
    assert pagerduty_event(group, "rk")["dedup_key"] == "group:g0:alert_type=ctr_drop"
    assert pagerduty_event(alert, "rk")["dedup_key"] == alert.fingerprint
    assert not pagerduty_event(alert, "rk")["dedup_key"].startswith("group:")
