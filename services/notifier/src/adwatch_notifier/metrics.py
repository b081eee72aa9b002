"""The notifier's Prometheus metrics, defined once (labels are bounded: channel, outcome, reason)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

NOTIFICATIONS = Counter("adwatch_notifier_notifications_total", "Alerts handled, by outcome", ["channel", "outcome"])
FAILURES = Counter(
    "adwatch_notifier_failures_total", "Failed delivery attempts (Alertmanager reasons)", ["channel", "reason"]
)
DELIVERY_LATENCY = Histogram(
    "adwatch_notifier_delivery_latency_seconds",
    "From consuming an alert to the provider accepting it",
    ["channel"],
    buckets=_LATENCY_BUCKETS,
)
END_TO_END_LATENCY = Histogram(
    "adwatch_notifier_end_to_end_latency_seconds",
    "From the alert window's end to the provider accepting it",
    ["channel"],
    buckets=_LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter("adwatch_notifier_dead_letters_total", "Alerts parked in the DLQ", ["channel", "reason"])
SUPPRESSED = Counter(
    "adwatch_notifier_suppressed_total",
    "Alerts not sent on purpose (cooldown|duplicate|unrouted)",
    ["channel", "reason"],
)
CONSUMER_LAG = Gauge("adwatch_notifier_consumer_lag_records", "Records behind the high watermark", ["channel"])
