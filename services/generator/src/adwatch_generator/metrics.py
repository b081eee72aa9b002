"""The generator's Prometheus metrics, defined once (bounded labels only).

The entry point takes the :class:`GeneratorMetrics` of the service's registry
(``svc.metrics(GeneratorMetrics)``, see :mod:`adwatch.service`) and hands it to the sinks, the
truth writer and watcher, the progress line and the live loop; nothing reads a module-level
metric. Tests build their own on a fresh ``CollectorRegistry``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GeneratorMetrics:
    """Every generator series, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "adwatch_generator_"
        self.events_produced_total = Counter(
            p + "events_produced_total", "Events handed to the sink, by event type", ["event_type"], registry=registry
        )
        self.produce_errors_total = Counter(
            p + "produce_errors_total", "Failed deliveries and broker errors, by reason", ["reason"], registry=registry
        )
        self.rate_events_per_second = Gauge(
            p + "rate_events_per_second", "Events per second over the last progress interval", registry=registry
        )
        self.truth_records_total = Counter(
            p + "truth_records_total", "Ground-truth records written, by scenario type", ["scenario"], registry=registry
        )
        self.active_scenarios = Gauge(
            p + "active_scenarios", "Scenarios shaping the traffic right now", registry=registry
        )
        self.event_time_lag_seconds = Gauge(
            p + "event_time_lag_seconds",
            "Wall clock minus the event time of the newest batch sent",
            registry=registry,
        )
