"""Notifier per provider channel: grouped vs one by one, a storm's last notification, one failing alert's cost.

Each figure beside a reference measured in the same run (machines differ 2-3x: read the ratios):

- *rate*: alerts/s through the stage chain (and the group flusher) with the real Redis ledger and
  group store, no broker, per provider fake (Slack bot token, PagerDuty, email over SMTP), route
  ``group_by: [alert_type]`` vs one by one; reference: the console channel one by one.
  Firings over 64 segments, cooldown and rate limits off (every alert is sent one by one).
- *storm*: 200 segment alerts of one window (2 alert types) published at once, the whole run loop
  from the broker (consumer-group join included): publish -> last notification, grouped
  (``group_wait: 2s``, default rate limits) vs one by one (rate limits off: with Slack's one message
  per second per channel it could not end before 199 s).
- *failing*: Slack (incoming webhook, one message per alert) answers 500 for one alert for the whole
  run (it is retried in the background: 1 s, 2 s, 4 s... backoff); publish -> received p50/p99 of
  the ``--others`` other alerts published after it at ``--rate``/s, vs the same run without it
  (``INHIBIT_WAIT_SECONDS=0``: these CTR alerts would otherwise all wait 3 s for a traffic alert).
- *hanging*: the same, but Slack accepts the one alert's request and answers it only ``--hang``
  seconds later (under ``REQUEST_TIMEOUT_SECONDS``, so no timeout fires): the send waits on a
  delivery worker; with ``DELIVERY_WORKERS=1`` (one send at a time, as when sends ran on the poll
  thread) the others wait behind it, which is the comparison printed beside it.

Run: ``.venv/bin/python benchmarks/bench_channels.py [--alerts 300] [--rounds 3] [--others 100]``
(``--skip rate,storm`` or ``--skip failing``: each part under 2 min).
Uses the embedded broker and Redis on 127.0.0.1; stops them at the end.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adwatch.config import CommonSettings
from adwatch.contracts import AD_FORMATS, Alert, encode, format_message, make_alert_id, make_fingerprint, segment_key
from adwatch.kafka import ensure_topics, make_producer
from adwatch.storage import make_redis
from adwatch_dev.fakes import FakePagerDuty, FakeSlack, RecordedRequest, SmtpSink
from adwatch_dev.infra import EmbeddedInfra
from adwatch_dev.testing import PER_ALERT_ROUTES, poll_until, unique
from adwatch_notifier import NotifierSettings, run
from adwatch_notifier.channels import build_channel
from adwatch_notifier.grouping import GroupFlusher, RedisGroupStore
from adwatch_notifier.ledger import RedisLedger
from adwatch_notifier.loop import run_chain
from adwatch_notifier.outcomes import Delivered, Grouped
from adwatch_notifier.routing import load_routes
from adwatch_notifier.stages import Envelope, Lease, build_stages

T0 = 1_767_225_600_000
COUNTRIES = [a + b for a in "ABCDEFGHIJ" for b in "KLMNOPQRST"]  # 100 codes


def alert(i: int, alert_type: str = "ctr_drop", segments: int = 64, window: int | None = None) -> Alert:
    country, ad_format = COUNTRIES[(i % segments) // 4], AD_FORMATS[i % 4]
    fp = make_fingerprint(alert_type, segment_key(country, ad_format))
    start = T0 + (i // segments if window is None else window) * 60_000
    metric = "ctr" if alert_type == "ctr_drop" else "ecpm"
    return Alert(
        alert_id=make_alert_id(fp, start, "firing"),
        fingerprint=fp,
        status="firing",
        alert_type=alert_type,  # type: ignore[arg-type]
        severity="high",
        country=country,
        ad_format=ad_format,
        metric=metric,  # type: ignore[arg-type]
        current=0.02,
        expected=0.05,
        band_low=0.04,
        band_high=0.06,
        deviation_pct=-60.0,
        volume=10_000,
        p_value=1e-6,
        z_score=-5.0,
        window_start_ms=start,
        window_end_ms=start + 60_000,
        detected_at_ms=start + 65_000,
        message=format_message("firing", alert_type, country, ad_format, metric, 0.02, 0.05),
    )


def storm() -> list[Alert]:
    """200 segments of one window: 120 CTR drops, 80 eCPM drops."""
    return [alert(i, "ctr_drop", 400, 0) for i in range(120)] + [alert(i, "ecpm_drop", 400, 0) for i in range(120, 200)]


def routes_file(tmp: Path, channel: str, grouped: bool, wait: str = "0s") -> str:
    path = tmp / f"routes-{channel}-{'grouped' if grouped else 'single'}-{wait}.yaml"
    group = f", group_by: [alert_type], group_wait: {wait}, group_interval: 3s" if grouped else ""
    path.write_text(f"routes: [{{channel: {channel}{group}}}]\ninhibit_rules: []\n")
    return str(path)


Provider = dict[str, Any]


def provider_settings(channel: str, slack: FakeSlack, pd: FakePagerDuty, smtp: SmtpSink) -> Provider:
    return {
        "console": {},
        "slack": {"slack_bot_token": "xoxb-bench", "slack_api_url": slack.api_url, "slack_channel": "#ads"},
        "pagerduty": {"pagerduty_routing_key": "RK", "pagerduty_url": pd.url},
        "email": {
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "smtp_starttls": False,
            "smtp_from": "adwatch@example.com",
            "smtp_to": "oncall@example.com",
        },
    }[channel]


def settings(channel: str, topic: str, routes: str, **extra: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "channel": channel,
        "alerts_topic": topic,
        "dlq_topic": topic + ".dlq",
        "group_id": unique("bench"),
        "redis_prefix": unique("bench"),
        "routes_file": routes,
        "cooldown_seconds": 0,
        "max_alert_age_seconds": 0,
        **extra,
    }
    return NotifierSettings(**values)


# --- rate: the chain (and the flusher) per channel ------------------------------------------------
def chain_rate(common: CommonSettings, s: NotifierSettings, n: int) -> float:
    client = make_redis(common.redis_url)
    channel = build_channel(s, "", io.StringIO())
    table = load_routes(s.routes_file)
    groups = RedisGroupStore(client, s.redis_prefix, channel.name)
    stages = build_stages(
        s,
        channel,
        table,
        RedisLedger(client, s.redis_prefix, channel.name),
        Lease("b", 30),
        threading.Event(),
        groups=groups,
    )
    specs = {i: r.group for i, r in enumerate(table.routes) if r.group is not None}
    flusher = GroupFlusher(groups, channel, specs, owner="b", now=time.time)
    values = [encode(alert(i)) for i in range(n)]
    expected = Grouped() if specs else Delivered()
    started = time.perf_counter()
    for value in values:
        outcome, _ = run_chain(stages, Envelope(value))
        assert outcome == expected, outcome
    if specs:
        assert flusher.tick().sent == 1  # one group: one notification lists the 64 segments
    elapsed = time.perf_counter() - started
    channel.close()
    return n / elapsed


# --- storm: the whole loop, publish -> last notification -------------------------------------------
def received(channel: str, slack: FakeSlack, pd: FakePagerDuty, smtp: SmtpSink) -> list[tuple[float, str]]:
    """(time, text) of every notification the provider accepted so far."""
    if channel == "slack":
        return [(r.at, str(r.json().get("text", ""))) for r in slack.accepted]
    if channel == "pagerduty":
        out = []
        for r in pd.accepted:
            event = r.json()
            details = event.get("payload", {}).get("custom_details", {})
            out.append((r.at, str(details.get("message") or event.get("payload", {}).get("summary", ""))))
        return out
    bodies = [m.get_body(("plain",)).get_content() for m in list(smtp.messages)]  # type: ignore[union-attr]
    return [(at, body) for (_, _, at), body in zip(list(smtp.envelopes), bodies, strict=False)]


def storm_time(
    common: CommonSettings, s: NotifierSettings, grouped: bool, see: Callable[[], list[tuple[float, str]]]
) -> tuple[float, int]:
    alerts = storm()
    topic = s.alerts_topic
    ensure_topics(common.kafka_bootstrap, {topic: 1})
    producer = make_producer(common.kafka_bootstrap)
    stop = threading.Event()
    worker = threading.Thread(target=run, args=(s, stop), kwargs={"common": common, "stream": io.StringIO()})
    started = time.time()
    for a in alerts:
        producer.produce(topic, encode(a), key=a.fingerprint.encode())
    producer.flush(30)
    worker.start()
    names = [a.where for a in alerts]  # each member by its segment in the group messages

    def done() -> bool:
        got = see()
        if not grouped:
            return len(got) >= len(alerts)
        text = " ".join(t for _, t in got)
        return all(n in text for n in names)

    try:
        poll_until(done, "the storm's last notification", timeout_s=90)
    finally:
        stop.set()
        worker.join(30)
    got = see()
    return max(at for at, _ in got) - started, len(got)


# --- failing / hanging: one alert's outage, the others' latency --------------------------------------
class HangingSlack(FakeSlack):
    """Answers the requests that name ``picked`` only ``hang_s`` later (accepted, then held)."""

    picked, hang_s = "", 0.0

    def _respond(self, req: RecordedRequest) -> tuple[int, dict[str, str], Any]:
        answer = super()._respond(req)
        if self.picked and self.picked in req.body.decode():
            time.sleep(self.hang_s)
        return answer


def latencies(
    common: CommonSettings, others: int, rate: float, mode: str, routes: str, hang_s: float = 0.0, workers: int = 4
) -> tuple[float, float, int]:
    """publish -> received p50, p99 (ms) of ``others`` alerts after one that ``mode`` ("none", "failing",
    "hanging") makes fail or hang; and how many of its attempts failed."""
    bad = alert(0, "ctr_drop", 400, 0)  # AK banner
    name = f"{bad.country} {bad.ad_format}"
    with HangingSlack() as slack:
        if mode == "failing":
            slack.fail_when = lambda req: 500 if name in req.body.decode() else None
        if mode == "hanging":
            slack.picked, slack.hang_s = name, hang_s
        topic = unique("bench-alerts")
        ensure_topics(common.kafka_bootstrap, {topic: 1})
        s = settings(
            "slack",
            topic,
            routes,
            slack_webhook_url=slack.webhook_url,
            slack_min_interval_ms=0,
            request_timeout_seconds=max(10.0, hang_s + 2),
            delivery_workers=workers,
            inhibit_wait_seconds=0,  # CTR alerts would wait 3 s for a traffic alert: not what is measured here
        )
        producer = make_producer(common.kafka_bootstrap, **{"linger.ms": 0})
        stop = threading.Event()
        worker = threading.Thread(target=run, args=(s, stop), kwargs={"common": common})
        worker.start()
        warm = alert(399, "ecpm_drop", 400, 0)
        producer.produce(topic, encode(warm), key=warm.fingerprint.encode())  # group join
        producer.flush(10)
        slack.wait_for(1, timeout_s=60, accepted=True)
        producer.produce(topic, encode(bad), key=bad.fingerprint.encode())
        producer.poll(0)
        sent: dict[str, float] = {}
        for i in range(4, others + 4):  # other segments than the failing one's
            a = alert(i, "ctr_drop", 400, 1)
            sent[f"{a.country} {a.ad_format}"] = time.time()
            producer.produce(topic, encode(a), key=a.fingerprint.encode())
            producer.poll(0)
            time.sleep(1 / rate)
        producer.flush(10)
        arrived: dict[str, float] = {}

        def all_arrived() -> bool:
            for r in slack.accepted:
                text = r.json()["text"]
                key = next((k for k in sent if f" {k}:" in text), None)
                if key is not None:
                    arrived.setdefault(key, r.at)
            return len(arrived) == len(sent)

        poll_until(all_arrived, "every other alert received", timeout_s=60)
        stop.set()
        worker.join(30 + hang_s)
        failed = sum(1 for r in slack.requests if not r.ok)
    lat = [(arrived[k] - sent[k]) * 1000 for k in sent]
    lat.sort()
    return statistics.median(lat), lat[int(0.99 * (len(lat) - 1))], failed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=300, help="alerts per rate measure")
    parser.add_argument("--others", type=int, default=100, help="other alerts in the failing measure")
    parser.add_argument("--rate", type=float, default=20.0, help="alerts/s in the failing measure")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the rate and failing measures (median)")
    parser.add_argument("--hang", type=float, default=8.0, help="seconds the hanging alert's request is held")
    parser.add_argument("--skip", default="", help="comma-separated: rate,storm,failing")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-channels-"))
    infra = EmbeddedInfra(tmp / "infra").start()
    try:
        common = CommonSettings(kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url)
        with FakeSlack() as slack, FakePagerDuty() as pd, SmtpSink() as smtp:
            if "rate" not in skip:
                off = {"slack_min_interval_ms": 0, "pagerduty_min_interval_ms": 0}

                def measure(channel: str, grouped: bool) -> float:
                    extra = {**off, **provider_settings(channel, slack, pd, smtp)}
                    s = settings(channel, "unused", routes_file(tmp, channel, grouped), **extra)
                    return chain_rate(common, s, args.alerts)

                rounds: dict[tuple[str, bool], list[float]] = {}
                for _ in range(args.rounds):  # alternately, so a busy moment hits every side alike
                    for key in [("console", False)] + [
                        (c, g) for c in ("slack", "pagerduty", "email") for g in (False, True)
                    ]:
                        rounds.setdefault(key, []).append(measure(*key))
                med = {key: statistics.median(values) for key, values in rounds.items()}
                ref = med[("console", False)]
                print(
                    f"rate reference: console one by one {ref:,.0f} alerts/s ({args.alerts} alerts, median of {args.rounds})"
                )
                for channel in ("slack", "pagerduty", "email"):
                    single, grouped = med[(channel, False)], med[(channel, True)]
                    print(
                        f"rate {channel}: one by one {single:,.0f} alerts/s ({single / ref:.2f}x console), "
                        f"grouped {grouped:,.0f} alerts/s ({grouped / ref:.2f}x console, {grouped / single:.1f}x one by one)"
                    )
            if "storm" not in skip:
                for channel in ("slack", "pagerduty", "email"):
                    pairs = []
                    for grouped in (False, True):
                        for recorded in (slack.requests, pd.requests, smtp.messages, smtp.envelopes):
                            recorded.clear()
                        slack.messages.clear()
                        extra = provider_settings(channel, slack, pd, smtp)
                        if not grouped:
                            extra |= {"slack_min_interval_ms": 0, "pagerduty_min_interval_ms": 0}
                        s = settings(channel, unique("bench-storm"), routes_file(tmp, channel, grouped, "2s"), **extra)
                        pairs.append(storm_time(common, s, grouped, lambda c=channel: received(c, slack, pd, smtp)))
                    (t1, n1), (t2, n2) = pairs
                    print(
                        f"storm {channel}: one by one {n1} notifications, last after {t1:.1f} s; "
                        f"grouped {n2} notifications, last after {t2:.1f} s (ratio {t2 / t1:.2f})"
                    )
        if "failing" not in skip:
            per_alert = tmp / "per-alert-routes.yaml"  # the built-in routes group Slack: one message per alert here
            per_alert.write_text(PER_ALERT_ROUTES)
            cases = {
                "none": {"mode": "none"},
                "failing": {"mode": "failing"},
                "hanging": {"mode": "hanging", "hang_s": args.hang},
                "hanging, 1 worker": {"mode": "hanging", "hang_s": args.hang, "workers": 1},
            }
            runs: dict[str, list[tuple[float, float, int]]] = {case: [] for case in cases}
            for _ in range(args.rounds):  # alternately, median of each side
                for case, kwargs in cases.items():
                    runs[case].append(latencies(common, args.others, args.rate, routes=str(per_alert), **kwargs))
            med = {case: tuple(statistics.median(r[i] for r in rs) for i in (0, 1)) for case, rs in runs.items()}
            b50, b99 = med["none"]
            print(
                f"reference: {args.others} others at {args.rate:g}/s, publish->received p50 {b50:.0f} ms p99 {b99:.0f} ms "
                f"with nothing failing (median of {args.rounds})"
            )
            for case in ("failing", "hanging", "hanging, 1 worker"):
                p50, p99 = med[case]
                failed = sum(r[2] for r in runs[case])
                print(
                    f"{case}: p50 {p50:.0f} ms p99 {p99:.0f} ms (ratio p50 {p50 / b50:.2f}, p99 {p99 / b99:.2f}; "
                    f"{failed} failed attempts in {args.rounds} runs)"
                )
    finally:
        infra.stop()


if __name__ == "__main__":
    main()
