"""End-to-end latency: window end -> provider received, per channel, p50/p99 over many alerts.

The whole pipeline runs as real processes (generator live with a warm-up backfill,
detector with its default trigger, one notifier per channel) against local fake
providers. Scenarios hit many segments, staggered, so the run yields dozens of firing
and resolved alerts. Target: p99 under 15 s with 1-minute windows (the tutorial: ~60 s).

Beside window end -> Slack it measures onset -> Slack: from each scenario's start in the
generator's ground truth to the first Slack message naming an alert of its type on its segment.
The last line is for scripts (issue #16): ``onset_to_page_p50_s=<x> window_end_to_page_p99_s=<y>``.
The notifiers route one notification per alert (``PER_ALERT_ROUTES``): each alert's own path. The
built-in default groups by alert type and waits ``group_wait`` (10 s) more before a group's first
message (bench_channels.py measures grouping).

    .venv/bin/python benchmarks/bench_latency.py --minutes 8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from adwatch.contracts import TOPIC_ALERTS, Alert, TruthRecord, decode
from adwatch.kafka import ensure_topics
from adwatch_dev.fakes import FakePagerDuty, FakeSlack, FakeWebhook, SmtpSink
from adwatch_dev.infra import EmbeddedInfra
from adwatch_dev.pipeline import LocalPipeline
from adwatch_dev.testing import PER_ALERT_ROUTES, TopicReader

SEGMENTS = [
    "US|banner",
    "US|interstitial",
    "GB|banner",
    "IN|banner",
    "US|native",
    "DE|banner",
    "US|rewarded_video",
    "FR|banner",
    "IN|native",
    "JP|banner",
    "BR|banner",
    "CA|banner",
]
KINDS = ["traffic_spike", "ecpm_drop"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--warmup-minutes", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=8.0, help="live run length")
    parser.add_argument("--trigger-seconds", type=float, default=2.0, help="the detector default")
    parser.add_argument("--watermark-seconds", type=int, default=5, help="the detector default")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="adwatch-latency-") as tmp:
        workdir = Path(tmp)
        routes = workdir / "routes.yaml"
        routes.write_text(PER_ALERT_ROUTES)
        infra = EmbeddedInfra(workdir / "infra").start()
        ensure_topics(infra.kafka_bootstrap)
        with FakeSlack() as slack, FakePagerDuty() as pagerduty, FakeWebhook() as webhook, SmtpSink() as smtp:
            env = {
                "ADWATCH_NOTIFIER_SLACK_WEBHOOK_URL": slack.webhook_url,
                "ADWATCH_NOTIFIER_SLACK_MIN_INTERVAL_MS": "0",
                "ADWATCH_NOTIFIER_PAGERDUTY_ROUTING_KEY": "bench",
                "ADWATCH_NOTIFIER_PAGERDUTY_URL": pagerduty.url,
                "ADWATCH_NOTIFIER_PAGERDUTY_MIN_INTERVAL_MS": "0",
                "ADWATCH_NOTIFIER_WEBHOOK_URL": webhook.url,
                "ADWATCH_NOTIFIER_ROUTES_FILE": str(routes),
                "ADWATCH_NOTIFIER_SMTP_HOST": smtp.host,
                "ADWATCH_NOTIFIER_SMTP_PORT": str(smtp.port),
                "ADWATCH_NOTIFIER_SMTP_STARTTLS": "false",
                "ADWATCH_NOTIFIER_SMTP_FROM": "adwatch@example.test",
                "ADWATCH_NOTIFIER_SMTP_TO": "oncall@example.test",
                "ADWATCH_DETECTOR_TRIGGER_SECONDS": str(args.trigger_seconds),
                "ADWATCH_DETECTOR_WATERMARK_SECONDS": str(args.watermark_seconds),
                "ADWATCH_DETECTOR_CHECKPOINT_DIR": str(workdir / "checkpoint"),
            }
            pipeline = LocalPipeline(infra, workdir, env=env)
            reader = TopicReader(infra.kafka_bootstrap, TOPIC_ALERTS)
            try:
                pipeline.start("detector", ["adwatch-detector", "run"])
                for channel in ("slack", "pagerduty", "email", "webhook"):
                    pipeline.start(f"notifier-{channel}", ["adwatch-notifier", "--channel", channel])
                argv = [
                    "adwatch-generator",
                    "live",
                    "--rate",
                    str(args.rate),
                    "--warmup-minutes",
                    str(args.warmup_minutes),
                    "--quiet",
                ]
                for i, segment in enumerate(SEGMENTS):
                    argv += ["--scenario", f"{KINDS[i % len(KINDS)]}:{segment}:{90 + 25 * i}s:60s"]
                truth_file = workdir / "truth.jsonl"
                pipeline.start("generator", [*argv, "--truth-file", str(truth_file)])
                deadline = time.monotonic() + 60 * args.minutes
                while time.monotonic() < deadline:
                    pipeline.assert_running()
                    reader.drain(2.0)
                time.sleep(10)
                alerts = {a.alert_id: a for a in reader.decoded(Alert)}
                truth = [decode(line, TruthRecord) for line in truth_file.read_bytes().splitlines() if line.strip()]
                report(alerts, truth, slack, pagerduty, webhook, smtp, args)
            finally:
                reader.close()
                pipeline.stop()
                infra.stop()
    return 0


def report(
    alerts: dict[str, Alert],
    truth: list[TruthRecord],
    slack: FakeSlack,
    pagerduty: FakePagerDuty,
    webhook: FakeWebhook,
    smtp: SmtpSink,
    args: argparse.Namespace,
) -> None:
    received: dict[str, list[tuple[bytes, float]]] = {
        "slack": [(r.body, r.at) for r in slack.requests if r.ok],
        "pagerduty": [(r.body, r.at) for r in pagerduty.requests if r.ok],
        "webhook": [(r.body, r.at) for r in webhook.requests if r.ok],
        "email": [(m.as_bytes(), env[2]) for m, env in zip(smtp.messages, smtp.envelopes, strict=True)],
    }
    detection = [(a.detected_at_ms - a.window_end_ms) / 1000 for a in alerts.values()]
    print(
        f"\n{len(alerts)} alerts ({sum(a.status == 'firing' for a in alerts.values())} firing), "
        f"rate {args.rate:g} ev/s, trigger {args.trigger_seconds:g} s, 1-minute windows, "
        f"watermark {args.watermark_seconds} s\n"
    )
    print("| stage | n | p50 s | p99 s | max s |\n|---|---:|---:|---:|---:|")
    print(_row("detection (window end -> alert emitted)", detection))
    by_channel: dict[str, list[float]] = {}
    for channel, hits in received.items():
        latencies = []
        for alert in alerts.values():
            times = [at for body, at in hits if alert.alert_id.encode() in body]
            if times:
                latencies.append(min(times) - alert.window_end_ms / 1000)
        by_channel[channel] = latencies
        print(_row(f"end to end, {channel} (window end -> received)", latencies))
    onsets = onset_to_page(alerts, truth, received["slack"])
    print(_row(f"onset -> Slack (truth start -> received; {len(onsets)} of {len(truth)} scenarios)", onsets))
    p50 = statistics.median(onsets) if onsets else float("nan")
    p99 = percentile(by_channel["slack"], 0.99) if by_channel["slack"] else float("nan")
    print(f"onset_to_page_p50_s={p50:.1f} window_end_to_page_p99_s={p99:.1f}")


def onset_to_page(alerts: dict[str, Alert], truth: list[TruthRecord], hits: list[tuple[bytes, float]]) -> list[float]:
    """Per scenario: its start (ground truth) to the first Slack message naming a firing alert of
    its expected type on one of its segments, in a window that ends after the start."""
    latencies = []
    for record in truth:
        segments = set(record.segments)
        matching = [
            a
            for a in alerts.values()
            if a.status == "firing"
            and a.alert_type == record.expected_alert_type
            and (a.segment_id in segments or f"{a.country}|{a.ad_format}" in segments)
            and a.window_end_ms > record.start_ms
        ]
        times = [at for body, at in hits for a in matching if a.alert_id.encode() in body]
        if times:
            latencies.append(min(times) - record.start_ms / 1000)
    return latencies


def _row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name} | 0 | - | - | - |"
    return (
        f"| {name} | {len(values)} | {statistics.median(values):.1f} | {percentile(values, 0.99):.1f} "
        f"| {max(values):.1f} |"
    )


if __name__ == "__main__":
    raise SystemExit(main())
