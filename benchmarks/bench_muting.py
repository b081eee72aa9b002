"""Notifier muting benchmark: what silences and inhibition cost per alert, as a ratio in the same run.

Two measures, each run alternately with and without the muting stages (median of ``--rounds``):

- *chain*: the stage chain alone (console channel into a buffer, the real Redis ledger, no
  broker): isolates the inhibit and silence stages' Redis round trips;
- *loop*: the whole run loop from the embedded broker (commit per alert included), with the
  default inhibition rules and ``--silences`` silences in Redis vs ``inhibit_rules: []`` and none.

Nothing is muted in either (the silences match another country, no traffic source fires), so
both sides deliver every alert and the ratio is the pure overhead.

- *grouped*: the whole run loop with the route ``group_by: [alert_type]`` (every alert goes to
  its group's buffer; the flusher sends the one group) vs the same alerts delivered one by one.

Run: ``.venv/bin/python benchmarks/bench_muting.py [--alerts 2000] [--silences 50] [--rounds 3]``.
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
from adwatch.contracts import AD_FORMATS, Alert, encode, format_message, make_alert_id, make_fingerprint, segment_key
from adwatch.kafka import ensure_topics, make_producer
from adwatch.storage import make_redis
from adwatch_dev.infra import EmbeddedInfra
from adwatch_dev.testing import unique
from adwatch_notifier import Delivered, NotifierSettings, run
from adwatch_notifier.channels import build_channel
from adwatch_notifier.inhibit import RedisInhibitStore
from adwatch_notifier.ledger import RedisLedger
from adwatch_notifier.loop import run_chain
from adwatch_notifier.outcomes import Delivered as DeliveredOutcome
from adwatch_notifier.outcomes import Grouped
from adwatch_notifier.routing import load_routes
from adwatch_notifier.silences import RedisSilenceStore, new_silence
from adwatch_notifier.stages import Envelope, Lease, build_stages

T0 = 1_767_225_600_000
COUNTRIES = ("US", "DE", "FR", "GB", "JP", "BR", "IN", "CA", "AU", "ES", "IT", "MX", "NL", "SE", "KR", "PL")


def alert(i: int) -> Alert:
    country, ad_format = COUNTRIES[i % 16], AD_FORMATS[(i // 16) % 4]
    fp = make_fingerprint("ctr_drop", segment_key(country, ad_format))
    window = T0 + (i // 64) * 60_000
    return Alert(
        alert_id=make_alert_id(fp, window, "firing"),
        fingerprint=fp,
        status="firing",
        alert_type="ctr_drop",
        severity="high",
        country=country,
        ad_format=ad_format,
        metric="ctr",
        current=0.02,
        expected=0.05,
        band_low=0.04,
        band_high=0.06,
        deviation_pct=-60.0,
        volume=10_000,
        p_value=1e-6,
        z_score=-5.0,
        window_start_ms=window,
        window_end_ms=window + 60_000,
        detected_at_ms=window + 65_000,
        message=format_message("firing", "ctr_drop", country, ad_format, "ctr", 0.02, 0.05),
    )


def settings(topic: str, prefix: str, routes: str = "") -> NotifierSettings:
    return NotifierSettings(
        channel="console",
        alerts_topic=topic,
        dlq_topic=topic + ".dlq",
        group_id=unique("bench"),
        redis_prefix=prefix,
        routes_file=routes,
        cooldown_seconds=0,
        max_alert_age_seconds=0,
        inhibit_wait_seconds=0,  # a wait, not a cost: each CTR alert would sit 3 s waiting for a traffic alert
    )


def add_silences(common: CommonSettings, prefix: str, count: int) -> None:
    store = RedisSilenceStore(make_redis(common.redis_url), prefix)
    for i in range(count):
        matchers = [f"country=Z{i % 10}", "alert_type=~ctr_.*|ecpm_.*"]
        store.add(new_silence(matchers, now_s=time.time(), duration_s=3600, created_by="bench", comment=str(i)))


def chain_rate(common: CommonSettings, n: int, silences: int, muting: bool) -> float:
    prefix = unique("bench")
    s = settings("unused", prefix)
    client = make_redis(common.redis_url)
    channel = build_channel(s, "", io.StringIO())
    extra = {}
    if muting:
        add_silences(common, prefix, silences)
        extra = {"silences": RedisSilenceStore(client, prefix), "inhibitions": RedisInhibitStore(client, prefix)}
    stages = build_stages(
        s,
        channel,
        load_routes(),
        RedisLedger(client, prefix, "console"),
        Lease("bench", 30),
        threading.Event(),
        **extra,
    )
    values = [encode(alert(i)) for i in range(n)]
    started = time.perf_counter()
    for value in values:
        outcome, _ = run_chain(stages, Envelope(value))
        assert outcome == DeliveredOutcome(), outcome
    return n / (time.perf_counter() - started)


def loop_rate(common: CommonSettings, n: int, silences: int, muting: bool, routes_off: str) -> float:
    topic, prefix = unique("bench-alerts"), unique("bench")
    ensure_topics(common.kafka_bootstrap, {topic: 1})
    producer = make_producer(common.kafka_bootstrap)
    for i in range(n):
        producer.produce(topic, encode(alert(i)), key=b"k")
    producer.flush(30)
    if muting:
        add_silences(common, prefix, silences)
    s = settings(topic, prefix, "" if muting else routes_off)
    started = time.perf_counter()
    stats = run(s, threading.Event(), n, common=common, stream=io.StringIO())
    elapsed = time.perf_counter() - started
    assert stats.outcomes[Delivered()] == n, stats.outcomes
    return n / elapsed


def grouped_rate(common: CommonSettings, n: int, routes: str) -> float:
    topic, prefix = unique("bench-alerts"), unique("bench")
    ensure_topics(common.kafka_bootstrap, {topic: 1})
    producer = make_producer(common.kafka_bootstrap)
    for i in range(n):
        producer.produce(topic, encode(alert(i)), key=b"k")
    producer.flush(30)
    started = time.perf_counter()
    stats = run(settings(topic, prefix, routes), threading.Event(), n, common=common, stream=io.StringIO())
    elapsed = time.perf_counter() - started
    assert stats.outcomes[Grouped()] == n, stats.outcomes
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--silences", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-muting-"))
    routes_off = tmp / "routes-off.yaml"
    routes_off.write_text("routes: [{channel: console}]\ninhibit_rules: []\n")
    infra = EmbeddedInfra(tmp / "infra").start()
    try:
        common = CommonSettings(kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url)
        for name, measure in (
            ("chain", lambda muting: chain_rate(common, args.alerts, args.silences, muting)),
            ("loop", lambda muting: loop_rate(common, args.alerts, args.silences, muting, str(routes_off))),
        ):
            off, on = [], []
            for _ in range(args.rounds):
                off.append(measure(False))
                on.append(measure(True))
            a, b = statistics.median(off), statistics.median(on)
            print(
                f"{name}: without muting {a:,.0f} alerts/s, with inhibition + {args.silences} silences "
                f"{b:,.0f} alerts/s, ratio {b / a:.2f} ({args.alerts} alerts x {args.rounds} rounds, median)"
            )
        grouped_routes = tmp / "routes-grouped.yaml"
        grouped_routes.write_text("routes: [{channel: console, group_by: [alert_type], group_wait: 1s}]\n")
        single, grouped = [], []
        for _ in range(args.rounds):
            single.append(loop_rate(common, args.alerts, 0, False, str(routes_off)))
            grouped.append(grouped_rate(common, args.alerts, str(grouped_routes)))
        a, b = statistics.median(single), statistics.median(grouped)
        print(
            f"grouped: one by one {a:,.0f} alerts/s, grouped by alert type {b:,.0f} alerts/s, "
            f"ratio {b / a:.2f} ({args.alerts} alerts x {args.rounds} rounds, median)"
        )
    finally:
        infra.stop()


if __name__ == "__main__":
    main()
