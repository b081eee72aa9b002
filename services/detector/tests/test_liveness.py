"""Liveness of a real streaming query: /healthz fails while a micro-batch is wedged, recovers after."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from adwatch.service import Heartbeat
from adwatch.telemetry import OpsServer
from adwatch_detector.metrics import DetectorMetrics, ProgressListener
from adwatch_dev.testing import poll_until

pytestmark = pytest.mark.spark


def _healthz(port: int) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_a_wedged_micro_batch_fails_healthz_and_the_next_progress_heals_it(spark: Any, tmp_path: Path) -> None:
    heartbeat = Heartbeat()
    listener = ProgressListener(DetectorMetrics(CollectorRegistry()), "liveness_test", on_progress=heartbeat.beat)
    spark.streams.addListener(listener)
    release, wedged = threading.Event(), threading.Event()

    def write(batch: Any, batch_id: int) -> None:
        if batch_id == 2:  # a sink that hangs (a store that never answers)
            wedged.set()
            release.wait(120)

    ops = OpsServer(0, host="127.0.0.1", alive=lambda: heartbeat.stale(3.0, "query liveness_test")).start()
    query = (
        spark.readStream.format("rate")
        .option("rowsPerSecond", 20)
        .load()
        .writeStream.queryName("liveness_test")
        .foreachBatch(write)
        .option("checkpointLocation", str(tmp_path / "ck"))
        .trigger(processingTime="500 milliseconds")
        .start()
    )
    try:
        poll_until(wedged.is_set, "the wedged batch", timeout_s=120)
        assert _healthz(ops.port)[0] == 200  # within the allowance
        _, body = poll_until(lambda: (r := _healthz(ops.port))[0] == 503 and r, "/healthz 503", timeout_s=30)
        assert b"query liveness_test made no progress for" in body
        release.set()
        poll_until(lambda: _healthz(ops.port)[0] == 200, "/healthz 200 after the batch finished", timeout_s=60)
    finally:
        release.set()
        query.stop()
        spark.streams.removeListener(listener)
        ops.stop()
