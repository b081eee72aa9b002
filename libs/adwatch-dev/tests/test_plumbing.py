"""Real round-trips through the embedded broker, Redis and chdb, and the launcher's cleanup."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from adwatch.config import CommonSettings, load_settings
from adwatch.contracts import AdEvent, DeadLetter, decode, encode
from adwatch.errors import ConfigError
from adwatch.kafka import dead_letter, ensure_topics, header_value, make_producer
from adwatch.storage import make_clickhouse, make_redis
from adwatch_dev.infra import EmbeddedInfra
from adwatch_dev.testing import consume_all, unique


def _event(i: int) -> AdEvent:
    return AdEvent(
        event_id=f"e{i}",
        event_time_ms=1_700_000_000_000 + i,
        event_type="impression",
        country="US",
        ad_format="banner",
        app_id="a",
        placement_id="p",
        campaign_id="c",
        user_hash="u",
        revenue_usd=0.001,
    )


def test_produce_consume_with_headers(kafka: str, topic_factory: Callable[..., str]) -> None:
    topic = topic_factory("events", partitions=3)
    producer = make_producer(kafka)
    for i in range(20):
        producer.produce(topic, key=b"US|banner", value=encode(_event(i)), headers=[("traceparent", b"00-abc")])
    assert producer.flush(10) == 0
    records = consume_all(kafka, topic, expected=20)
    assert len(records) == 20
    assert {r.partition() for r in records} == {records[0].partition()}, "one key stays in one partition"
    assert header_value(records[0].headers(), "traceparent") == b"00-abc"
    assert sorted(decode(r.value(), AdEvent).event_id for r in records) == sorted(f"e{i}" for i in range(20))


def test_ensure_topics_accepts_an_existing_topic_of_any_partition_count(
    kafka: str, topic_factory: Callable[..., str]
) -> None:
    """A renamed alerts topic made with 3 partitions is not waited for as if it had 1 (the
    container test's notifier gave up after 30 s on exactly that)."""
    existing = topic_factory("alerts", partitions=3)
    new = unique("dlq")
    ensure_topics(kafka, [existing, new], timeout_s=20)
    producer = make_producer(kafka)
    producer.produce(new, value=b"x")
    assert producer.flush(10) == 0
    assert len(consume_all(kafka, new, expected=1)) == 1


def test_redis_set_nx_ex(redis_url: str) -> None:
    client = make_redis(redis_url)
    key = unique("idem")
    assert client.set(key, "sent", nx=True, ex=60)
    assert not client.set(key, "again", nx=True, ex=60)
    assert 0 < client.ttl(key) <= 60


@pytest.mark.parametrize("size", [1_000, 500_000, 900_000])
def test_a_record_of_any_size_is_dead_lettered_within_the_brokers_limit(
    kafka: str, topic_factory: Callable[..., str], size: int
) -> None:
    """Text plus base64 of a 900 KB record is 2 MB, past the 1 MB message limit: the letter keeps a
    prefix, the size and the digest (and the whole bytes while they fit), and is acknowledged."""
    import base64
    import hashlib

    dlq = topic_factory("dlq")
    errors: list[str] = []
    producer = make_producer(kafka, on_delivery=lambda err, _msg: err and errors.append(str(err)))
    raw = b'{"alert_id": "' + b"x" * size + b'"}'
    dead_letter(producer, dlq, source_topic="alerts", stage="decode", reason="too big", payload=raw)
    assert producer.flush(15) == 0 and errors == []
    (record,) = consume_all(kafka, dlq, expected=1)
    letter = decode(record.value(), DeadLetter)
    assert letter.payload_size == len(raw)
    if size <= 256 * 1024:  # parked whole
        assert (letter.payload_sha256, base64.b64decode(letter.payload_b64)) == ("", raw)
    else:
        assert letter.payload_sha256 == hashlib.sha256(raw).hexdigest() and len(letter.payload) < 70_000
        assert letter.payload_b64 == "" or base64.b64decode(letter.payload_b64) == raw


def test_the_tests_redis_requires_its_password(redis_url: str) -> None:
    """As the release's Redis does: a client without the password is refused."""
    import redis

    assert make_redis(redis_url).ping()
    anonymous = redis_url.replace(redis_url.split("//", 1)[1].split("@", 1)[0] + "@", "")
    assert anonymous != redis_url
    with pytest.raises(redis.exceptions.AuthenticationError):
        make_redis(anonymous).ping()


def test_chdb_create_insert_query(tmp_path: Path) -> None:
    ch = make_clickhouse(f"chdb://{tmp_path / 'ch'}")
    ch.command("CREATE TABLE t (id String, v Float64) ENGINE = ReplacingMergeTree ORDER BY id")
    ch.insert_json_rows("t", [{"id": "a", "v": 1.0}, {"id": "b", "v": 2.0}, {"id": "a", "v": 1.0}])
    assert ch.query("SELECT id, v FROM t FINAL ORDER BY id") == [("a", 1.0), ("b", 2.0)]


def test_launcher_cleans_up_after_itself(tmp_path: Path) -> None:
    infra = EmbeddedInfra(tmp_path).start()
    pids = [p.pid for p in infra.processes.values()]
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    infra.stop()
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie that is reaped shows as gone; a live process stays
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_bad_config_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADWATCH_METRICS_PORT", "seventy")
    with pytest.raises(ConfigError, match="ADWATCH_METRICS_PORT"):
        load_settings(CommonSettings)


def test_adwatch_query_reads_a_store_another_process_owns(tmp_path: Path) -> None:
    """`make query` works while the detector (here: this test) holds the chdb directory."""
    import subprocess
    import sys

    ch = make_clickhouse(f"chdb://{tmp_path / 'ch'}")
    ch.command("CREATE TABLE ad_alerts (message String) ENGINE = MergeTree ORDER BY message")
    ch.insert_json_rows("ad_alerts", [{"message": "🚨 CTR drop! US banner: 5.00% -> 2.00% (-60.0%)"}])
    result = subprocess.run(
        [str(Path(sys.executable).parent / "adwatch"), "query", "SELECT message FROM ad_alerts"],
        env=os.environ | {"ADWATCH_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "🚨 CTR drop! US banner: 5.00% -> 2.00% (-60.0%)"


def test_adwatch_infra_stops_its_servers_on_sigterm(tmp_path: Path) -> None:
    """`adwatch infra` (a Kubernetes-style SIGTERM, not only Ctrl-C) leaves no broker or Redis behind."""
    import signal
    import subprocess
    import sys

    from adwatch_dev.infra import poll_until, port_open

    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "adwatch"), "infra"], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        exports: dict[str, str] = {}
        while len(exports) < 3:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "adwatch infra exited early"
            if line.startswith("export "):
                key, value = line.removeprefix("export ").strip().split("=", 1)
                exports[key] = value
        kafka_port = int(exports["ADWATCH_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])
        redis_port = int(exports["ADWATCH_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
        ports = [kafka_port, redis_port]
        assert all(port_open(port) for port in ports)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        poll_until(lambda: not any(port_open(port) for port in ports), "the broker and Redis to stop", timeout_s=10)
    finally:
        if proc.poll() is None:
            proc.kill()
