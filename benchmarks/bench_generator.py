"""Generator throughput: events/s generated + encoded to /dev/null, and produced to the embedded broker.

Run: .venv/bin/python benchmarks/bench_generator.py [--seconds 10] [--rate 100000] [--no-kafka]
Prints markdown table rows (target: >= 100,000 events/s). ``--no-kafka``: the /dev/null row only
(no embedded broker), e.g. to compare two checkouts in one run (``bench_generator_compare.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from prometheus_client import CollectorRegistry

from adwatch.kafka import ensure_topics
from adwatch_dev.infra import embedded_infra
from adwatch_generator.metrics import GeneratorMetrics
from adwatch_generator.sink import FileSink, KafkaSink, Sink
from adwatch_generator.traffic import TrafficModel

START_MS = 1_736_960_400_000  # 2025-01-15T17:00:00Z: near the daily mean of the traffic shape
COMMAND = "python benchmarks/bench_generator.py"


def measure(sink: Sink, rate: float, seconds: float, flush: bool = False) -> tuple[int, float]:
    """Generate event time from START_MS until ``seconds`` of wall time pass; (events, events/s)."""
    model = TrafficModel(seed=1, rate=rate)
    total = 0
    began = time.perf_counter()
    for batch in model.generate(START_MS, START_MS + 24 * 3_600_000):
        sink.send(batch)
        total += len(batch)
        if time.perf_counter() - began >= seconds:
            break
    if flush and isinstance(sink, KafkaSink):
        sink.flush(60)
    elapsed = time.perf_counter() - began
    return total, total / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100_000, help="model rate (sets the slice size)")
    parser.add_argument("--no-kafka", action="store_true", help="only generate + encode to /dev/null")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    metrics = GeneratorMetrics(CollectorRegistry())
    devnull = FileSink("/dev/null", metrics)
    events, per_s = measure(devnull, args.rate, args.seconds)
    devnull.close()
    rows.append(("generate + encode JSON -> /dev/null", events, per_s))
    if args.no_kafka:
        _print(rows, args.seconds)
        return 0
    with embedded_infra() as infra:
        topic = "bench-ad-events"
        ensure_topics(infra.kafka_bootstrap, {topic: 6})
        for label, overrides in (
            ("generate + encode + produce (embedded broker, lz4, acks=all, idempotent)", {}),
            ("same, no compression", {"compression.type": "none"}),
        ):
            sink = KafkaSink(infra.kafka_bootstrap, topic, metrics, trace_sample=0.001, **overrides)
            events, per_s = measure(sink, args.rate, args.seconds, flush=True)
            sink.close()
            rows.append((label, events, per_s))
    _print(rows, args.seconds)
    return 0


def _print(rows: list[tuple[str, int, float]], seconds: float) -> None:
    print("| path | events | events/s | command |")
    print("|---|---:|---:|---|")
    for label, events, per_s in rows:
        print(f"| {label} | {events:,} | {per_s:,.0f} | `{COMMAND} --seconds {seconds:g}` |")


if __name__ == "__main__":
    sys.exit(main())
