"""The generator's Prometheus metrics, defined once (bounded labels only)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_PRODUCED = Counter(
    "adwatch_generator_events_produced_total", "Events handed to the sink, by event type", ["event_type"]
)
PRODUCE_ERRORS = Counter(
    "adwatch_generator_produce_errors_total", "Failed deliveries and broker errors, by reason", ["reason"]
)
RATE = Gauge("adwatch_generator_rate_events_per_second", "Events per second over the last progress interval")
TRUTH_RECORDS = Counter(
    "adwatch_generator_truth_records_total", "Ground-truth records written, by scenario type", ["scenario"]
)
ACTIVE_SCENARIOS = Gauge("adwatch_generator_active_scenarios", "Scenarios shaping the traffic right now")
EVENT_TIME_LAG = Gauge(
    "adwatch_generator_event_time_lag_seconds", "Wall clock minus the event time of the newest batch sent"
)
