"""The consumer span continues the alert's trace; /readyz and /metrics answer while running."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from adwatch.contracts import Alert, encode
from adwatch.telemetry import OpsServer, inject_headers
from adwatch_dev.fakes import FakeWebhook
from adwatch_notifier.grouping import GroupFlusher, MemoryGroupStore
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.routing import parse_routes
from adwatch_notifier.stages import Envelope, GroupStage

from .conftest import make_alert
from .fakes import FakeClock, FuncChannel


def span_exporter() -> InMemorySpanExporter:
    """An in-memory exporter on the global tracer provider (set once per process)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[union-attr]
    return exporter


def test_trace_continues_and_ops_endpoints(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    exporter = span_exporter()
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


def test_group_notification_span_links_every_members_trace() -> None:
    """A group is sent outside its alerts' traces: its send span links each member record's traceparent."""
    exporter = span_exporter()
    store, clock = MemoryGroupStore(), FakeClock()
    table = parse_routes("routes:\n  - {channel: console, group_by: [alert_type], group_wait: 30s}\n")
    channel = FuncChannel(name="console")
    stage = GroupStage(table, channel, store, now=clock)
    parents = []
    for country in ("US", "DE", "FR"):
        alert = make_alert(country=country)
        with trace.get_tracer("test").start_as_current_span(f"detector {country}") as parent:
            parents.append(parent.get_span_context())
            stage(Envelope(encode(alert), alert=alert, headers=inject_headers()))
    untraced = make_alert(country="GB")
    stage(Envelope(encode(untraced), alert=untraced))  # no traceparent: in the group, not linked
    clock.s += 31
    flusher = GroupFlusher(store, channel, {0: table.routes[0].group}, owner="me", now=clock)  # type: ignore[dict-item]
    assert flusher.tick().sent == 1
    [send] = [s for s in exporter.get_finished_spans() if s.name == "console group send"]
    assert send.kind == trace.SpanKind.CLIENT and send.parent is None  # its own trace
    assert send.attributes is not None and send.attributes["adwatch.group.alerts"] == 4
    linked = {(link.context.trace_id, link.context.span_id) for link in send.links}
    assert linked == {(p.trace_id, p.span_id) for p in parents}
    assert {link.attributes["adwatch.fingerprint"] for link in send.links if link.attributes} == {
        make_alert(country=c).fingerprint for c in ("US", "DE", "FR")
    }


def test_group_notification_links_traces_through_broker_and_redis(
    harness: Any, alert_factory: Callable[..., Alert], tmp_path: Path
) -> None:
    """The same on the real broker and Redis: the members' traceparent headers survive the group buffer."""
    exporter = span_exporter()
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - {channel: webhook, group_by: [alert_type], group_wait: 1s}\n")
    parents = []
    for country in ("US", "DE", "FR"):
        with trace.get_tracer("test").start_as_current_span(f"detector {country}") as parent:
            parents.append(parent.get_span_context().trace_id)
            harness.publish(alert_factory(country=country), traceparent=True)
    with FakeWebhook() as hook:
        harness.start(harness.settings("webhook", webhook_url=hook.url + "/hook", routes_file=str(routes)))
        hook.wait_for(1, timeout_s=60)
        harness.stop_all()
    sends = [s for s in exporter.get_finished_spans() if s.name == "webhook group send"]
    assert sends, "no group send span"
    assert {link.context.trace_id for link in sends[0].links} == set(parents)
