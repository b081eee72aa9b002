"""Detector test fixtures: one shared SparkSession and a synthetic AdEvent producer.

Spark starts in 6-7 s and a query's first batch takes 7-13 s, so the whole run shares one
session (local[2], few shuffle partitions). Events are produced with controlled event
times (backfill-style) so baselines warm up without waiting on the wall clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import pytest

from adwatch.contracts import AdEvent, encode
from adwatch.kafka import make_producer

MINUTE_MS = 60_000
# A fixed, minute-aligned start far from "now": event time is all that matters.
T0_MS = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE_MS


@dataclass(frozen=True)
class SegmentTraffic:
    """Traffic of one segment: impressions per minute and CTR, optionally scaled over a span."""

    country: str
    ad_format: str
    impressions_per_min: int
    ctr: float
    ctr_factor: float = 1.0
    factor_from_min: int = 10**9  # minute index where ctr_factor starts to apply
    factor_until_min: int = 10**9  # ...and where it stops
    app_id: str = "app1"
    campaign_id: str = "c1"
    active_until_min: int = 10**9  # no traffic from this minute on (a segment that goes away)


def synth_events(
    segments: Sequence[SegmentTraffic], minutes: int, start_ms: int = T0_MS, seed: int = 7, trace_every: int = 500
) -> list[tuple[bytes, bytes, list[tuple[str, bytes]] | None]]:
    """(key, value, headers) of impressions and clicks, minute by minute (numpy, deterministic)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[bytes, bytes, list[tuple[str, bytes]] | None]] = []
    n = 0
    for minute in range(minutes):
        base = start_ms + minute * MINUTE_MS
        for s in segments:
            if minute >= s.active_until_min:
                continue
            ctr = s.ctr * (s.ctr_factor if s.factor_from_min <= minute < s.factor_until_min else 1.0)
            n_imp = int(rng.poisson(s.impressions_per_min))
            offsets = np.sort(rng.integers(0, MINUTE_MS - 2000, n_imp))
            clicked = rng.random(n_imp) < ctr
            for i in range(n_imp):
                n += 1
                imp_id = f"i{n}"
                ev = AdEvent(
                    event_id=imp_id,
                    event_time_ms=int(base + offsets[i]),
                    event_type="impression",
                    country=s.country,
                    ad_format=s.ad_format,
                    app_id=s.app_id,
                    placement_id="p1",
                    campaign_id=s.campaign_id,
                    user_hash=f"u{n % 997}",
                    revenue_usd=0.002,
                )
                headers = None
                if n % trace_every == 0:
                    tp = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
                    headers = [("traceparent", tp.encode())]
                out.append((None, encode(ev), headers))
                if clicked[i]:
                    click = msgspec.structs.replace(
                        ev,
                        event_id=f"c{n}",
                        event_type="click",
                        event_time_ms=ev.event_time_ms + 1000,
                        impression_id=imp_id,
                        revenue_usd=0.0,
                    )
                    out.append((None, encode(click), None))
    return out


def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes, list | None]]) -> int:
    """Produce records round-robin over the topic's partitions, flush, return the count.

    Explicit round-robin keeps every partition at the same event time, as a live producer
    does (librdkafka's sticky partitioner would skew a backfill by whole minutes).
    """
    producer = make_producer(bootstrap, **{"linger.ms": 5})
    n_parts = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    for i, (key, value, headers) in enumerate(records):
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, partition=i % n_parts)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    return len(records)


@pytest.fixture
def produce_events(kafka: str) -> Callable[..., int]:
    def _produce(topic: str, records: Sequence[tuple[bytes | None, bytes, list | None]]) -> int:
        return produce(kafka, topic, records)

    return _produce
