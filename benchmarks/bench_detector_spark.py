"""Throughput of the detector's Spark job from the embedded broker (local[2]).

Produces N synthetic AdEvents (16 segments, event time spread over an hour), then runs
the full job (Python Kafka source -> parse -> stateful detection -> sinks) with
trigger(availableNow) at a few maxOffsetsPerTrigger sizes, each from a fresh checkpoint.
Reports events/s over the data batches after the first (the first pays JVM/worker
warm-up) and the batch durations, to compare with the trigger interval.

Beside each size it runs the ceiling on the same topic in the same Spark session: the same
source and parse, then a stateless per-batch aggregation per segment and minute (what the job
does, without state, Python rules or sinks). The last line is for scripts (issue #16):
``ceiling_ratio=<detector/ceiling> detector_eps=<n> ceiling_eps=<n>`` at the largest size.

    .venv/bin/python benchmarks/bench_detector_spark.py --events 2000000 --sizes 100000,500000,1000000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adwatch.config import CommonSettings
from adwatch.contracts import AD_FORMATS, AdEvent, encode
from adwatch.kafka import ensure_topics, make_producer
from adwatch_detector.job import explode_segments, read_events, run_available
from adwatch_detector.metrics import DetectorMetrics
from adwatch_detector.settings import DetectorSettings
from adwatch_detector.sinks import BatchWriter
from adwatch_detector.spark import build_spark
from adwatch_dev.infra import EmbeddedInfra

COUNTRIES = ("US", "DE", "FR", "BR")


def produce(bootstrap: str, topic: str, n: int, partitions: int = 6) -> float:
    rng = np.random.default_rng(1)
    t0_ms = 1_790_000_000_000
    times = np.sort(rng.integers(0, 3_600_000, n)) + t0_ms
    country = rng.integers(0, len(COUNTRIES), n)
    fmt = rng.integers(0, len(AD_FORMATS), n)
    is_click = rng.random(n) < 0.02
    producer = make_producer(bootstrap, **{"compression.type": "none"})
    start = time.perf_counter()
    for i in range(n):
        ev = AdEvent(
            event_id=f"e{i}",
            event_time_ms=int(times[i]),
            event_type="click" if is_click[i] else "impression",
            country=COUNTRIES[country[i]],
            ad_format=AD_FORMATS[fmt[i]],
            app_id="app-1",
            placement_id="pl-1",
            campaign_id="cmp-1",
            user_hash=f"u{i % 100_000:06d}",
            revenue_usd=0.0 if is_click[i] else 0.0021,
            impression_id=f"e{i - 1}" if is_click[i] else None,
        )
        while True:
            try:
                producer.produce(topic, value=encode(ev), partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    return n / (time.perf_counter() - start)


def events_per_s(progress: list[dict]) -> tuple[float, list[float]]:
    """Events/s over the data batches after the first (JVM and worker warm-up), and every batch's seconds."""
    data = [p for p in progress if p["numInputRows"] > 0]
    durations = [p["durationMs"]["triggerExecution"] / 1000 for p in data]
    rows_after = sum(p["numInputRows"] for p in data[1:])
    return (rows_after / sum(durations[1:]) if len(data) > 1 else float("nan")), durations


def run_ceiling(spark: SparkSession, settings: DetectorSettings, common: CommonSettings) -> list[dict]:
    """The stateless ceiling: the job's source and parse, then a per-batch count per segment-minute."""
    events = explode_segments(read_events(spark, settings, common))

    def aggregate(batch: DataFrame, _batch_id: int) -> None:
        batch.groupBy("segment", F.window("event_time", f"{settings.window_seconds} seconds")).agg(
            F.count(F.lit(1)).alias("events"), F.sum("revenue_usd").alias("revenue"), F.sum("orphan").alias("orphans")
        ).write.format("noop").mode("overwrite").save()

    query = (
        events.writeStream.queryName(settings.query_name)
        .option("checkpointLocation", settings.checkpoint_dir)
        .foreachBatch(aggregate)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination(1800)
    return list(query.recentProgress)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--sizes", default="100000,500000,1000000")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-detector-"))
    infra = EmbeddedInfra(work / "infra").start()
    try:
        bootstrap = infra.kafka_bootstrap
        ensure_topics(bootstrap, {"bench-events": 6, "bench-alerts": 3, "bench-dlq": 1})
        rate = produce(bootstrap, "bench-events", args.events)
        print(f"produced {args.events:,} events at {rate:,.0f}/s")
        spark = build_spark("local[2]", shuffle_partitions=4)
        common = CommonSettings(
            kafka_bootstrap=bootstrap, redis_url=infra.redis_url, clickhouse_url=f"chdb://{work / 'ch'}"
        )
        print(
            "| maxOffsetsPerTrigger | batches | events/s (after 1st batch) | batch s (median / max) | first batch s "
            "| ceiling events/s | detector / ceiling |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        detector_eps = ceiling_eps = float("nan")
        for size in [int(s) for s in args.sizes.split(",")]:

            def settings_for(name: str, size: int = size) -> DetectorSettings:
                return DetectorSettings(
                    checkpoint_dir=str(work / f"ck-{name}-{size}"),
                    input_topic="bench-events",
                    alerts_topic="bench-alerts",
                    dlq_topic="bench-dlq",
                    max_offsets_per_trigger=size,
                    query_name=f"bench_{name}_{size}",
                    source="python",
                    shuffle_partitions=4,
                )

            ceiling_eps, _ = events_per_s(run_ceiling(spark, settings_for("ceiling"), common))
            settings = settings_for("detector")
            writer = BatchWriter(settings, common, DetectorMetrics(CollectorRegistry()))
            try:
                query = run_available(spark, settings, common, writer, timeout_s=1800)
            finally:
                writer.close()
            detector_eps, durations = events_per_s(query.recentProgress)
            print(
                f"| {size:,} | {len(durations)} | {detector_eps:,.0f} | {statistics.median(durations):.1f} / "
                f"{max(durations):.1f} | {durations[0]:.1f} | {ceiling_eps:,.0f} | {detector_eps / ceiling_eps:.2f} |",
                flush=True,
            )
        print(
            f"ceiling_ratio={detector_eps / ceiling_eps:.3f} detector_eps={detector_eps:.0f} ceiling_eps={ceiling_eps:.0f}"
        )
        spark.stop()
    finally:
        infra.stop()


if __name__ == "__main__":
    main()
