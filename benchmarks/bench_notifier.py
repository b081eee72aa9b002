"""Notifier benchmark: alerts/s through the console and webhook channels, and the delivery
latency (publish -> fake provider received) p50/p99 through the Slack channel.

Run: ``.venv/bin/python benchmarks/bench_notifier.py [--alerts 2000]``.
Uses the embedded broker and Redis on 127.0.0.1; stops them at the end.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import threading
import time
from pathlib import Path

from adwatch.config import CommonSettings
from adwatch.contracts import Alert, encode, format_message, make_alert_id, make_fingerprint, segment_key
from adwatch.kafka import ensure_topics, make_producer
from adwatch_dev.fakes import FakeSlack, FakeWebhook
from adwatch_dev.infra import EmbeddedInfra
from adwatch_dev.testing import PER_ALERT_ROUTES, unique
from adwatch_notifier import Delivered, NotifierSettings, run

T0 = 1_767_225_600_000


def alert(i: int) -> Alert:
    fp = make_fingerprint("ctr_drop", segment_key("US", "banner"))
    return Alert(
        alert_id=make_alert_id(fp, T0 + i * 60_000, "firing"),
        fingerprint=fp,
        status="firing",
        alert_type="ctr_drop",
        severity="high",
        country="US",
        ad_format="banner",
        metric="ctr",
        current=0.02,
        expected=0.05,
        band_low=0.04,
        band_high=0.06,
        deviation_pct=-60.0,
        volume=10_000,
        p_value=1e-6,
        z_score=-5.0,
        window_start_ms=T0 + i * 60_000,
        window_end_ms=T0 + (i + 1) * 60_000,
        detected_at_ms=T0 + (i + 1) * 60_000,
        message=format_message("firing", "ctr_drop", "US", "banner", "ctr", 0.02, 0.05),
    )


ROUTES = Path(tempfile.mkdtemp(prefix="bench-notifier-routes-")) / "per-alert.yaml"
ROUTES.write_text(PER_ALERT_ROUTES)  # the built-in routes group Slack: one message per alert is measured here


def settings(channel: str, topic: str, **extra: object) -> NotifierSettings:
    return NotifierSettings(
        channel=channel,  # type: ignore[arg-type]
        alerts_topic=topic,
        dlq_topic=topic + ".dlq",
        group_id=unique("bench"),
        redis_prefix=unique("bench"),
        cooldown_seconds=0,
        slack_min_interval_ms=0,
        routes_file=str(ROUTES),
        inhibit_wait_seconds=0,  # the CTR alerts would wait 3 s each for a traffic alert
        max_alert_age_seconds=0,  # the alerts are dated 2026-01-01
        **extra,  # type: ignore[arg-type]
    )


def throughput(common: CommonSettings, channel: str, n: int, **extra: object) -> float:
    topic = unique("bench-alerts")
    ensure_topics(common.kafka_bootstrap, {topic: 1})
    producer = make_producer(common.kafka_bootstrap)
    for i in range(n):
        producer.produce(topic, encode(alert(i)), key=b"k")
    producer.flush(30)
    started = time.perf_counter()
    stats = run(settings(channel, topic, **extra), threading.Event(), n, common=common, stream=io.StringIO())
    elapsed = time.perf_counter() - started
    assert stats.outcomes[Delivered()] == n, stats.outcomes
    return n / elapsed


def slack_latency(common: CommonSettings, n: int, rate: float) -> tuple[float, float]:
    topic = unique("bench-alerts")
    ensure_topics(common.kafka_bootstrap, {topic: 1})
    producer = make_producer(common.kafka_bootstrap, **{"linger.ms": 0})
    stop = threading.Event()
    with FakeSlack() as slack:
        worker = threading.Thread(
            target=run,
            args=(settings("slack", topic, slack_webhook_url=slack.webhook_url), stop),
            kwargs={"common": common},
        )
        worker.start()
        producer.produce(topic, encode(alert(10**6)), key=b"k")  # warm-up: group join
        producer.flush(10)
        slack.wait_for(1, timeout_s=60)
        sent_at: list[float] = []
        for i in range(n):
            sent_at.append(time.time())
            producer.produce(topic, encode(alert(i)), key=b"k")
            producer.poll(0)
            time.sleep(1 / rate)
        producer.flush(10)
        got = slack.wait_for(n + 1, timeout_s=120)
        stop.set()
        worker.join(30)
    lat = sorted((r.at - s) * 1000 for r, s in zip(got[1:], sent_at, strict=True))
    return statistics.median(lat), lat[int(0.99 * (len(lat) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--latency-alerts", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="alerts/s for the latency run")
    args = parser.parse_args()
    infra = EmbeddedInfra(Path(tempfile.mkdtemp(prefix="bench-notifier-"))).start()
    try:
        common = CommonSettings(kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url)
        print(f"console: {throughput(common, 'console', args.alerts):,.0f} alerts/s ({args.alerts} alerts)")
        with FakeWebhook() as hook:
            rate = throughput(common, "webhook", args.alerts, webhook_url=hook.url + "/hook")
        print(f"webhook: {rate:,.0f} alerts/s ({args.alerts} alerts, incl. group join)")
        p50, p99 = slack_latency(common, args.latency_alerts, args.rate)
        print(
            f"slack webhook latency publish->received: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({args.latency_alerts} at {args.rate}/s)"
        )
    finally:
        infra.stop()


if __name__ == "__main__":
    main()
