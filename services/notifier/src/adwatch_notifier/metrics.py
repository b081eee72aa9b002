"""The notifier's Prometheus metrics, built on a given registry (labels are bounded: channel, outcome, reason).

Like Alertmanager's ``NewMetrics(reg)``: a test builds its own on a fresh
``CollectorRegistry``; the entry point builds it on the service's registry (``svc.metrics``).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class NotifierMetrics:
    """Every notifier series; names are what dashboards, alert rules and docs/metrics.md use."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        p = "adwatch_notifier_"
        self.notifications = Counter(
            p + "notifications_total", "Alerts handled, by outcome", ["channel", "outcome"], registry=registry
        )
        self.failures = Counter(
            p + "failures_total",
            "Failed delivery attempts (Alertmanager reasons)",
            ["channel", "reason"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            p + "delivery_latency_seconds",
            "From consuming an alert to the provider accepting it",
            ["channel"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end_latency = Histogram(
            p + "end_to_end_latency_seconds",
            "From the alert window's end to the provider accepting it",
            ["channel"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.dead_letters = Counter(
            p + "dead_letters_total", "Alerts parked in the DLQ", ["channel", "reason"], registry=registry
        )
        self.clipped_fields = Counter(
            p + "clipped_fields_total",
            "Over-long free-text fields of alerts clipped when decoding, the alert delivered (message|rule_set)",
            ["channel", "field"],
            registry=registry,
        )
        self.suppressed = Counter(
            p + "suppressed_total",
            "Alerts not sent on purpose (cooldown|duplicate|unrouted|silenced|maintenance|inhibited|...)",
            ["channel", "reason"],
            registry=registry,
        )
        self.deferred = Counter(
            p + "deferred_total",
            "Records set aside to try again later (retry|rate_limit|held_by_replica|unavailable|inhibit_wait)",
            ["channel", "reason"],
            registry=registry,
        )
        self.held_records = Gauge(
            p + "held_records",
            "Records consumed but not yet decided (waiting for a retry)",
            ["channel"],
            registry=registry,
        )
        self.commit_failures = Counter(
            p + "commit_failures_total",
            "Offset commits that failed (handled as a rebalance)",
            ["channel"],
            registry=registry,
        )
        self.http_requests = Counter(
            p + "http_requests_total",
            "Requests to the notifier's HTTP routes, by route (silences|slack_actions) and status code",
            ["route", "code"],
            registry=registry,
        )
        self.slack_actions = Counter(
            p + "slack_actions_total",
            "Slack button clicks acted on (acknowledge|silence)",
            ["action"],
            registry=registry,
        )
        self.slack_rejected = Counter(
            p + "slack_rejected_total",
            "Slack requests refused before acting (unsigned|stale|bad_signature)",
            ["reason"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            p + "consumer_lag_records", "Records behind the high watermark", ["channel"], registry=registry
        )
        self.journal_writes = Counter(
            p + "journal_writes_total",
            "Episode records written to the delivery journal topic (written|failed)",
            ["channel", "outcome"],
            registry=registry,
        )
        self.episodes_restored = Counter(
            p + "episodes_restored_total",
            "Open episode records restored into Redis from the delivery journal",
            ["channel"],
            registry=registry,
        )
