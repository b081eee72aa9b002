"""What was delivered survives Redis losing it or going away, and a consumer killed mid-group loses nothing.

Against the real broker and a Redis of the test's own (``redis-server`` with AOF, as the chart runs
it, on 127.0.0.1, stopped by PID), so a test may flush it or stop it without touching the others.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import TopicPartition

from adwatch.config import CommonSettings
from adwatch.contracts import Alert
from adwatch.kafka import make_consumer
from adwatch.storage import make_redis
from adwatch_dev.fakes import FakeSlack, FakeWebhook, SmtpSink
from adwatch_dev.infra import EmbeddedInfra
from adwatch_dev.testing import poll_until
from adwatch_notifier.journal import DeliveryRecord, JournaledLedger, KafkaJournal, record_key
from adwatch_notifier.ledger import RedisLedger
from adwatch_notifier.stages import Episode

pytestmark = pytest.mark.timeout(120)

T1 = 1_767_225_720_000  # a later window than the factory's default


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedInfra]:
    """A Redis of this test only, AOF in ``tmp_path`` (restart it with ``start_redis(appendonly=True)``)."""
    infra = EmbeddedInfra(tmp_path)
    infra.start_redis(appendonly=True)
    try:
        yield infra
    finally:
        infra.stop()


def _use(harness: Any, own: EmbeddedInfra) -> redis.Redis:
    harness.common = CommonSettings(kafka_bootstrap=harness.kafka, redis_url=own.redis_url)
    return make_redis(own.redis_url)


def test_journal_restores_open_episodes_once_and_never_overwrites(
    harness: Any, own_redis: EmbeddedInfra, topic_factory: Callable[..., str]
) -> None:
    client, topic = make_redis(own_redis.redis_url), topic_factory("deliveries")
    journal = KafkaJournal(harness.kafka, topic, timeout_s=10)
    ledger = JournaledLedger(RedisLedger(client, "p", "slack"), journal, "slack", ttl_s=3600)
    other = JournaledLedger(RedisLedger(client, "p", "email"), journal, "email", ttl_s=3600)
    try:
        assert ledger.ensure_restored() and not ledger.ensure_restored()  # empty journal, then marked
        ledger.put("ref", "fp-open", "C1|1.0", 3600)
        ledger.put("episode", "fp-open", Episode("critical", "#ops", 1).encode(), 3600)
        ledger.put("episode", "fp-closed", Episode("high", "#ops", 1).encode(), 3600)
        ledger.delete("episode", "fp-closed")  # tombstone
        ledger.put("episode", "fp-newer", Episode("low", "#old", 1).encode(), 3600)
        other.put("episode", "fp-open", Episode("low", "a@x", 1).encode(), 3600)
        client.flushall()
        ledger.inner.put("episode", "fp-newer", Episode("high", "#new", 2).encode(), 3600)  # written after the flush
        assert Episode.parse(ledger.get("episode", "fp-open")) == Episode("critical", "#ops", 1)  # a miss restores
        assert ledger.get("ref", "fp-open") == "C1|1.0"
        assert ledger.get("episode", "fp-closed") is None
        assert Episode.parse(ledger.get("episode", "fp-newer")) == Episode("high", "#new", 2)  # not overwritten
        assert 0 < client.ttl(ledger.inner.key("episode", "fp-open")) <= 3600
        assert client.get(other.inner.key("episode", "fp-open")) is None  # only its own channel's records
        assert not ledger.ensure_restored()  # marked again: a miss costs one EXISTS
        records = journal.read("slack")
        assert records["fp-closed"] is None and isinstance(records["fp-open"], DeliveryRecord)
        assert record_key("slack", "fp-open") == b"slack|fp-open"
    finally:
        journal.close()


def test_redis_flushed_between_firing_and_resolve_still_sends_the_resolve(
    harness: Any, own_redis: EmbeddedInfra, alert_factory: Callable[..., Alert], tmp_path: Path
) -> None:
    """FLUSHALL after the firing: Slack updates its message and email answers its thread, once each."""
    client = _use(harness, own_redis)
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes:\n"
        "  - {channel: slack, target: '#ads-critical'}\n"
        "  - {channel: email, severities: [critical], target: [oncall@example.com]}\n"
    )
    firing = alert_factory(severity="critical")
    resolved = alert_factory(status="resolved", severity="low", window_start_ms=T1)
    with FakeSlack() as slack, SmtpSink() as smtp:
        common = {"routes_file": str(routes), "cooldown_seconds": 0}
        harness.start(
            harness.settings(
                "slack", slack_bot_token="xoxb-test", slack_api_url=slack.api_url, slack_channel="#alerts", **common
            )
        )
        email = {"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_starttls": False}
        harness.start(
            harness.settings("email", smtp_from="adwatch@example.com", smtp_to="team@example.com", **email, **common)
        )
        harness.publish(firing)
        [posted] = slack.wait_for(1, timeout_s=60)
        [first_mail] = smtp.wait_for(1, timeout_s=60)
        poll_until(lambda: len(client.keys("*:episode:*")) == 2, "both episode records in Redis")
        assert client.flushall()
        harness.publish(resolved)
        requests = slack.wait_for(3, timeout_s=60)  # the update and its thread reply
        mails = smtp.wait_for(2, timeout_s=60)
        time.sleep(1.5)  # nothing more comes
        assert len(slack.requests) == 3 and len(smtp.messages) == 2
    assert posted.path.endswith("chat.postMessage") and posted.json()["channel"] == "#ads-critical"
    update = requests[1]
    assert update.path.endswith("chat.update"), update.path  # the firing's message, found by the restored ref
    assert (update.json()["channel"], update.json()["ts"]) == ("C0ADWATCH", "1700000001.000100")  # FakeSlack's first
    assert "critical" in update.body.decode().lower()  # the episode's severity, not the recovery's "low"
    reply = requests[2].json()  # the firing's evidence came back with the episode record
    assert (
        reply["thread_ts"] == "1700000001.000100" and "peak critical · firing 2.00% (expected 5.00%)" in reply["text"]
    )
    resolve_mail = mails[1]
    assert resolve_mail["To"] == first_mail["To"] == "oncall@example.com"
    assert resolve_mail["In-Reply-To"] == first_mail["Message-ID"]


def test_redis_flushed_under_a_grouped_route_the_group_still_resolves(
    harness: Any, own_redis: EmbeddedInfra, alert_factory: Callable[..., Alert], tmp_path: Path
) -> None:
    """The group buffer comes back from the journal too: no repeat of the unchanged group, then its recovery."""
    client = _use(harness, own_redis)
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {channel: webhook, group_by: [alert_type], group_wait: 1s, group_interval: 1s}\n")
    with FakeWebhook() as hook:
        harness.start(harness.settings("webhook", webhook_url=hook.url + "/hook", routes_file=str(routes)))
        harness.publish(alert_factory())
        [first] = hook.wait_for(1, timeout_s=60)
        poll_until(
            lambda: client.keys("*:groupmeta:*") and client.hget(client.keys("*:groupmeta:*")[0], "digest"), "flushed"
        )
        assert client.flushall()
        poll_until(lambda: client.keys("*:group:*"), "the group buffer restored by the flusher's tick", timeout_s=10)
        poll_until(
            lambda: any(client.hget(k, "since") for k in client.keys("*:groupmeta:*")),
            "the group's first notification restored",
            timeout_s=10,
        )
        [meta] = client.keys("*:groupmeta:*")  # the members firing at the last flush: the next change line's base
        assert client.hget(meta, "members") == alert_factory().fingerprint.encode()
        time.sleep(1.5)
        assert len(hook.requests) == 1  # unchanged since its last notification: not sent again
        harness.publish(alert_factory(status="resolved", window_start_ms=T1))
        [_, last] = hook.wait_for(2, timeout_s=60)
        time.sleep(1.5)
        assert len(hook.requests) == 2
    assert first.json()["message"].startswith("1 firing, 0 resolved")
    assert last.json()["message"].startswith("0 firing, 1 resolved") and last.json()["alert"]["status"] == "resolved"
    assert not client.keys("*:group:*")  # the resolved group is gone


def test_redis_restarted_readiness_drops_and_alerts_meanwhile_are_delivered_once(
    harness: Any, own_redis: EmbeddedInfra, alert_factory: Callable[..., Alert]
) -> None:
    """redis-server stopped by PID and started again on its port and data dir: no crash, no loss, no duplicate."""
    _use(harness, own_redis)
    checks: list[Callable[[], bool]] = []

    def ready() -> bool:
        try:
            return checks[0]()
        except Exception:
            return False

    first = alert_factory(country="US")
    meanwhile = [alert_factory(country="DE"), alert_factory(country="US", status="resolved", window_start_ms=T1)]
    with FakeWebhook() as hook:
        settings = harness.settings("webhook", webhook_url=hook.url + "/hook", cooldown_seconds=0)
        harness.start(settings, ready_when=checks.append)
        harness.publish(first)
        hook.wait_for(1, timeout_s=60)
        poll_until(ready, "ready with Redis up")
        own_redis.stop()
        poll_until(lambda: not ready(), "not ready while Redis is down", timeout_s=10)
        harness.publish(*meanwhile)
        time.sleep(2.0)  # consumed and deferred, not delivered
        assert len(hook.requests) == 1
        own_redis.start_redis(appendonly=True)
        poll_until(ready, "ready again", timeout_s=20)
        poll_until(lambda: len(hook.requests) >= 3, "the alerts published meanwhile", timeout_s=60)
        time.sleep(1.5)
        bodies = [r.json() for r in hook.requests]
        [(thread, _)] = harness.threads
        assert thread.is_alive()
    assert len(bodies) == 3, bodies
    assert sorted((b["alert"]["alert_id"], b["alert"]["status"]) for b in bodies[1:]) == sorted(
        (a.alert_id, a.status) for a in meanwhile
    )


def test_consumer_killed_while_a_group_is_buffered_loses_nothing(
    harness: Any, alert_factory: Callable[..., Alert], tmp_path: Path, redis_url: str
) -> None:
    """SIGKILL once the group's alerts are buffered and their offsets committed, before group_wait: the restart sends it.

    The buffer is in Redis before the offset is committed (the ``group`` stage writes it, then the
    loop commits), so nothing is redelivered and nothing is lost: the next process's flusher finds
    the group due.
    """
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {channel: webhook, group_by: [alert_type], group_wait: 8s, group_interval: 5s}\n")
    storm = [alert_factory(country=c) for c in ("US", "DE", "FR")]
    client = make_redis(redis_url)
    group = f"{harness.prefix}:group:webhook:g0:alert_type=ctr_drop"

    def committed(group_id: str) -> int:
        reader = make_consumer(harness.kafka, group_id)
        try:
            [position] = reader.committed([TopicPartition(harness.alerts_topic, 0)], timeout=5)
            return int(position.offset)
        finally:
            reader.close()

    with FakeWebhook() as hook:
        env = {
            **os.environ,
            **harness.env(
                "webhook",
                ADWATCH_NOTIFIER_WEBHOOK_URL=hook.url + "/hook",
                ADWATCH_NOTIFIER_ROUTES_FILE=str(routes),
                ADWATCH_NOTIFIER_COOLDOWN_SECONDS="0",
            ),
        }
        cmd = [sys.executable, "-m", "adwatch_notifier"]
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            harness.publish(*storm[:2])
            poll_until(lambda: client.hlen(group) == 2, "two alerts buffered", timeout_s=60)
            harness.publish(storm[2])
            poll_until(lambda: client.hlen(group) == 3, "the third buffered", timeout_s=30)
            poll_until(lambda: committed(env["ADWATCH_NOTIFIER_GROUP_ID"]) == 3, "the offsets committed", timeout_s=10)
        finally:
            os.kill(first.pid, signal.SIGKILL)  # group_wait (8 s) not over: nothing sent yet
            first.communicate(timeout=30)
        assert hook.requests == []
        second = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            [note] = hook.wait_for(1, timeout_s=60)
            time.sleep(1.0)
            assert len(hook.requests) == 1
        finally:
            second.send_signal(signal.SIGTERM)
            out = second.communicate(timeout=30)[0].decode()
    message = note.json()["message"]
    assert message.startswith("3 firing, 0 resolved"), (message, out[-2000:])
    for alert in storm:
        assert f" {alert.where} " in message


def test_redis_flushed_the_last_resolve_and_silences_come_back_from_the_journal(
    harness: Any, own_redis: EmbeddedInfra, alert_factory: Callable[..., Alert], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLUSHALL after a resolve and a silence (added with the CLI): a replayed firing stays ``stale`` (the incident
    is not reopened) and the silence still mutes."""
    from adwatch_notifier import Delivered, Suppressed
    from adwatch_notifier.__main__ import main

    client = _use(harness, own_redis)
    for name, value in {
        "ADWATCH_REDIS_URL": own_redis.redis_url,
        "ADWATCH_KAFKA_BOOTSTRAP": harness.kafka,
        "ADWATCH_NOTIFIER_REDIS_PREFIX": harness.prefix,
        "ADWATCH_NOTIFIER_DELIVERIES_TOPIC": harness.deliveries_topic,
    }.items():
        monkeypatch.setenv(name, value)
    firing = alert_factory(country="US")
    resolved = alert_factory(country="US", status="resolved", severity="low", window_start_ms=T1)
    out = io.StringIO()
    settings = harness.settings("console", cooldown_seconds=0, silence_refresh_seconds=0)
    harness.start(settings, stream=out)
    harness.publish(firing, resolved)
    poll_until(lambda: out.getvalue().count("┌") == 2, "the firing and its resolve")
    add = ["silence", "add", "--matcher", "country=DE", "--duration", "1h", "--author", "a", "--comment", "c"]
    assert main(add) == 0
    assert client.flushall()
    harness.publish(firing, alert_factory(country="DE"), alert_factory(country="FR"))  # a replay, muted, fresh
    poll_until(lambda: "FR banner" in out.getvalue(), "the fresh firing")
    harness.stop_all()
    assert out.getvalue().count("┌") == 3
    [stats] = harness.results
    assert stats.outcomes == {Delivered(): 3, Suppressed("stale"): 1, Suppressed("silenced"): 1}


def test_journal_restores_last_resolve_and_silences(
    harness: Any, own_redis: EmbeddedInfra, topic_factory: Callable[..., str]
) -> None:
    from adwatch_notifier.journal import JournaledSilenceStore
    from adwatch_notifier.silences import RedisSilenceStore, new_silence

    client, topic = make_redis(own_redis.redis_url), topic_factory("deliveries")
    journal = KafkaJournal(harness.kafka, topic, timeout_s=10)
    silences = RedisSilenceStore(client, "p")
    ledger = JournaledLedger(RedisLedger(client, "p", "slack"), journal, "slack", ttl_s=3600, silences=silences)
    other = JournaledLedger(RedisLedger(client, "p", "email"), journal, "email", ttl_s=3600, silences=silences)
    store = JournaledSilenceStore(silences, journal)
    try:
        ledger.put("resolved", "fp", "1767225720000", 3600)
        kept = new_silence(["country=DE"], now_s=time.time(), duration_s=3600, created_by="a", comment="c")
        ended = new_silence(["country=FR"], now_s=time.time(), duration_s=3600, created_by="a", comment="c")
        store.add(kept), store.add(ended)
        assert store.expire(ended.id, time.time())
        client.flushall()
        assert ledger.get("resolved", "fp") == "1767225720000"  # a miss restores
        assert 0 < client.ttl(ledger.inner.key("resolved", "fp")) <= 3600
        assert other.get("resolved", "fp") is None  # the other channel's journal has none
        restored = {s.id: s for s in silences.all()}
        assert restored[kept.id] == kept and restored[ended.id].ends_at <= time.time()  # expired stays expired
    finally:
        journal.close()
