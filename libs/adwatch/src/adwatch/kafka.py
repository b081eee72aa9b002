"""confluent-kafka factories with production defaults, topic creation and dead letters."""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from adwatch.contracts import TOPIC_CONFIGS, TOPIC_PARTITIONS, DeadLetter, encode
from adwatch.errors import AdwatchError

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 1_000_000,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    # tansu's group join waits session.timeout.ms / 2: keep it short locally.
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
}


class KafkaSetupError(AdwatchError):
    """Topics could not be created or the broker did not answer."""


def make_producer(bootstrap: str, **overrides: Any) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **overrides})


def make_consumer(bootstrap: str, group_id: str, **overrides: Any) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, **CONSUMER_DEFAULTS, **overrides})


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int] | Iterable[str] = TOPIC_PARTITIONS,
    timeout_s: float = 30.0,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create the topics that do not exist yet (partition counts and configs from the contract).

    ``configs``: topic configs by name beyond the contract's (a renamed compacted topic, in tests).
    """
    wanted = dict(topics) if isinstance(topics, Mapping) else {t: TOPIC_PARTITIONS.get(t, 1) for t in topics}
    configs = {**TOPIC_CONFIGS, **(configs or {})}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [
        NewTopic(name, num_partitions=n, replication_factor=1, config=dict(configs.get(name, {})))
        for name, n in wanted.items()
        if name not in existing
    ]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise KafkaSetupError(f"could not create topic {name!r}: {exc}") from exc
    # Only the topics made here are waited for with their partitions: a topic that already
    # existed keeps the partition count its owner gave it (a renamed alerts topic with 3).
    created = {t.topic: t.num_partitions for t in missing}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=timeout_s).topics
        if all(name in meta and len(meta[name].partitions) == n for name, n in created.items()):
            return
        time.sleep(0.1)
    raise KafkaSetupError(f"topics not visible after {timeout_s}s: {sorted(created)}")


def header_value(headers: Headers | None, name: str) -> bytes | None:
    for key, value in headers or []:
        if key == name:
            return value
    return None


DLQ_WHOLE_PAYLOAD_BYTES = 256 * 1024  # parked whole (text and base64) up to this size
DLQ_TEXT_PREFIX_CHARS = 64 * 1024  # beyond it: this much readable text ...
DLQ_MAX_B64_CHARS = 800 * 1024  # ... and the base64 only while the letter stays under 1 MB


def dead_letter(
    producer: Producer,
    topic: str,
    *,
    source_topic: str,
    stage: str,
    reason: str,
    payload: bytes | str,
    key: bytes | str | None = None,
    partition: int = -1,
    offset: int = -1,
    channel: str | None = None,
    attempts: int = 0,
    headers: Sequence[tuple[str, bytes | str | None]] | None = None,
    target: str = "",
    reason_code: str = "",
) -> DeadLetter:
    """Park a record with the reason; failures are data, never silently dropped.

    The original bytes travel base64 (``payload_b64``) and the original headers are kept, both
    on the record and on the DLQ message itself (so ``traceparent`` links the failure to its trace).
    """
    raw = payload if isinstance(payload, bytes) else payload.encode()
    text = raw.decode("utf-8", "replace")
    # A large record parked whole would exceed the broker's 1 MB message limit (text + base64 is
    # 2.3x it), and a dead letter that cannot be written is retried forever: keep a readable
    # prefix, the whole bytes only while they fit, and the size and digest to find the original.
    digest = ""
    b64 = base64.b64encode(raw).decode()
    if len(raw) > DLQ_WHOLE_PAYLOAD_BYTES:
        digest = hashlib.sha256(raw).hexdigest()
        text = text[:DLQ_TEXT_PREFIX_CHARS] + "…"
        if len(b64) > DLQ_MAX_B64_CHARS:
            b64 = ""
    kept: list[tuple[str, str | bytes | None]] = [
        (k, v.encode() if isinstance(v, str) else v) for k, v in (headers or ()) if v is not None
    ]
    record = DeadLetter(
        source_topic=source_topic,
        stage=stage,
        reason=reason,
        payload=text,
        partition=partition,
        offset=offset,
        channel=channel,
        attempts=attempts,
        failed_at_ms=int(time.time() * 1000),
        payload_b64=b64,
        payload_size=len(raw),
        payload_sha256=digest,
        headers={k: header_text(v) for k, v in kept if isinstance(v, bytes)},
        key_b64=base64.b64encode(key if isinstance(key, bytes) else key.encode()).decode() if key else "",
        target=target,
        reason_code=reason_code,
    )
    producer.produce(topic, value=encode(record), key=key, headers=kept or None)
    return record


def header_text(value: bytes) -> str:
    """A header value as text: UTF-8 when it is, else ``base64:<b64>`` (reversed by :func:`header_bytes`)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(value).decode()


def header_bytes(text: str) -> bytes:
    return base64.b64decode(text[7:]) if text.startswith("base64:") else text.encode()
