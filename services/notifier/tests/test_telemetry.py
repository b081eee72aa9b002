"""The consumer span continues the alert's trace; /readyz and /metrics answer while running."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from adwatch.contracts import Alert
from adwatch.telemetry import OpsServer
from adwatch_notifier.metrics import NotifierMetrics


def test_trace_continues_and_ops_endpoints(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[union-attr]
    with trace.get_tracer("test").start_as_current_span("detector send alerts") as parent:
        harness.publish(alert_factory(), traceparent=True)
    probes: dict[str, Any] = {}
    servers: list[OpsServer] = []
    registry = CollectorRegistry()  # the ops server serves the run's metrics, as svc.metrics does

    def on_ready(_stats: Any) -> None:
        base = f"http://127.0.0.1:{servers[0].port}"
        probes["ready"] = httpx.get(base + "/readyz").status_code
        probes["metrics"] = httpx.get(base + "/metrics").text

    def ready_when(check: Callable[[], bool]) -> None:
        servers.append(OpsServer(0, check, registry=registry, host="127.0.0.1").start())
        on_ready(None)  # before the first poll, as the ops server answers then

    try:
        harness.run_once(
            harness.settings("console"),
            1,
            stream=io.StringIO(),
            ready_when=ready_when,
            metrics=NotifierMetrics(registry),
        )
    finally:
        for server in servers:
            server.stop()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    process = spans[f"process {harness.alerts_topic}"]
    assert process.context.trace_id == parent.get_span_context().trace_id
    assert process.kind == trace.SpanKind.CONSUMER
    assert process.attributes["messaging.consumer.group.name"].startswith("g-console")  # type: ignore[index]
    assert spans["console send"].parent.span_id == process.context.span_id  # type: ignore[union-attr]
    assert spans["idempotency check"].attributes["adwatch.dedup.decision"] == "new"  # type: ignore[index]
    assert probes["ready"] == 200 and "adwatch_notifier_notifications_total" in probes["metrics"]
