"""The detector's commands: ``adwatch-detector [run]`` streams, ``adwatch-detector backtest ...`` scores rules offline.

:func:`run_query` is the streaming run: start the query, wait for the stop event or a failure,
then let the running micro-batch finish before stopping (its alerts flushed, its commit written).
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from adwatch_detector.rules.state import UPGRADE
from adwatch_detector.settings import DetectorSettings

if TYPE_CHECKING:
    from adwatch.service import Service

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
    from adwatch.service import Heartbeat
    from adwatch_detector.job import build_query
    from adwatch_detector.metrics import DetectorMetrics, ProgressListener
    from adwatch_detector.sinks import BatchWriter
    from adwatch_detector.spark import build_spark
    from adwatch_detector.watcher import StreamWatcher

    settings, common = svc.settings, svc.common
    metrics = svc.metrics(DetectorMetrics)
    spark = build_spark(settings.spark_master, shuffle_partitions=settings.shuffle_partitions)
    sc = spark.sparkContext
    logger.info(
        "spark master %s (application %s)",
        sc.master,
        sc.applicationId,
        extra={"spark_master": sc.master, "spark_application_id": sc.applicationId},
    )
    heartbeat = Heartbeat()
    spark.streams.addListener(ProgressListener(metrics, settings.query_name, on_progress=heartbeat.beat))
    svc.alive_when(heartbeat, settings.liveness_stall_seconds, f"query {settings.query_name}")
    writer = BatchWriter(settings, common, metrics)
    watching = threading.Event()
    watcher: threading.Thread | None = None
    try:
        query = build_query(spark, settings, common, writer)
        watcher = StreamWatcher.build(query, settings, writer, metrics).start(watching)  # no_data, partition_lagging
        svc.ready_when(lambda: bool(query.isActive))
        logger.info(
            "query %s started (checkpoint %s)",
            settings.query_name,
            settings.checkpoint_dir,
            extra={"query": settings.query_name, "checkpoint_dir": settings.checkpoint_dir},
        )
        return wait_then_stop(query, svc.stop, settings.flush_timeout_seconds)
    finally:
        watching.set()
        if watcher is not None:
            watcher.join(settings.flush_timeout_seconds)  # its last publish done before the producer closes
        writer.close()
        spark.stop()


class StreamingQuery(Protocol):
    """The part of pyspark's ``StreamingQuery`` the stop loop uses, in its names (a fake stands in for tests)."""

    @property
    def isActive(self) -> bool: ...

    @property
    def status(self) -> dict[str, Any]: ...

    def awaitTermination(self, timeout: int | None = None) -> bool | None: ...

    def exception(self) -> Any: ...

    def stop(self) -> None: ...


_SCHEMA_ERRORS = (
    "STATE_STORE_KEY_SCHEMA_NOT_COMPATIBLE",
    "STATE_STORE_VALUE_SCHEMA_NOT_COMPATIBLE",
    "StateSchemaNotCompatible",
)


def failure_hint(message: str) -> str | None:
    """What to do about a failure the checkpoint causes: Spark refuses state written under another
    state schema (a version-1 checkpoint grouped by country and ad_format; segments are one key now)."""
    if any(code in message for code in _SCHEMA_ERRORS):
        return "the checkpoint holds state of another detector version (docs/segments.md). " + UPGRADE
    return None


def wait_then_stop(
    query: StreamingQuery,
    stop: threading.Event,
    flush_timeout_s: float,
    *,
    poll_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Wait for ``stop`` or the query's end; then let a running micro-batch finish (at most
    ``flush_timeout_s``: its alerts flushed, its commit written) and stop the query.

    Returns 1 when the query failed, else 0.
    """
    code = 0
    while not stop.is_set():
        if query.awaitTermination(1):
            exc = query.exception()
            if exc is not None:
                hint = failure_hint(str(exc))
                logger.error("query failed: %s%s", exc, f" -- {hint}" if hint else "", extra={"error": str(exc)})
                code = 1
            break
    if query.isActive:
        deadline = clock() + flush_timeout_s
        while query.isActive and query.status.get("isTriggerActive") and clock() < deadline:
            time.sleep(poll_s)
        query.stop()
    return code


def backtest(argv: list[str]) -> int:
    """Replay stored history through a rule set (``adwatch-detector backtest --help``)."""
    from adwatch_detector import backtest as replay

    return int(replay.main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    from adwatch.service import dispatch

    return dispatch("adwatch-detector", argv, {"run": run, "backtest": backtest}, default="run")
