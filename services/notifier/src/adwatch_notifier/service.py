"""The consumer loop of one channel: poll ``alerts``, run the pipeline, commit after the outcome.

Usable in-process (tests call :func:`run` with a stop event) and from the CLI.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from opentelemetry import trace

from adwatch.config import CommonSettings, load_settings
from adwatch.kafka import ensure_topics, make_consumer, make_producer
from adwatch.storage import make_redis
from adwatch.telemetry import (
    MESSAGING_CONSUMER_GROUP,
    MESSAGING_DESTINATION,
    MESSAGING_KAFKA_KEY,
    MESSAGING_KAFKA_OFFSET,
    MESSAGING_OPERATION_TYPE,
    MESSAGING_PARTITION,
    MESSAGING_SYSTEM,
    OpsServer,
    extract_context,
)
from adwatch_notifier import metrics
from adwatch_notifier.channels import build_channel
from adwatch_notifier.ledger import Ledger
from adwatch_notifier.pipeline import Context, Envelope, build_pipeline, dlq_delivery_callback, run_pipeline
from adwatch_notifier.routing import load_routes
from adwatch_notifier.settings import NotifierSettings, check_channel_settings

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


@dataclass
class RunStats:
    """What one run did: outcomes by name (``delivered``, ``suppressed:cooldown``, ...)."""

    processed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    ops_port: int | None = None


@dataclass
class Hooks:
    """Test seams: ``before_commit(env)`` may raise to simulate a crash after sending."""

    before_commit: Callable[[Envelope], None] | None = None
    on_ready: Callable[[RunStats], None] | None = None


def run(
    settings: NotifierSettings,
    stop_event: threading.Event,
    max_messages: int | None = None,
    *,
    common: CommonSettings | None = None,
    now_ms: Callable[[], int] | None = None,
    stream: IO[str] | None = None,
    hooks: Hooks | None = None,
    serve_ops: bool = False,
) -> RunStats:
    """Consume and deliver until ``stop_event`` is set or ``max_messages`` records are committed."""
    common = common or load_settings(CommonSettings)
    hooks = hooks or Hooks()
    check_channel_settings(settings)
    table = load_routes(settings.routes_file)
    channel = build_channel(settings, common.grafana_url, stream)
    topic, group = settings.alerts_topic, settings.consumer_group
    ensure_topics(common.kafka_bootstrap, [topic, settings.dlq_topic])
    redis_client = make_redis(common.redis_url)
    dlq_errors: list[str] = []
    producer = make_producer(common.kafka_bootstrap, on_delivery=dlq_delivery_callback(dlq_errors))
    consumer = make_consumer(common.kafka_bootstrap, group)
    ctx = Context(
        channel=channel,
        ledger=Ledger(redis_client, settings.redis_prefix, channel.name),
        producer=producer,
        source_topic=topic,
        dlq_topic=settings.dlq_topic,
        owner=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        lease_s=settings.claim_lease_seconds,
        cooldown_s=settings.cooldown_seconds,
        sent_ttl_s=settings.idempotency_ttl_seconds,
        resend_in_doubt=settings.resend_in_doubt,
        policy=settings.retry_policy,
        stop=stop_event,
        dlq_errors=dlq_errors,
    )
    if now_ms is not None:
        ctx.now_ms = now_ms
    stages = build_pipeline(ctx, table)
    stats = RunStats()
    ops = None
    if serve_ops:
        admin = AdminClient({"bootstrap.servers": common.kafka_bootstrap})
        ops = OpsServer(common.metrics_port, lambda: _ready(admin, redis_client), host=common.metrics_host).start()
        stats.ops_port = ops.port
    lags: dict[int, int] = {}
    consumer.subscribe([topic])
    logger.info("notifier started: channel=%s topic=%s group=%s", channel.name, topic, group)
    if hooks.on_ready:
        hooks.on_ready(stats)
    try:
        while not stop_event.is_set() and (max_messages is None or stats.processed < max_messages):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise RuntimeError(f"fatal Kafka error: {error}")
                if error.code() != KafkaError._PARTITION_EOF:
                    logger.warning("consumer error: %s", error)
                continue
            env = Envelope(msg.value() or b"", msg.key(), msg.partition() or 0, msg.offset() or 0)
            with tracer.start_as_current_span(
                f"process {topic}",
                context=extract_context(msg.headers()),  # type: ignore[arg-type]
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    MESSAGING_SYSTEM: "kafka",
                    MESSAGING_OPERATION_TYPE: "process",
                    MESSAGING_DESTINATION: topic,
                    MESSAGING_PARTITION: str(env.partition),
                    MESSAGING_CONSUMER_GROUP: group,
                    MESSAGING_KAFKA_OFFSET: env.offset,
                    MESSAGING_KAFKA_KEY: (env.key or b"").decode("utf-8", "replace"),
                    "adwatch.channel": channel.name,
                },
            ) as span:
                outcome = run_pipeline(stages, env)
                span.set_attribute("adwatch.outcome", outcome)
            if outcome == "stopped":
                break  # not committed: the record is redelivered after restart
            if hooks.before_commit:
                hooks.before_commit(env)
            consumer.commit(message=msg, asynchronous=False)
            stats.processed += 1
            stats.outcomes[outcome] += 1
            _update_lag(consumer, topic, env, lags, channel.name)
    finally:
        _close(consumer, producer, channel, ops)
    logger.info("notifier stopped: channel=%s processed=%d", channel.name, stats.processed)
    return stats


def _update_lag(consumer: Consumer, topic: str, env: Envelope, lags: dict[int, int], channel: str) -> None:
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, env.partition), cached=True)
    except Exception:
        return
    lags[env.partition] = max(0, high - env.offset - 1)
    metrics.CONSUMER_LAG.labels(channel).set(sum(lags.values()))


def _ready(admin: AdminClient, redis_client: object) -> bool:
    admin.list_topics(timeout=2)
    return bool(redis_client.ping())  # type: ignore[attr-defined]


def _close(consumer: Consumer, producer: object, channel: object, ops: OpsServer | None) -> None:
    for action in (consumer.close, lambda: producer.flush(5), channel.close):  # type: ignore[attr-defined]
        try:
            action()
        except Exception as exc:
            logger.debug("close failed: %s", type(exc).__name__)
    if ops:
        ops.stop()
    time.sleep(0)
