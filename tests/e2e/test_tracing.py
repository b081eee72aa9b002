"""One alert, one trace: generator event span -> detector alert span -> every channel's delivery.

In-process, across the real embedded broker: the generator's sink, the Spark job's batch
writer and two notifier channels all report to one InMemorySpanExporter. Slack answers
500 once, so its delivery shows two attempts.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from adwatch.config import CommonSettings
from adwatch.contracts import segment_key
from adwatch_detector.job import run_available
from adwatch_detector.metrics import DetectorMetrics
from adwatch_detector.settings import DetectorSettings
from adwatch_detector.sinks import BatchWriter
from adwatch_dev.fakes import FakePagerDuty, FakeSlack
from adwatch_dev.testing import PER_ALERT_ROUTES, unique
from adwatch_generator.events import EventBatch
from adwatch_generator.metrics import GeneratorMetrics
from adwatch_generator.scenarios import parse_scenario
from adwatch_generator.sink import KafkaSink
from adwatch_generator.traffic import TrafficModel
from adwatch_notifier import run as run_notifier
from adwatch_notifier.settings import NotifierSettings

pytestmark = pytest.mark.e2e

MINUTE_MS = 60_000
START_MS = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE_MS
HISTORY_MIN, SPIKE_FROM_MIN = 30, 24


def _global_sdk_provider() -> TracerProvider:
    """The notifier traces through the global provider: make sure it is an SDK one."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    return provider


def test_one_alert_gives_one_trace_from_events_to_every_channel(
    spark: Any, kafka: str, redis_url: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(PER_ALERT_ROUTES)
    exporter = InMemorySpanExporter()
    provider = _global_sdk_provider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("adwatch-e2e")
    events, alerts, dlq = topic_factory("ad-events", 6), topic_factory("alerts", 3), topic_factory("alerts-dlq")

    # 1. generator: clean history, then a traffic flood on US|banner; sampled events carry traceparent
    flood = parse_scenario(f"traffic_spike:US|banner:{SPIKE_FROM_MIN}m:3m:3", START_MS)
    model = TrafficModel(seed=11, rate=120)
    batch = EventBatch.concat(list(model.generate(START_MS, START_MS + HISTORY_MIN * MINUTE_MS, [flood])))
    sink = KafkaSink(kafka, events, GeneratorMetrics(CollectorRegistry()), trace_sample=0.01, tracer=tracer)
    sink.send(batch)
    assert sink.flush(60) == 0

    # 2. detector: the Spark job over everything in the topic
    settings = DetectorSettings(
        checkpoint_dir=str(tmp_path / "checkpoint"),
        input_topic=events,
        alerts_topic=alerts,
        dlq_topic=unique("ad-events-dlq"),
        redis_key_prefix=unique("adwatch:segment") + ":",
        query_name=unique("tracing").replace("-", "_"),
        source="python",
        clickhouse_enabled=False,
    )
    common = CommonSettings(kafka_bootstrap=kafka, redis_url=redis_url)
    writer = BatchWriter(settings, common, DetectorMetrics(CollectorRegistry()), tracer=tracer)
    try:
        run_available(spark, settings, common, writer, timeout_s=400)
    finally:
        writer.close()
    (alert_span,) = [s for s in exporter.get_finished_spans() if s.name == f"send {alerts}"]
    assert alert_span.attributes and alert_span.attributes["adwatch.segment"] == segment_key("US", "banner")

    # 3. notifier: Slack (500 once, then ok) and PagerDuty, each its own consumer group
    with FakeSlack() as slack, FakePagerDuty() as pagerduty:
        slack.fail_next(500, times=1)
        base: dict[str, Any] = {
            "alerts_topic": alerts,
            "dlq_topic": dlq,
            "redis_prefix": unique("adwatch:notifier"),
            "retry_initial_seconds": 0.2,
            "slack_min_interval_ms": 0,
            "routes_file": str(routes),  # one alert's own path (a group's notification is not its trace)
        }
        channels = {
            "slack": NotifierSettings(channel="slack", slack_webhook_url=slack.webhook_url, **base),
            "pagerduty": NotifierSettings(
                channel="pagerduty", pagerduty_routing_key="rk", pagerduty_url=pagerduty.url, **base
            ),
        }
        for channel in channels.values():
            run_notifier(channel, threading.Event(), max_messages=1, common=common, stream=io.StringIO())
        assert len(slack.requests) == 2 and slack.requests[1].ok

    spans = exporter.get_finished_spans()
    in_trace = [s for s in spans if s.context and s.context.trace_id == alert_span.context.trace_id]
    names = [s.name for s in in_trace]
    assert names.count(f"process {alerts}") == 2, "one consumer span per channel continues the alert's trace"
    assert names.count("slack send") == 2, "a retried delivery shows each attempt"
    assert names.count("pagerduty send") == 1
    producer_spans = [s for s in spans if s.name == f"send {events}" and s.context]
    producer_traces = {s.context.trace_id for s in producer_spans if s.context}
    # one trace id: the alert span is a child of one sampled event's generator span ...
    assert alert_span.parent is not None, "the alert span continues an event's trace"
    (parent,) = [s for s in producer_spans if s.context and s.context.span_id == alert_span.parent.span_id]
    assert parent in in_trace, "the generator's event span is in the alert's trace"
    assert names.count(f"send {events}") == 1 and names.count(f"send {alerts}") == 1
    # ... and links the other sampled events of the breaching window
    assert all(link.context.trace_id in producer_traces for link in alert_span.links), (
        "the alert span links to the generator spans of the events behind it"
    )
    _print_trace(in_trace)


def _print_trace(spans: list[ReadableSpan]) -> None:
    start = min(s.start_time or 0 for s in spans)
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        print(f"{((span.start_time or 0) - start) / 1e6:9.1f} ms  {span.name}")
