"""Where events and ground truth go: Kafka (async, batched, traced) or a JSONL file / stdout.

The only module of the generator that talks to Kafka or files.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any, Protocol

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from opentelemetry import trace
from opentelemetry.util.types import Attributes

from adwatch.contracts import TOPIC_PARTITIONS, ContractError, TruthRecord, decode, encode
from adwatch.kafka import ensure_topics, make_consumer, make_producer
from adwatch.telemetry import (
    MESSAGING_DESTINATION,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM,
    inject_headers,
)
from adwatch_generator.events import IMPRESSION, ORPHAN_CLICK, EventBatch
from adwatch_generator.metrics import GeneratorMetrics

logger = logging.getLogger(__name__)

POLL_EVERY = 5_000
MAX_BACKOFF_S = 30.0


class Sink(Protocol):
    def send(self, batch: EventBatch) -> None: ...

    def close(self) -> None: ...


def count_produced(metrics: GeneratorMetrics, batch: EventBatch) -> None:
    impressions = batch.count(IMPRESSION)
    metrics.events_produced_total.labels("impression").inc(impressions)
    metrics.events_produced_total.labels("click").inc(len(batch) - impressions)


class FileSink:
    """JSONL, one AdEvent per line, to a path or stdout (``-``)."""

    def __init__(self, path: str, metrics: GeneratorMetrics) -> None:
        self.metrics = metrics
        self._own = path != "-"
        self._fh: IO[bytes] = open(path, "wb") if self._own else sys.stdout.buffer  # noqa: SIM115

    def send(self, batch: EventBatch) -> None:
        if len(batch):
            self._fh.write(b"\n".join(batch.values))
            self._fh.write(b"\n")
            count_produced(self.metrics, batch)

    def close(self) -> None:
        self._fh.flush()
        if self._own:
            self._fh.close()


def sample_positions(batch: EventBatch, fraction: float, rng: np.random.Generator) -> list[int]:
    """Which events carry a traceparent: a random ``fraction``, plus the first scenario-shaped one."""
    n = len(batch)
    if n == 0:
        return []
    chosen = set(np.flatnonzero(rng.random(n) < fraction).tolist()) if fraction > 0 else set()
    shaped = np.flatnonzero(batch.affected | (batch.kinds == ORPHAN_CLICK))
    if len(shaped):
        chosen.add(int(shaped[0]))
    return sorted(chosen)


class KafkaSink:
    """Asynchronous produce of pre-encoded batches; one PRODUCER span per batch."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        metrics: GeneratorMetrics,
        *,
        trace_sample: float = 0.001,
        seed: int = 0,
        tracer: trace.Tracer | None = None,
        stop: threading.Event | None = None,
        **producer_overrides: Any,
    ) -> None:
        self.topic = topic
        self.metrics = metrics
        self.trace_sample = trace_sample
        self.tracer = tracer or trace.get_tracer("adwatch-generator")
        self.stop = stop or threading.Event()
        self._rng = np.random.default_rng([seed, 99])
        self._last_error: tuple[str, float] = ("", 0.0)
        config: dict[str, Any] = {
            "error_cb": self._on_error,
            "on_delivery": self._on_delivery,
            "delivery.report.only.error": True,
            **producer_overrides,
        }
        self.producer = make_producer(bootstrap, **config)
        self._closed = False

    # callbacks run inside poll()/flush()
    def _on_error(self, err: KafkaError) -> None:
        reason = err.name().lower().lstrip("_") or "unknown"
        self.metrics.produce_errors_total.labels(reason).inc()
        last, at = self._last_error
        if reason != last or time.monotonic() - at > 30:
            logger.warning(
                "Kafka error (%s): %s; librdkafka keeps retrying",
                reason,
                err.str(),
                extra={"reason": reason, "error": err.str()},
            )
            self._last_error = (reason, time.monotonic())

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._on_error(err)

    def send(self, batch: EventBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        attributes: Attributes = {
            MESSAGING_SYSTEM: "kafka",
            MESSAGING_OPERATION_TYPE: "send",
            MESSAGING_DESTINATION: self.topic,
            "messaging.operation.name": "send",
            "messaging.batch.message_count": n,
        }
        with self.tracer.start_as_current_span(
            f"send {self.topic}", kind=trace.SpanKind.PRODUCER, attributes=attributes
        ) as span:
            traced = span.get_span_context().is_valid
            positions = sample_positions(batch, self.trace_sample, self._rng) if traced else []
            headers = inject_headers() if positions else None
            start = 0
            for pos in [*positions, n]:
                self._produce_range(batch, start, pos)
                if pos < n:
                    self._produce_one(batch.values[pos], batch.keys[pos], headers)
                start = pos + 1
        count_produced(self.metrics, batch)
        self.producer.poll(0)

    def _produce_range(self, batch: EventBatch, a: int, b: int) -> None:
        # No per-message timestamp: the kwarg halves produce() speed; event time is in the payload.
        produce, topic, poll = self.producer.produce, self.topic, self.producer.poll
        values, keys = batch.values, batch.keys
        for chunk in range(a, b, POLL_EVERY):
            end = min(chunk + POLL_EVERY, b)
            for i in range(chunk, end):
                try:
                    produce(topic, values[i], keys[i])
                except BufferError:
                    self._produce_one(values[i], keys[i], None)
            poll(0)

    def _produce_one(self, value: bytes, key: bytes, headers: Any) -> None:
        """Produce, waiting out a full queue (a slow or unreachable broker) with a log line."""
        waited = 0.0
        while True:
            try:
                self.producer.produce(self.topic, value, key, headers=headers)
                return
            except BufferError:
                if waited == 0.0:
                    self.metrics.produce_errors_total.labels("queue_full").inc()
                if waited >= 5.0 and int(waited * 10) % 100 == 0:
                    logger.warning(
                        "producer queue full for %.0fs: is the broker reachable?",
                        waited,
                        extra={"topic": self.topic, "waited_s": round(waited, 1)},
                    )
                self.producer.poll(0.1)
                waited += 0.1
                if self.stop.is_set() and waited > 10:
                    raise

    def publish_truth(self, topic: str, records: Iterable[TruthRecord]) -> None:
        for record in records:
            self.producer.produce(topic, encode(record), record.scenario_id.encode())
        self.producer.poll(0)

    def flush(self, timeout_s: float = 10.0) -> int:
        remaining: int = self.producer.flush(timeout_s)
        if remaining:
            logger.warning(
                "%d events not delivered at shutdown (broker unreachable?)", remaining, extra={"undelivered": remaining}
            )
            self.metrics.produce_errors_total.labels("undelivered_at_shutdown").inc(remaining)
        return remaining

    def close(self) -> None:
        """Flush, then close the producer: a live one keeps reconnecting after the broker is gone."""
        if self._closed:
            return
        self.flush()
        self.producer.close()
        self._closed = True


class TruthWriter:
    """Ground truth to a JSONL file and/or the truth topic (via the event producer)."""

    def __init__(
        self, metrics: GeneratorMetrics, path: str = "", kafka: KafkaSink | None = None, topic: str = ""
    ) -> None:
        self.metrics = metrics
        self.path = path
        self.kafka = kafka
        self.topic = topic

    def write(self, records: Iterable[TruthRecord], *, to_kafka: bool = True) -> None:
        records = list(records)
        if not records:
            return
        if self.path:
            with open(self.path, "ab") as fh:
                fh.writelines(encode(r) + b"\n" for r in records)
        if to_kafka and self.kafka is not None:
            self.kafka.publish_truth(self.topic, records)
        for record in records:
            self.metrics.truth_records_total.labels(record.scenario).inc()


class TruthWatcher:
    """Reads the truth topic from the start: how a drill's scenario reaches a live generator.

    Uses assign() rather than a group subscription: no rebalance wait, every generator sees all.
    """

    def __init__(self, bootstrap: str, topic: str, group_id: str, metrics: GeneratorMetrics) -> None:
        self.metrics, self.topic = metrics, topic
        self.consumer = make_consumer(bootstrap, group_id, **{"enable.partition.eof": False})
        partitions = TOPIC_PARTITIONS.get(topic, 1)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])

    def poll(self) -> list[TruthRecord]:
        records = []
        for msg in self.consumer.consume(num_messages=500, timeout=0):
            if msg.error():
                continue
            try:
                records.append(decode(msg.value() or b"", TruthRecord))
            except ContractError as exc:
                self.metrics.produce_errors_total.labels("bad_truth_record").inc()
                where = {"topic": self.topic, "partition": msg.partition(), "offset": msg.offset()}
                logger.warning("ignoring a bad record on the truth topic: %s", exc, extra=where)
        return records

    def close(self) -> None:
        self.consumer.close()


def wait_for_kafka(
    bootstrap: str,
    topics: dict[str, int],
    stop: threading.Event,
    metrics: GeneratorMetrics,
    sleep: Callable[[float], bool] | None = None,
    timeout_s: float = 5.0,
) -> bool:
    """Create the topics, retrying with backoff while the broker is down; False if stopped first."""
    wait = sleep or stop.wait
    backoff = 1.0
    while not stop.is_set():
        try:
            ensure_topics(bootstrap, topics, timeout_s=timeout_s)
            return True
        except Exception as exc:
            reason = str(exc).splitlines()[0][:200]
            metrics.produce_errors_total.labels("broker_unavailable").inc()
            logger.warning(
                "Kafka at %s not ready (%s); retrying in %.0fs",
                bootstrap,
                reason,
                backoff,
                extra={"bootstrap": bootstrap, "error": reason, "retry_in_s": backoff},
            )
            if wait(backoff):
                return False
            backoff = min(backoff * 2, MAX_BACKOFF_S)
    return False


__all__ = [
    "FileSink",
    "KafkaSink",
    "Sink",
    "TruthWatcher",
    "TruthWriter",
    "sample_positions",
    "wait_for_kafka",
]
