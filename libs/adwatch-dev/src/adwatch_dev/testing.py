"""Shared pytest fixtures: the real embedded broker and Redis, uuid-named resources.

Register with ``pytest_plugins = ["adwatch_dev.testing"]`` in a conftest. The servers are
session-scoped (started once, stopped by PID at the end); every test gets its own topic
names, consumer groups and key prefixes, so nothing has to restart between tests.
"""

from __future__ import annotations

import contextlib
import gc
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import msgspec
import pytest

from adwatch.contracts import decode
from adwatch.kafka import ensure_topics, make_consumer
from adwatch_dev.infra import EmbeddedInfra, poll_until

__all__ = [
    "PER_ALERT_ROUTES",
    "TopicReader",
    "close_kafka_clients",
    "consume_all",
    "missing_tool",
    "poll_until",
    "unique",
]

S = TypeVar("S", bound=msgspec.Struct)


PER_ALERT_ROUTES = """\
routes:
  - channel: slack
  - channel: pagerduty
    severities: [high, critical]
  - channel: email
    severities: [critical]
  - channel: webhook
  - channel: console
"""
"""The built-in escalation without grouping (the built-in default groups Slack, PagerDuty and email
by alert type): for tests of one alert's own path, its delivery and its trace."""


def missing_tool(reason: str) -> NoReturn:
    """Skip a test whose tool (container engine, Chromium) is missing here; fail under
    ``CI=true``, where `make test` installs every tool and a skip would hide a broken install."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedInfra]:
    """The embedded broker and Redis, shared by the whole test session."""
    # Redis with a password, as in the release: every test that reaches it authenticates
    embedded = EmbeddedInfra(Path(tmp_path_factory.mktemp("infra")), redis_password=secrets.token_hex(12)).start()
    try:
        yield embedded
    finally:
        # while the broker still answers: otherwise a client that outlives the session keeps
        # reconnecting and librdkafka prints "Connection refused" after pytest's summary until exit
        close_kafka_clients()
        embedded.stop()


def close_kafka_clients() -> int:
    """Close every Kafka consumer and producer still alive; returns how many were found.

    Tests leave clients behind in ways no fixture sees: never closed and kept by a reference
    cycle, by a module global, or by the traceback of a failed test (pytest keeps the last one
    in ``sys.last_traceback`` for post-mortem debugging). Queued messages are dropped.
    """
    from confluent_kafka import Consumer, Producer

    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if getattr(sys, name, None) is not None:
            setattr(sys, name, None)
    gc.collect()  # what only a cycle kept is freed (and destroyed) here
    found = 0
    for obj in gc.get_objects():
        if isinstance(obj, Consumer):
            found += 1
            with contextlib.suppress(RuntimeError):  # already closed
                obj.close()
        elif isinstance(obj, Producer):
            found += 1
            with contextlib.suppress(RuntimeError):
                obj.purge()
                obj.close()
    return found


@pytest.fixture(scope="session")
def kafka(infra: EmbeddedInfra) -> str:
    """Bootstrap address of the embedded broker."""
    return infra.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(infra: EmbeddedInfra) -> str:
    return infra.redis_url


@pytest.fixture
def topic_factory(kafka: str) -> Callable[..., str]:
    """Create a uuid-named topic: ``topic_factory("alerts", partitions=3)``."""

    def create(prefix: str = "topic", partitions: int = 1) -> str:
        name = unique(prefix)
        ensure_topics(kafka, {name: partitions})
        return name

    return create


@pytest.fixture
def topic(topic_factory: Callable[..., str]) -> str:
    return topic_factory()


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Read ``expected`` records from the start of ``topic`` (or fail after the timeout)."""
    consumer = make_consumer(bootstrap, unique("reader"))
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                records.append(msg)
    finally:
        consumer.close()
    return records


class TopicReader:
    """Reads a topic from the start and keeps every record it has seen (key, value, seen at)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = make_consumer(bootstrap, unique("reader"))
        self.consumer.subscribe([topic])
        self.records: list[tuple[bytes | None, bytes, float]] = []

    def drain(self, seconds: float = 0.5) -> list[tuple[bytes | None, bytes, float]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is not None and not msg.error():
                self.records.append((msg.key(), msg.value() or b"", time.time()))
        return self.records

    def decoded(self, record_type: type[S], seconds: float = 0.3) -> list[S]:
        return [decode(value, record_type) for _, value, _ in self.drain(seconds)]

    def close(self) -> None:
        self.consumer.close()
