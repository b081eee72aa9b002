"""Producing through the embedded broker: keys by segment, traceparent on sampled events, truth topic, CLI."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from adwatch.contracts import AdEvent, TruthRecord, decode, segment_key
from adwatch.kafka import header_value, make_consumer
from adwatch.telemetry import MESSAGING_DESTINATION, MESSAGING_OPERATION_TYPE, MESSAGING_SYSTEM
from adwatch_dev.testing import consume_all, poll_until, unique
from adwatch_generator.__main__ import main
from adwatch_generator.events import IMPRESSION, EventBatch
from adwatch_generator.metrics import GeneratorMetrics
from adwatch_generator.scenarios import parse_scenario, truth_record
from adwatch_generator.sink import KafkaSink, TruthWatcher, TruthWriter
from adwatch_generator.traffic import TrafficModel

START_MS = 1_736_960_400_000


def drain(bootstrap: str, topic: str, idle_s: float = 3.0, timeout_s: float = 40.0) -> list[Any]:
    """Everything on the topic: read until nothing new arrives for ``idle_s``."""
    consumer = make_consumer(bootstrap, unique("drain"))
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline, last = time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=10_000, timeout=0.5)
            fresh = [m for m in msgs if not m.error()]
            records.extend(fresh)
            if fresh:
                last = time.monotonic()
            elif last is not None and time.monotonic() - last > idle_s:
                break
    finally:
        consumer.close()
    return records


def test_events_are_keyed_by_segment_and_sampled_ones_carry_traceparent(
    kafka: str, topic_factory: Callable[..., str], metrics: GeneratorMetrics, registry: CollectorRegistry
) -> None:
    topic = topic_factory("ad-events", partitions=6)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    flood = parse_scenario("click_flood_without_impressions:DE|banner:10s:10s", START_MS)
    batch = EventBatch.concat(list(TrafficModel(seed=5, rate=150).generate(START_MS, START_MS + 30_000, [flood])))
    sink = KafkaSink(kafka, topic, metrics, trace_sample=0.02, tracer=provider.get_tracer("test"))
    sink.send(batch)
    assert sink.flush(20) == 0
    produced = {
        kind: registry.get_sample_value("adwatch_generator_events_produced_total", {"event_type": kind})
        for kind in ("impression", "click")
    }
    assert produced == {"impression": batch.count(IMPRESSION), "click": len(batch) - batch.count(IMPRESSION)}

    records = consume_all(kafka, topic, len(batch), timeout_s=40)
    assert len(records) == len(batch)
    partition_of: dict[bytes, set[int]] = {}
    traced = []
    for msg in records:
        event = decode(msg.value(), AdEvent)
        assert msg.key() == segment_key(event.country, event.ad_format).encode()
        partition_of.setdefault(msg.key(), set()).add(msg.partition())
        if header_value(msg.headers(), "traceparent"):
            traced.append((event, header_value(msg.headers(), "traceparent")))
    assert all(len(parts) == 1 for parts in partition_of.values())  # a segment stays in one partition
    assert len({p for parts in partition_of.values() for p in parts}) > 1
    assert 0.005 * len(batch) < len(traced) < 0.05 * len(batch)
    first_shaped = decode(batch.values[int(batch.affected.argmax())], AdEvent)
    assert segment_key(first_shaped.country, first_shaped.ad_format) == segment_key("DE", "banner")
    assert first_shaped.event_id in {e.event_id for e, _ in traced}  # the first scenario-shaped event is traced

    (span,) = exporter.get_finished_spans()
    assert span.name == f"send {topic}" and span.kind == SpanKind.PRODUCER
    assert span.attributes is not None
    assert span.attributes[MESSAGING_SYSTEM] == "kafka"
    assert span.attributes[MESSAGING_OPERATION_TYPE] == "send"
    assert span.attributes[MESSAGING_DESTINATION] == topic
    trace_id = format(span.context.trace_id, "032x")
    assert all(value.decode().split("-")[1] == trace_id for _, value in traced)


def test_truth_goes_to_the_topic_and_the_file_and_is_watched(
    kafka: str, topic_factory: Callable[..., str], tmp_path: Path, metrics: GeneratorMetrics
) -> None:
    truth_topic = topic_factory("truth", partitions=1)
    sink = KafkaSink(kafka, topic_factory("events"), metrics)
    writer = TruthWriter(metrics, str(tmp_path / "truth.jsonl"), sink, truth_topic)
    scenarios = [parse_scenario(text, START_MS) for text in ("ctr_drop", "ecpm_drop:JP|*:1m:2m")]
    writer.write(truth_record(s) for s in scenarios)
    sink.flush(10)
    on_topic = [decode(m.value(), TruthRecord) for m in consume_all(kafka, truth_topic, 2)]
    in_file = [decode(line, TruthRecord) for line in (tmp_path / "truth.jsonl").read_bytes().splitlines()]
    assert on_topic == in_file == [truth_record(s) for s in scenarios]
    watcher = TruthWatcher(kafka, truth_topic, unique("watch"), metrics)
    seen: list[TruthRecord] = []

    def both_seen() -> bool:
        seen.extend(watcher.poll())
        return len(seen) >= 2

    try:
        poll_until(both_seen, "the watcher to read both truth records", timeout_s=20)
    finally:
        watcher.close()
    assert seen == on_topic


def _env(monkeypatch: pytest.MonkeyPatch, kafka: str) -> None:
    monkeypatch.setenv("ADWATCH_KAFKA_BOOTSTRAP", kafka)
    monkeypatch.setenv("ADWATCH_METRICS_PORT", "0")


def test_backfill_command_produces_the_model_output(
    kafka: str, topic_factory: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(monkeypatch, kafka)
    topic, truth = unique("ad-events"), unique("truth")  # the command creates them
    args = [
        *("backfill", "--start", "2025-01-15T17:00:00Z", "--end", "2025-01-15T17:01:00Z", "--rate", "100", "-q"),
        *("--topic", topic, "--truth-topic", truth, "--scenario", "ctr_spike:US|banner:10s:20s"),
    ]
    assert main(args) == 0
    expected = EventBatch.concat(
        list(
            TrafficModel(seed=42, rate=100).generate(
                START_MS, START_MS + 60_000, [parse_scenario("ctr_spike:US|banner:10s:20s", START_MS)]
            )
        )
    )
    records = consume_all(kafka, topic, len(expected), timeout_s=40)
    assert sorted(m.value() for m in records) == sorted(expected.values)
    (record,) = [decode(m.value(), TruthRecord) for m in consume_all(kafka, truth, 1)]
    assert record.scenario == "ctr_spike" and record.start_ms == START_MS + 10_000


def test_live_with_warmup_picks_up_a_drill(kafka: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _env(monkeypatch, kafka)
    topic, truth = unique("ad-events"), unique("truth")
    common = ["--topic", topic, "--truth-topic", truth]
    result: dict[str, int] = {}
    started = time.time()
    live_args = [
        *("live", "--duration", "8s", "--warmup-minutes", "1", "--progress-interval", "2"),
        *("--truth-file", str(tmp_path / "t.jsonl"), *common),
    ]
    live = threading.Thread(target=lambda: result.update(code=main(live_args)))
    live.start()
    try:
        admin = AdminClient({"bootstrap.servers": kafka})
        poll_until(lambda: topic in admin.list_topics(timeout=5).topics, "the live run to open its topic")
        drill_at = int(time.time() * 1000)
        assert main(["drill", "--choice", "5", "--segments", "*", "--magnitude", "5", "--truth-topic", truth]) == 0
    finally:
        live.join(60)
    assert result == {"code": 0}
    events = [decode(m.value(), AdEvent) for m in drain(kafka, topic)]
    warmup = [e for e in events if e.event_time_ms < started * 1000 - 30_000]
    assert len(warmup) > 1000  # the warm-up minute of history came first
    orphans = [e for e in events if e.event_type == "click" and e.impression_id is None]
    assert orphans and min(e.event_time_ms for e in orphans) >= drill_at - 1000
    local_truth = [decode(line, TruthRecord) for line in (tmp_path / "t.jsonl").read_bytes().splitlines()]
    assert [r.scenario for r in local_truth] == ["click_flood_without_impressions"]


def test_unreachable_broker_is_retried_with_a_log_line_until_stopped(
    caplog: pytest.LogCaptureFixture, registry: CollectorRegistry
) -> None:
    from adwatch_dev.infra import free_port
    from adwatch_generator.sink import wait_for_kafka

    stop = threading.Event()
    waits: list[float] = []

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 3:
            stop.set()
        return stop.is_set()

    caplog.set_level("WARNING")
    bootstrap = f"127.0.0.1:{free_port()}"
    metrics = GeneratorMetrics(registry)
    assert wait_for_kafka(bootstrap, {"t": 1}, stop, metrics, sleep=sleep, timeout_s=0.5) is False
    assert waits == [1.0, 2.0, 4.0]
    assert registry.get_sample_value("adwatch_generator_produce_errors_total", {"reason": "broker_unavailable"}) == 3
    assert "not ready" in caplog.text and "retrying in" in caplog.text
    fields = [(r.bootstrap, r.retry_in_s) for r in caplog.records if hasattr(r, "retry_in_s")]
    assert fields == [(bootstrap, 1.0), (bootstrap, 2.0), (bootstrap, 4.0)], "bound fields, not only prose"
    assert "Traceback" not in caplog.text
    assert os.environ.get("ADWATCH_KAFKA_BOOTSTRAP") != bootstrap


def test_sigterm_flushes_and_exits_cleanly(kafka: str) -> None:
    import signal
    import subprocess
    import sys

    topic = unique("ad-events")
    env = {**os.environ, "ADWATCH_KAFKA_BOOTSTRAP": kafka, "ADWATCH_METRICS_PORT": "0"}
    argv = [
        *(sys.executable, "-m", "adwatch_generator", "live", "--rate", "500", "--progress-interval", "1"),
        *("--topic", topic, "--truth-topic", unique("truth")),
    ]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # bounded by the timeout below if nothing is ever sent
            if line.startswith("Sent "):
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert len(drain(kafka, topic, idle_s=2)) > 100
