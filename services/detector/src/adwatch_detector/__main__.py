"""``adwatch-detector [run]`` starts the streaming job; ``adwatch-detector backtest ...`` scores rules offline."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adwatch.service import Service
    from adwatch_detector.settings import DetectorSettings

logger = logging.getLogger("adwatch_detector")


def run(argv: Sequence[str] = ()) -> int:
    """Run the streaming query until SIGTERM/SIGINT, then stop it gracefully and flush."""
    argparse.ArgumentParser(prog="adwatch-detector run", description="Run the streaming detector.").parse_args(argv)
    from adwatch.service import service
    from adwatch_detector.settings import DetectorSettings

    with service("detector", DetectorSettings) as svc:
        return run_query(svc)


def run_query(svc: Service[DetectorSettings]) -> int:
    """Start the query, wait for the stop event or a failure, let the running batch finish."""
    from adwatch_detector.job import build_query
    from adwatch_detector.metrics import DetectorMetrics, ProgressListener
    from adwatch_detector.sinks import BatchWriter
    from adwatch_detector.spark import build_spark

    settings, common = svc.settings, svc.common
    metrics = svc.metrics(DetectorMetrics)
    spark = build_spark(settings.spark_master, shuffle_partitions=settings.shuffle_partitions)
    logger.info("spark master %s (application %s)", spark.sparkContext.master, spark.sparkContext.applicationId)
    spark.streams.addListener(ProgressListener(metrics, settings.query_name))
    writer = BatchWriter(settings, common, metrics)
    code = 0
    try:
        query = build_query(spark, settings, common, writer)
        svc.ready_when(lambda: bool(query.isActive))
        logger.info("query %s started (checkpoint %s)", settings.query_name, settings.checkpoint_dir)
        while not svc.stop.is_set():
            if query.awaitTermination(1):
                exc = query.exception()
                if exc is not None:
                    logger.error("query failed: %s", exc)
                    code = 1
                break
        if query.isActive:
            # let the running micro-batch finish (its alerts flushed, its commit written), then stop
            deadline = time.monotonic() + settings.flush_timeout_seconds
            while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
                time.sleep(0.2)
            query.stop()
    finally:
        writer.close()
        spark.stop()
    return code


def backtest(argv: list[str]) -> int:
    """Replay stored history through a rule set (``adwatch-detector backtest --help``)."""
    from adwatch_detector import backtest as replay

    return int(replay.main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    from adwatch.service import dispatch

    return dispatch("adwatch-detector", argv, {"run": run, "backtest": backtest}, default="run")


if __name__ == "__main__":
    raise SystemExit(main())
