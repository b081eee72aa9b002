"""Fixtures of the notifier tests: alert factory and a harness running channels in threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adwatch.config import CommonSettings
from adwatch.contracts import (
    Alert,
    Contributor,
    DeadLetter,
    decode,
    describe_segment,
    encode,
    format_message,
    make_alert_id,
    make_fingerprint,
    segment_id,
)
from adwatch.kafka import make_producer
from adwatch.telemetry import inject_headers
from adwatch_dev.testing import PER_ALERT_ROUTES, consume_all, unique
from adwatch_notifier import NotifierSettings, RunStats, run

T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def make_alert(
    status: str = "firing",
    severity: str = "high",
    country: str = "US",
    ad_format: str = "banner",
    alert_type: str = "ctr_drop",
    window_start_ms: int = T0,
    current: float = 0.02,
    expected: float = 0.05,
    dimensions: dict[str, str] | None = None,
    contributors: tuple[Contributor, ...] = (),
    folded: int = 0,
) -> Alert:
    """An alert on the segment ``dimensions`` (by default ``country`` x ``ad_format``)."""
    dims = {"country": country, "ad_format": ad_format} if dimensions is None else dict(dimensions)
    segment = segment_id(dims)
    fp = make_fingerprint(alert_type, segment)
    return Alert(
        alert_id=make_alert_id(fp, window_start_ms, status),
        fingerprint=fp,
        status=status,  # type: ignore[arg-type]
        alert_type=alert_type,  # type: ignore[arg-type]
        severity=severity,  # type: ignore[arg-type]
        dimensions=dims,
        segment_id=segment,
        country=dims.get("country", ""),
        ad_format=dims.get("ad_format", ""),
        metric="ctr",
        current=current,
        expected=expected,
        band_low=0.04,
        band_high=0.06,
        deviation_pct=100 * (current - expected) / expected,
        volume=12000,
        p_value=1e-6,
        z_score=-5.2,
        window_start_ms=window_start_ms,
        window_end_ms=window_start_ms + 60_000,
        detected_at_ms=window_start_ms + 65_000,
        message=format_message(status, alert_type, describe_segment(dims), "ctr", current, expected),
        contributors=list(contributors),
        folded=folded,
    )


@pytest.fixture
def alert_factory() -> Callable[..., Alert]:
    return make_alert


FAST = {
    "retry_initial_seconds": 0.05,
    "retry_max_seconds": 0.2,
    "retry_deadline_seconds": 1.5,
    "slack_min_interval_ms": 0,
    "pagerduty_min_interval_ms": 0,
    "claim_lease_seconds": 1.0,
    "request_timeout_seconds": 5.0,
    "max_alert_age_seconds": 0,  # the test alerts are dated 2026-01-01
    "inhibit_wait_seconds": 0,  # tests of inhibition in detector order set it
}


class Harness:
    """One test's topics, Redis prefix and running notifier threads."""

    def __init__(self, kafka: str, redis_url: str, topic_factory: Callable[..., str], routes_file: str = "") -> None:
        self.routes_file = routes_file
        self.kafka = kafka
        self.common = CommonSettings(kafka_bootstrap=kafka, redis_url=redis_url)
        self.alerts_topic = topic_factory("alerts", 1)
        self.dlq_topic = topic_factory("alerts-dlq", 1)
        self.prefix = unique("notifier-test")
        self.deliveries_topic = unique("deliveries")  # created (compacted) by the notifier; one per Redis prefix
        self.producer = make_producer(kafka)
        self.threads: list[tuple[threading.Thread, threading.Event]] = []
        self.results: list[RunStats] = []

    def settings(self, channel: str, **overrides: Any) -> NotifierSettings:
        values: dict[str, Any] = {
            "channel": channel,
            "alerts_topic": self.alerts_topic,
            "dlq_topic": self.dlq_topic,
            "group_id": unique(f"g-{channel}"),
            "redis_prefix": self.prefix,
            "deliveries_topic": self.deliveries_topic,
            "routes_file": self.routes_file,
            **FAST,
        }
        values.update(overrides)
        return NotifierSettings(**values)

    def env(self, channel: str, **overrides: str) -> dict[str, str]:
        """The same configuration as environment variables, for a subprocess."""
        env = {
            "ADWATCH_KAFKA_BOOTSTRAP": self.kafka,
            "ADWATCH_REDIS_URL": self.common.redis_url.get_secret_value(),
            "ADWATCH_NOTIFIER_CHANNEL": channel,
            "ADWATCH_NOTIFIER_ALERTS_TOPIC": self.alerts_topic,
            "ADWATCH_NOTIFIER_DLQ_TOPIC": self.dlq_topic,
            "ADWATCH_NOTIFIER_GROUP_ID": unique(f"g-{channel}"),
            "ADWATCH_NOTIFIER_REDIS_PREFIX": self.prefix,
            "ADWATCH_NOTIFIER_DELIVERIES_TOPIC": self.deliveries_topic,
            "ADWATCH_NOTIFIER_ROUTES_FILE": self.routes_file,
        }
        env.update({f"ADWATCH_NOTIFIER_{k.upper()}": str(v) for k, v in FAST.items()})
        env.update(overrides)
        return env

    def publish(self, *records: Alert | bytes, traceparent: bool = False) -> None:
        for record in records:
            if isinstance(record, Alert):
                headers = inject_headers() if traceparent else None
                self.producer.produce(self.alerts_topic, encode(record), key=record.fingerprint, headers=headers)
            else:
                self.producer.produce(self.alerts_topic, record, key=b"bad")
        assert self.producer.flush(10) == 0

    def start(self, settings: NotifierSettings, **kwargs: Any) -> threading.Event:
        stop = threading.Event()

        def target() -> None:
            self.results.append(run(settings, stop, common=self.common, **kwargs))

        thread = threading.Thread(target=target, name=f"notifier-{settings.channel}", daemon=True)
        thread.start()
        self.threads.append((thread, stop))
        return stop

    def run_once(self, settings: NotifierSettings, count: int, **kwargs: Any) -> RunStats:
        """Process exactly ``count`` records in this thread, then return."""
        return run(settings, threading.Event(), count, common=self.common, **kwargs)

    def dead_letters(self, count: int, timeout_s: float = 20.0) -> list[DeadLetter]:
        records = consume_all(self.kafka, self.dlq_topic, count, timeout_s)
        return [decode(m.value(), DeadLetter) for m in records]

    def stop_all(self) -> None:
        for _, stop in self.threads:
            stop.set()
        for thread, _ in self.threads:
            thread.join(30)
        self.threads.clear()


@pytest.fixture
def harness(kafka: str, redis_url: str, topic_factory: Callable[..., str], tmp_path: Path) -> Iterator[Harness]:
    routes = tmp_path / "per-alert-routes.yaml"
    routes.write_text(PER_ALERT_ROUTES)
    h = Harness(kafka, redis_url, topic_factory, str(routes))
    try:
        yield h
    finally:
        h.stop_all()
