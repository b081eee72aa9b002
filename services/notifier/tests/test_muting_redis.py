"""Silences, maintenance windows and inhibition against the real broker and Redis, through the CLI and the run loop."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adwatch.contracts import Alert
from adwatch.storage import make_redis
from adwatch_dev.fakes import FakePagerDuty, FakeWebhook
from adwatch_dev.testing import poll_until, unique
from adwatch_notifier import Delivered, Suppressed
from adwatch_notifier.__main__ import main
from adwatch_notifier.grouping import RedisGroupStore
from adwatch_notifier.inhibit import RedisInhibitStore
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.silences import RedisSilenceStore, new_silence


def test_redis_stores(redis_url: str) -> None:
    client, prefix, now = make_redis(redis_url), unique("adwatch:notifier"), time.time()
    silences = RedisSilenceStore(client, prefix)
    s = new_silence(["country=US"], now_s=now, duration_s=60, created_by="a", comment="c")
    silences.add(s)
    assert RedisSilenceStore(client, prefix).all() == [s]  # another replica sees it
    assert silences.expire(s.id, now + 1) and not silences.expire(s.id, now + 2)
    assert silences.all()[0].ends_at == now + 1
    assert silences.collect(now + 2 + 25 * 3600) == 1 and silences.all() == []
    inhibit = RedisInhibitStore(client, prefix)
    now_ms = int(now * 1000)
    inhibit.mark("r1", "US|banner", "traffic_spike:US|banner", now_ms + 60_000)
    inhibit.mark("r1", "US|banner", "traffic_spike:US|banner", now_ms + 1_000)  # never moves the end earlier
    us, de = ("r1", "US|banner"), ("r1", "DE|banner")
    assert inhibit.firing([us, de], now_ms + 30_000) == [["traffic_spike:US|banner"], []]
    assert inhibit.firing([us], now_ms + 60_000) == [[]]
    inhibit.clear("r1", "US|banner", "traffic_spike:US|banner")
    assert inhibit.firing([us], now_ms) == [[]]


def test_redis_group_store_remembers_members_and_first_flush(redis_url: str) -> None:
    store = RedisGroupStore(make_redis(redis_url), unique("adwatch:notifier"), "slack")
    store.add("g0:alert_type=ctr_drop", "#ads", "ctr_drop:US|banner", b"us", 1_000)
    store.add("g0:alert_type=ctr_drop", "#ads", "ctr_drop:DE|banner", b"de", 1_000)
    members = ["ctr_drop:DE|banner", "ctr_drop:US|banner"]
    store.flushed("g0:alert_type=ctr_drop", at_ms=5, digest="d1", ref="C1|1.0", gone={}, due_ms=10, members=members)
    store.flushed("g0:alert_type=ctr_drop", at_ms=9, digest="d2", ref="C1|1.0", gone={}, due_ms=20, members=members[:1])
    state = store.load("g0:alert_type=ctr_drop")
    assert (state.members, state.since_ms, state.last_flush_ms, state.ref) == (("ctr_drop:DE|banner",), 5, 9, "C1|1.0")


def _hhmm(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M")


def test_silence_cli_and_maintenance_window_on_broker_and_redis(
    harness: Any, alert_factory: Callable[..., Alert], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ADWATCH_REDIS_URL", harness.common.redis_url.get_secret_value())
    monkeypatch.setenv("ADWATCH_NOTIFIER_REDIS_PREFIX", harness.prefix)
    monkeypatch.setenv("ADWATCH_KAFKA_BOOTSTRAP", harness.kafka)  # the CLI journals the silence
    monkeypatch.setenv("ADWATCH_NOTIFIER_DELIVERIES_TOPIC", harness.deliveries_topic)
    add = ["silence", "add", "--matcher", "country=DE", "--matcher", "alert_type=~ctr_.*", "--duration", "1h"]
    assert main([*add, "--author", "oncall", "--comment", "deploy in DE"]) == 0
    [silence] = RedisSilenceStore(make_redis(harness.common.redis_url), harness.prefix).all()
    now = time.time()
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes: [{channel: console}]\n"
        "maintenance_windows:\n"
        f'  - {{name: jp-db, start: "{_hhmm(now - 3600)}", end: "{_hhmm(now + 3600)}", matchers: [country=JP]}}\n'
    )
    registry = CollectorRegistry()
    settings = harness.settings("console", routes_file=str(routes), silence_refresh_seconds=0, cooldown_seconds=0)
    harness.publish(
        alert_factory(country="DE"),
        alert_factory(country="DE", alert_type="ecpm_drop"),  # not matched by the silence
        alert_factory(country="JP"),
        alert_factory(country="FR"),
    )
    out = io.StringIO()
    stats = harness.run_once(settings, 4, stream=out, metrics=NotifierMetrics(registry))
    assert stats.outcomes == {Delivered(): 2, Suppressed("silenced"): 1, Suppressed("maintenance"): 1}
    for reason in ("silenced", "maintenance"):
        value = registry.get_sample_value("adwatch_notifier_suppressed_total", {"channel": "console", "reason": reason})
        assert value == 1
    listing = io.StringIO()
    monkeypatch.setattr("sys.stdout", listing)
    assert main(["silence", "list"]) == 0
    assert f"{silence.id}\tactive\tcountry=DE,alert_type=~ctr_.*\t" in listing.getvalue()
    assert main(["silence", "expire", silence.id]) == 0
    harness.publish(alert_factory(country="DE", window_start_ms=1_767_225_660_000))
    again = harness.run_once(settings, 1, stream=out, metrics=NotifierMetrics(CollectorRegistry()))
    assert again.outcomes == {Delivered(): 1}


def test_silence_added_while_buffered_mutes_the_group_member_on_broker_and_redis(
    harness: Any, alert_factory: Callable[..., Alert], tmp_path: Path
) -> None:
    """Buffered in its group before the silence existed: the group's notification leaves it out."""
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {channel: console, group_by: [alert_type], group_wait: 3s}\n")
    client = make_redis(harness.common.redis_url)
    groups = RedisGroupStore(client, harness.prefix, "console")
    us, de = alert_factory(country="US"), alert_factory(country="DE")
    harness.publish(us, de)
    out, registry = io.StringIO(), CollectorRegistry()
    settings = harness.settings("console", routes_file=str(routes), silence_refresh_seconds=0)
    harness.start(settings, stream=out, metrics=NotifierMetrics(registry))
    key = "g0:alert_type=ctr_drop"
    poll_until(lambda: groups.has(key, us.fingerprint) and groups.has(key, de.fingerprint), "both buffered", 20)
    RedisSilenceStore(client, harness.prefix).add(
        new_silence(["country=US"], now_s=time.time(), duration_s=3600, created_by="oncall", comment="c")
    )
    poll_until(lambda: "DE banner" in out.getvalue(), "the group notified", 20)
    harness.stop_all()
    assert "US|banner" not in out.getvalue() and "US banner" not in out.getvalue()
    labels = {"channel": "console", "reason": "silenced"}
    assert registry.get_sample_value("adwatch_notifier_suppressed_total", labels) == 1


def test_inhibition_on_broker_and_redis(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    """Default rules: traffic on a segment mutes its CTR/eCPM alerts, a critical alert mutes lower ones."""
    registry = CollectorRegistry()
    harness.publish(
        alert_factory(country="US", alert_type="traffic_spike"),
        alert_factory(country="US", alert_type="ctr_drop"),
        alert_factory(country="US", alert_type="ecpm_drop"),
        alert_factory(country="US", ad_format="native", alert_type="ctr_drop"),  # other segment
        alert_factory(country="BR", alert_type="ctr_drop", severity="critical"),
        alert_factory(country="BR", alert_type="ctr_drop", severity="medium", window_start_ms=1_767_225_660_000),
    )
    console = harness.settings("console", cooldown_seconds=0)
    stats = harness.run_once(console, 6, stream=io.StringIO(), metrics=NotifierMetrics(registry))
    assert stats.outcomes == {Delivered(): 3, Suppressed("inhibited"): 3}
    assert (
        registry.get_sample_value("adwatch_notifier_suppressed_total", {"channel": "console", "reason": "inhibited"})
        == 3
    )
    # the source resolves: the next window's CTR alert is sent
    harness.publish(
        alert_factory(country="US", alert_type="traffic_spike", status="resolved", severity="low"),
        alert_factory(country="US", alert_type="ctr_drop", window_start_ms=1_767_225_720_000),
    )
    later = harness.run_once(console, 2, stream=io.StringIO(), metrics=NotifierMetrics(CollectorRegistry()))
    assert later.outcomes == {Delivered(): 2}


def test_inhibition_in_detector_order_on_three_partitions(
    harness: Any, alert_factory: Callable[..., Alert], topic_factory: Callable[..., str]
) -> None:
    """The detector writes a window's CTR/eCPM alerts before its traffic alert, on other partitions: still muted."""
    harness.alerts_topic = topic_factory("alerts", 3)
    ctr = alert_factory(country="US", alert_type="ctr_drop")
    ecpm = alert_factory(country="US", alert_type="ecpm_drop")
    traffic = alert_factory(country="US", alert_type="traffic_drop", severity="critical")
    other = alert_factory(country="DE", alert_type="ctr_drop")  # no outage on DE: sent after the wait
    harness.publish(ctr, ecpm, other)
    harness.publish(traffic)
    console = harness.settings("console", cooldown_seconds=0, inhibit_wait_seconds=2)
    out = io.StringIO()
    stats = harness.run_once(console, 4, stream=out, metrics=NotifierMetrics(CollectorRegistry()))
    assert stats.outcomes == {Delivered(): 2, Suppressed("inhibited"): 2}
    sent = out.getvalue()
    assert f"id {traffic.alert_id}" in sent and f"id {other.alert_id}" in sent
    assert f"id {ctr.alert_id}" not in sent and f"id {ecpm.alert_id}" not in sent


def test_storm_of_200_alerts_grouped_on_broker_and_redis(
    harness: Any, alert_factory: Callable[..., Alert], tmp_path: Path
) -> None:
    """200 segment alerts at once: one webhook notification and one PagerDuty incident per alert type, none lost."""
    routes = tmp_path / "routes.yaml"
    timers = "group_by: [alert_type], group_wait: 2s, group_interval: 3s"
    routes.write_text(f"routes:\n  - {{channel: webhook, {timers}}}\n  - {{channel: pagerduty, {timers}}}\n")
    countries = [a + b for a in "ABCDEFGHIJ" for b in "KLMNO"]
    formats = ("banner", "interstitial", "rewarded_video", "native")
    storm = [
        alert_factory(country=c, ad_format=f, alert_type=t, severity="critical" if t == "ecpm_drop" else "high")
        for t, n in (("ctr_drop", 30), ("ecpm_drop", 20))
        for c in countries[:n]
        for f in formats
    ]
    assert len(storm) == 200
    with FakeWebhook() as hook, FakePagerDuty() as pd:
        started = time.monotonic()
        harness.publish(*storm)
        common = {"routes_file": str(routes), "cooldown_seconds": 0}
        harness.start(harness.settings("webhook", webhook_url=hook.url + "/hook", **common))
        harness.start(harness.settings("pagerduty", pagerduty_routing_key="RK-1", pagerduty_url=pd.url, **common))
        poll_until(lambda: _listed(hook, storm), "every alert listed in a webhook group notification", timeout_s=60)
        poll_until(lambda: len({r.json()["dedup_key"] for r in pd.requests}) == 2, "two PagerDuty incidents", 60)
        elapsed = time.monotonic() - started
        time.sleep(1.0)
        assert len(hook.requests) <= 6 and len(pd.requests) <= 6, (len(hook.requests), len(pd.requests))
        assert {r.json()["dedup_key"] for r in pd.requests} == {
            "group:g1:alert_type=ctr_drop",
            "group:g1:alert_type=ecpm_drop",
        }  # route 1, in the group namespace
        print(f"storm of 200 -> {len(hook.requests)} webhook, {len(pd.requests)} PagerDuty requests in {elapsed:.1f}s")


def test_poisoned_group_buffer_is_dead_lettered_and_other_groups_flow(
    harness: Any, alert_factory: Callable[..., Alert], tmp_path: Path
) -> None:
    """An unreadable member in one group's Redis buffer: that group is dead-lettered, the channel's others are sent."""
    import base64

    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {channel: webhook, group_by: [alert_type], group_wait: 1s, group_interval: 2s}\n")
    store = RedisGroupStore(make_redis(harness.common.redis_url), harness.prefix, "webhook")
    store.add("g0:alert_type=ctr_drop", "", "ctr_drop:US|banner", b"\xff not an alert", 0)
    ecpm = alert_factory(alert_type="ecpm_drop", country="DE")
    harness.publish(ecpm)
    registry = CollectorRegistry()
    with FakeWebhook() as hook:
        settings = harness.settings("webhook", webhook_url=hook.url + "/hook", routes_file=str(routes))
        harness.start(settings, metrics=NotifierMetrics(registry))
        poll_until(lambda: any("DE banner" in r.json()["message"] for r in hook.requests), "the healthy group sent", 30)
        [letter] = harness.dead_letters(1)
        harness.stop_all()
    assert (letter.stage, letter.reason_code, letter.channel) == ("group", "internal", "webhook")
    assert base64.b64decode(letter.payload_b64) == b"\xff not an alert"
    assert store.load("g0:alert_type=ctr_drop").alerts == {}  # dropped, no longer due
    labels = {"channel": "webhook", "reason": "internal"}
    assert registry.get_sample_value("adwatch_notifier_dead_letters_total", labels) == 1


def _listed(hook: Any, storm: list[Alert]) -> bool:
    text = " ".join(r.json()["message"] for r in hook.requests)
    return all(f" {a.where} " in text for a in storm)
