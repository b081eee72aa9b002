"""One channel's notifier: wire the channel, ledger, stages and run loop to Kafka and Redis, then run.

Usable in-process (tests call :func:`run` with a stop event) and from the CLI.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from adwatch.config import CommonSettings, load_settings
from adwatch.contracts import COMPACTED
from adwatch.kafka import ensure_topics, make_consumer
from adwatch.service import Heartbeat
from adwatch.storage import make_redis
from adwatch.telemetry import RouteHandler
from adwatch_notifier.api import mount_routes
from adwatch_notifier.channels import build_channel
from adwatch_notifier.grouping import GroupFlusher, GroupStore, RedisGroupStore
from adwatch_notifier.inhibit import RedisInhibitStore
from adwatch_notifier.journal import JournaledGroupStore, JournaledLedger, JournaledSilenceStore, KafkaJournal
from adwatch_notifier.ledger import Ledger, LedgerUnavailableError, RedisLedger
from adwatch_notifier.loop import (
    KafkaDeadLetters,
    RecordProcessor,
    RunStats,
    consume,
    failure_counter,
    group_parker,
)
from adwatch_notifier.matchers import allow_dimensions
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.routing import load_routes
from adwatch_notifier.schedule import RetrySchedule
from adwatch_notifier.settings import NotifierSettings, check_channel_settings, check_route_targets
from adwatch_notifier.silences import RedisSilenceStore, SilenceStore
from adwatch_notifier.stages import Lease, SilenceStage, build_stages

logger = logging.getLogger(__name__)

__all__ = ["RunStats", "run"]


def run(
    settings: NotifierSettings,
    stop_event: threading.Event,
    max_messages: int | None = None,
    *,
    common: CommonSettings | None = None,
    now: Callable[[], float] = time.time,
    stream: IO[str] | None = None,
    metrics: NotifierMetrics | None = None,
    ready_when: Callable[[Callable[[], bool]], None] | None = None,
    mount: Callable[[str, RouteHandler], None] | None = None,
    heartbeat: Heartbeat | None = None,
) -> RunStats:
    """Consume and deliver until ``stop_event`` is set or ``max_messages`` records are committed.

    ``now`` is the wall clock of leases and cooldowns (seconds). ``ready_when`` receives the
    readiness check (broker and Redis answer): the service skeleton's ``/readyz`` serves it.
    ``mount`` puts the HTTP routes (silence API, Slack clicks) on the ops server when configured.
    ``heartbeat`` is beaten on every turn of the poll loop (the skeleton's ``/healthz``).
    ``metrics``: the entry point's, on the registry its ops server serves (else a private one).
    """
    common = common or load_settings(CommonSettings)
    metrics = metrics or NotifierMetrics(CollectorRegistry())
    check_channel_settings(settings)
    allow_dimensions(settings.dimensions)
    table = load_routes(settings.routes_file)
    check_route_targets(settings, [r.target for r in table.routes if r.channel == settings.channel])
    channel = build_channel(settings, common.grafana_url, stream)
    topic, group = settings.alerts_topic, settings.consumer_group
    journal_topic = settings.deliveries_topic
    topics = [topic, settings.dlq_topic, *([journal_topic] if journal_topic else [])]
    ensure_topics(common.kafka_bootstrap, topics, configs={journal_topic: COMPACTED} if journal_topic else None)
    redis_client = make_redis(common.redis_url)
    redis_ledger = RedisLedger(redis_client, settings.redis_prefix, channel.name)
    ledger: Ledger = redis_ledger
    redis_groups = RedisGroupStore(redis_client, settings.redis_prefix, channel.name)
    groups: GroupStore = redis_groups
    redis_silences = RedisSilenceStore(redis_client, settings.redis_prefix)
    silences: SilenceStore = redis_silences
    journal = None
    if journal_topic:  # episode records also in a compacted topic, restored when Redis lost them
        journal = KafkaJournal(common.kafka_bootstrap, journal_topic, timeout_s=settings.restore_timeout_seconds)
        ledger = JournaledLedger(
            redis_ledger,
            journal,
            channel.name,
            ttl_s=settings.idempotency_ttl_seconds,
            metrics=metrics,
            now=now,
            groups=redis_groups,
            silences=redis_silences,
        )
        groups = JournaledGroupStore(redis_groups, ledger)
        silences = JournaledSilenceStore(redis_silences, journal, now)
        _restore_at_start(ledger)
    if mount is not None:
        mount_routes(mount, settings, redis_client, metrics, now, silences=silences)
    lease = Lease(f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}", settings.claim_lease_seconds)
    stages = build_stages(
        settings,
        channel,
        table,
        ledger,
        lease,
        stop_event,
        now=now,
        on_failure=failure_counter(metrics, channel.name),
        silences=silences,
        inhibitions=RedisInhibitStore(redis_client, settings.redis_prefix),
        groups=groups,
    )
    dead_letters = KafkaDeadLetters(common.kafka_bootstrap, topic, settings.dlq_topic)
    specs = {i: r.group for i, r in enumerate(table.routes) if r.channel == channel.name and r.group is not None}
    flusher = None
    if specs:
        flusher = GroupFlusher(
            groups,
            channel,
            specs,
            owner=lease.owner,
            now=now,
            lease_s=settings.claim_lease_seconds + settings.request_timeout_seconds,
            on_sent=lambda _n, _c: metrics.notifications.labels(channel.name, "group_delivered").inc(),
            on_failure=failure_counter(metrics, channel.name),
            on_deferred=lambda reason: metrics.deferred.labels(channel.name, reason).inc(),
            slots=ledger,
            policy=settings.retry_policy,
            park=group_parker(dead_letters, metrics, channel.name),
            muted=SilenceStage(silences, table.maintenance, now=now, refresh_s=settings.silence_refresh_seconds).muted,
            on_suppressed=lambda reason: metrics.suppressed.labels(channel.name, reason).inc(),
            pool=ThreadPoolExecutor(settings.delivery_workers, thread_name_prefix=f"group-{channel.name}"),
        )
    process = RecordProcessor(stages, channel.name, ledger, dead_letters, metrics)
    consumer = make_consumer(common.kafka_bootstrap, group)
    stats = RunStats()
    if ready_when is not None:
        admin = AdminClient({"bootstrap.servers": common.kafka_bootstrap})
        ready_when(lambda: _ready(admin, redis_client))
    logger.info("notifier started: channel=%s topic=%s group=%s", channel.name, topic, group)
    try:
        consume(
            consumer,
            process,
            topic=topic,
            group=group,
            stop=stop_event,
            max_messages=max_messages,
            stats=stats,
            schedule=RetrySchedule(settings.max_held_records),
            heartbeat=heartbeat,
            tick=flusher.tick if flusher is not None else None,
            workers=settings.delivery_workers,
            drain_s=settings.request_timeout_seconds,
        )
    finally:
        if flusher is not None:
            flusher.close(settings.request_timeout_seconds)  # a group send under way finishes first
        for action in (consumer.close, dead_letters.close, channel.close, *([journal.close] if journal else [])):
            try:
                action()
            except Exception as exc:
                logger.debug("close failed: %s", type(exc).__name__)
    logger.info("notifier stopped: channel=%s processed=%d", channel.name, stats.processed)
    return stats


def _restore_at_start(ledger: JournaledLedger) -> None:
    """Before the first poll; with Redis or the broker down the first lookup that misses does it."""
    try:
        ledger.ensure_restored()
    except LedgerUnavailableError as exc:
        logger.warning("episode records not restored at start (tried again on the first miss): %s", exc)


def _ready(admin: AdminClient, redis_client: object) -> bool:
    admin.list_topics(timeout=2)
    return bool(redis_client.ping())  # type: ignore[attr-defined]
