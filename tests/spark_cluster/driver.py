"""One detector driver run for the cluster test: ``python -m tests.spark_cluster.driver --master ...``.

Runs the real job (:func:`adwatch_detector.job.run_available`, the Python Kafka reader,
the real :class:`BatchWriter` producing alerts) over what the input topic holds. Each
written micro-batch is appended to ``out/batches.jsonl`` (its closed windows), and at the end
``out/result.json`` has what Spark's REST API says about the executors (completed tasks per
executor id, active or not) and every stage attempt (input records read from the source, and
each task's executor, partition, status and launch time), the state operators' rows, input rows
and the run's duration.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from adwatch.config import CommonSettings
from adwatch.contracts import SegmentWindow, decode
from adwatch_detector.job import run_available
from adwatch_detector.metrics import DetectorMetrics
from adwatch_detector.settings import DetectorSettings
from adwatch_detector.sinks import BatchWriter
from adwatch_detector.spark import build_spark

from .cluster import get_json


def _launch_s(text: str) -> float:
    """A REST API date ("2026-12-04T03:02:56.123GMT") as epoch seconds."""
    return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def _stage(stage: dict[str, Any]) -> dict[str, Any]:
    """One stage attempt: whether it read the source (input records) and where its tasks ran."""
    return {
        "id": stage["stageId"],
        "attempt": stage["attemptId"],
        "status": stage["status"],
        "input_records": stage.get("inputRecords", 0),
        "tasks": [
            {
                "executor": t["executorId"],
                "partition": t.get("partitionId", t["index"]),
                "status": t["status"],
                "launched": _launch_s(t["launchTime"]),
            }
            for t in (stage.get("tasks") or {}).values()
        ],
    }


def main() -> int:
    p = argparse.ArgumentParser()
    for name in ("master", "bootstrap", "input", "alerts", "dlq", "checkpoint", "out", "ui-port"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--executors", type=int, default=2)
    p.add_argument("--max-offsets", type=int, default=6000)
    p.add_argument("--rules", default=None)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(a.out)
    conf = {"spark.ui.enabled": "true", "spark.ui.port": a.ui_port, "spark.ui.showConsoleProgress": "false"}
    if a.master.startswith("spark://"):
        conf |= {"spark.executor.cores": "1", "spark.cores.max": str(a.executors), "spark.executor.memory": "1g"}
    spark = build_spark(a.master, app_name="adwatch-cluster-test", shuffle_partitions=4, extra_conf=conf)
    sc = spark.sparkContext
    api = f"http://127.0.0.1:{a.ui_port}/api/v1/applications/{sc.applicationId}"
    if a.master.startswith("spark://"):
        deadline = time.monotonic() + 120  # every executor registered before the first batch
        while time.monotonic() < deadline:
            try:
                if len([e for e in get_json(f"{api}/executors", 15) if e["id"] != "driver"]) >= a.executors:
                    break
            except OSError:  # a busy machine: the UI answers late
                pass
            time.sleep(0.5)
    settings = DetectorSettings(
        checkpoint_dir=a.checkpoint,
        input_topic=a.input,
        alerts_topic=a.alerts,
        dlq_topic=a.dlq,
        source="python",
        redis_enabled=False,
        clickhouse_enabled=False,
        max_offsets_per_trigger=a.max_offsets,
        query_name="cluster_test",
        rules_file=a.rules,
    )
    common = CommonSettings(kafka_bootstrap=a.bootstrap)
    writer = BatchWriter(settings, common, DetectorMetrics(CollectorRegistry()))
    batches = out / "batches.jsonl"

    def write(batch: Any, batch_id: int) -> None:
        rows = [r.asDict() for r in batch.collect()]
        writer.write_rows(rows, batch_id)
        windows = [
            [r["segment"], decode(r["payload"], SegmentWindow).window_start_ms] for r in rows if r["kind"] == "window"
        ]
        with batches.open("a") as f:
            f.write(json.dumps({"batch_id": batch_id, "windows": windows, "at": time.time()}) + "\n")

    result: dict[str, Any] = {"application_id": sc.applicationId, "master": sc.master}
    started = time.monotonic()
    try:
        query = run_available(spark, settings, common, write, timeout_s=240)
        result["seconds"] = time.monotonic() - started
        progress = query.recentProgress
        result["input_rows"] = sum(int(pr["numInputRows"]) for pr in progress)
        result["state_rows"] = max(
            (int(op.get("numRowsTotal", 0)) for pr in progress for op in pr.get("stateOperators", [])), default=0
        )
        result["error"] = None
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        writer.close()
    for _ in range(5):
        try:
            execs = get_json(f"{api}/allexecutors", 30)
            result["executors"] = {e["id"]: {"completed": e["completedTasks"], "active": e["isActive"]} for e in execs}
            result["completed_stages"] = len(get_json(f"{api}/stages?status=complete", 30))
            result["stages"] = [_stage(st) for st in get_json(f"{api}/stages?details=true", 60)]
            result.pop("rest_error", None)
            break
        except OSError as exc:
            result["rest_error"] = str(exc)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    spark.stop()
    return 0 if result["error"] is None else 3


if __name__ == "__main__":
    raise SystemExit(main())
