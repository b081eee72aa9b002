"""The detector on a real multi-executor Spark cluster (standalone master + two workers, 1 core each).

The job runs in a driver subprocess (:mod:`tests.spark_cluster.driver`) against
``spark://127.0.0.1:<port>`` with two executors, and as the reference in another subprocess on
``local[2]``, over the same 6-partition topic on the embedded broker. Spark's REST API shows
both executors ran tasks; the query progress shows state-store rows; the alerts are identical.
Killing a worker (and its executor) mid-run: the query goes on, the surviving executor reruns
the lost work and reads every partition, no window is lost and no alert duplicated.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adwatch.contracts import Alert, decode
from adwatch_dev.testing import consume_all, poll_until

from .cluster import (
    REPO,
    SPARK_HOME,
    TEST_RULES,
    StandaloneCluster,
    finish_driver,
    get_json,
    produce_round_robin,
    read_lines,
    run_driver,
    spark_env,
    start_driver,
    stop_process,
    synth_input,
    tail,
)

pytestmark = pytest.mark.spark_cluster
# The driver drops a killed executor when its connection breaks (milliseconds); tasks launched
# within this margin after the kill may still have been offered to it.
LOSS_NOTICED_S = 5.0


def _alerts(kafka: str, topic: str) -> dict[str, dict[str, Any]]:
    msgs = consume_all(kafka, topic, expected=1, timeout_s=15)
    alerts = [decode(m.value(), Alert) for m in msgs]
    ids = [a.alert_id for a in alerts]
    assert len(ids) == len(set(ids)), f"duplicated alerts: {sorted(ids)}"
    return {a.alert_id: {k: v for k, v in msgspec.structs.asdict(a).items() if k != "detected_at_ms"} for a in alerts}


def _windows(out: Path) -> list[tuple[str, int]]:
    return sorted((seg, start) for b in read_lines(out / "batches.jsonl") for seg, start in b["windows"])


def _scan_stages(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Completed stage attempts that read the input topic (the source scan: input records > 0)."""
    return [st for st in result["stages"] if st["status"] == "COMPLETE" and st["input_records"] > 0 and st["tasks"]]


@pytest.fixture(scope="module")
def workload(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The input topic (6 partitions) and the local[2] reference run's alerts and windows."""
    from adwatch.kafka import ensure_topics
    from adwatch_dev.testing import unique

    topic = unique("ad-events")
    ensure_topics(kafka, {topic: 6})
    values = synth_input()
    produce_round_robin(kafka, topic, values)
    root = tmp_path_factory.mktemp("local-run")
    rules = root / "rules.yaml"
    rules.write_text(TEST_RULES)
    topics = {"in": topic, "alerts": unique("alerts"), "dlq": unique("dlq")}
    ensure_topics(kafka, {topics["alerts"]: 1, topics["dlq"]: 1})
    result = run_driver(root / "out", "local[2]", kafka, topics, root / "checkpoint", "--rules", str(rules))
    assert result.get("exit_code") == 0 and result["error"] is None, tail(root / "out" / "driver.log")
    assert result["input_rows"] == len(values)
    return {
        "topic": topic,
        "n": len(values),
        "alerts": _alerts(kafka, topics["alerts"]),
        "windows": _windows(root / "out"),
        "result": result,
        "rules": str(rules),
    }


def _topics(kafka: str, input_topic: str) -> dict[str, str]:
    from adwatch.kafka import ensure_topics
    from adwatch_dev.testing import unique

    topics = {"in": input_topic, "alerts": unique("alerts"), "dlq": unique("dlq")}
    ensure_topics(kafka, {topics["alerts"]: 1, topics["dlq"]: 1})
    return topics


def test_two_executors_share_the_partitions_and_match_local(
    cluster: StandaloneCluster, kafka: str, workload: dict[str, Any], tmp_path: Path
) -> None:
    topics = _topics(kafka, workload["topic"])
    out = tmp_path / "out"
    result = run_driver(out, cluster.url, kafka, topics, tmp_path / "checkpoint", "--rules", workload["rules"])
    assert result.get("exit_code") == 0 and result["error"] is None, tail(out / "driver.log")
    print(f"cluster {result['seconds']:.1f} s, local[2] {workload['result']['seconds']:.1f} s, {workload['n']} events")
    assert result["master"] == cluster.url
    busy = {eid: e["completed"] for eid, e in result["executors"].items() if eid != "driver" and e["completed"] > 0}
    assert len(busy) == 2, result["executors"]
    # the Kafka partitions are read by tasks on both executors: a source-scan stage ran on both
    scans = _scan_stages(result)
    assert scans, "no stage read the input topic"
    assert sum(st["input_records"] for st in scans) == workload["n"]
    spread = [{t["executor"] for t in st["tasks"] if t["status"] == "SUCCESS"} for st in scans]
    print(f"source-scan stages: executors per stage {spread}")
    assert set(busy) in spread, f"no source-scan stage ran tasks on both executors {sorted(busy)}: {spread}"
    assert result["state_rows"] > 0
    assert result["input_rows"] == workload["n"]
    assert workload["alerts"], "the reference run fired no alert: the scenario is too short"
    assert _alerts(kafka, topics["alerts"]) == workload["alerts"]
    assert _windows(out) == workload["windows"]


def test_detector_driver_under_spark_submit_takes_the_master_from_the_properties_file(
    cluster: StandaloneCluster, kafka: str, workload: dict[str, Any], tmp_path: Path
) -> None:
    """What the image's ``driver`` entrypoint runs for spark-operator (client mode inside the
    driver pod): ``spark-submit --deploy-mode client --properties-file F --class PythonRunner
    launcher.py run``. No ADWATCH_DETECTOR_SPARK_MASTER: spark.master comes from the file."""
    topics = _topics(kafka, workload["topic"])
    props = tmp_path / "spark.properties"
    props.write_text(
        f"spark.master={cluster.url}\n"
        "spark.app.name=adwatch-detector-driver-test\n"
        "spark.submit.deployMode=cluster\n"
        "spark.cores.max=2\nspark.executor.cores=1\nspark.executor.memory=1g\n"
        "spark.sql.shuffle.partitions=4\n"
    )
    env = spark_env(tmp_path)
    env.pop("ADWATCH_DETECTOR_SPARK_MASTER", None)
    env.update(
        {
            "ADWATCH_KAFKA_BOOTSTRAP": kafka,
            "ADWATCH_METRICS_PORT": "0",
            "ADWATCH_METRICS_HOST": "127.0.0.1",
            "ADWATCH_LOG_FORMAT": "text",
            "ADWATCH_DETECTOR_SOURCE": "python",
            "ADWATCH_DETECTOR_INPUT_TOPIC": topics["in"],
            "ADWATCH_DETECTOR_ALERTS_TOPIC": topics["alerts"],
            "ADWATCH_DETECTOR_DLQ_TOPIC": topics["dlq"],
            "ADWATCH_DETECTOR_CHECKPOINT_DIR": str(tmp_path / "ck"),
            "ADWATCH_DETECTOR_REDIS_ENABLED": "false",
            "ADWATCH_DETECTOR_CLICKHOUSE_ENABLED": "false",
            "ADWATCH_DETECTOR_RULES_FILE": workload["rules"],
        }
    )
    launcher = REPO / "services/detector/src/adwatch_detector/launcher.py"
    cmd = [
        str(SPARK_HOME / "bin/spark-submit"),
        "--deploy-mode",
        "client",
        "--properties-file",
        str(props),
        "--class",
        "org.apache.spark.deploy.PythonRunner",
        str(launcher),
        "run",
    ]
    log = tmp_path / "driver.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        poll_until(
            lambda: "query adwatch_detector started" in log.read_text(errors="replace") or proc.poll() is not None,
            "the driver's streaming query",
            timeout_s=120,
            interval_s=0.5,
        )
        text = log.read_text(errors="replace")
        assert "query adwatch_detector started" in text, tail(log)
        assert f"spark master {cluster.url}" in text, tail(log)
        apps = get_json(f"http://127.0.0.1:{cluster.webui_port}/json/")["activeapps"]
        assert [a["name"] for a in apps] == ["adwatch-detector-driver-test"]
        # it reads and alerts like the reference run
        alerts = poll_until(lambda: _alerts(kafka, topics["alerts"]) or None, "the driver's alerts", timeout_s=120)
        assert set(alerts) == set(workload["alerts"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            # spark-submit's JVM takes SIGTERM (as tini forwards it in the pod) and ends with 143
            proc.wait(60)
        finally:
            stop_process(proc)


def test_losing_a_worker_mid_run_loses_no_window_and_duplicates_no_alert(
    cluster: StandaloneCluster, kafka: str, workload: dict[str, Any], tmp_path: Path
) -> None:
    """Worker 1 and its executor are SIGKILLed after micro-batch 0: the same query goes on (no
    restart), Spark reruns the lost work on the surviving executor, which reads every input
    partition from then on; the windows and alerts equal the local[2] run's, each exactly once."""
    topics = _topics(kafka, workload["topic"])
    out, checkpoint = tmp_path / "out", tmp_path / "checkpoint"
    proc = start_driver(
        out, cluster.url, kafka, topics, checkpoint, "--max-offsets", "1500", "--rules", workload["rules"]
    )
    try:
        poll_until(
            lambda: read_lines(out / "batches.jsonl") or proc.poll() is not None,
            "a first micro-batch on the cluster",
            timeout_s=240,
            interval_s=0.2,
        )
        assert proc.poll() is None, "the run ended before the worker could be killed"
        victim, survivor = cluster.executor_ids(1), cluster.executor_ids(0)
        assert len(victim) == 1 and len(survivor) == 1, (victim, survivor)
        killed_at = time.time()
        killed = cluster.kill_worker(1)
        print(f"killed worker 1 and executor {victim[0]} after batch 0: pids {killed}")
        result = finish_driver(proc, out, timeout_s=300)
    finally:
        stop_process(proc)
    # the query survived: the first run finished, no restart from the checkpoint
    assert result.get("exit_code") == 0 and result["error"] is None, tail(out / "driver.log")
    executors = result["executors"]
    print(f"executors: {executors}")
    assert executors[victim[0]]["active"] is False, "the killed executor is gone from the application"
    assert executors[survivor[0]]["active"] is True
    tasks = [t for st in result["stages"] for t in st["tasks"]]
    before = {t["executor"] for t in tasks if t["launched"] < killed_at and t["status"] == "SUCCESS"}
    assert before == {victim[0], survivor[0]}, f"both executors worked before the kill: {before}"
    after = [t for t in tasks if t["launched"] > killed_at + LOSS_NOTICED_S]
    assert after and {t["executor"] for t in after} == {survivor[0]}, "only the survivor runs tasks after the kill"
    assert any(t["status"] == "SUCCESS" for t in after)
    # the survivor took over the victim's input partitions: it read every one of them after the kill
    scans_after = [
        st for st in _scan_stages(result) if min(t["launched"] for t in st["tasks"]) > killed_at + LOSS_NOTICED_S
    ]
    assert scans_after, "no micro-batch read the topic after the kill"
    read = {t["partition"] for st in scans_after for t in st["tasks"] if t["status"] == "SUCCESS"}
    assert read == set(range(6)), read
    # nothing lost, nothing twice
    assert result["input_rows"] == workload["n"]
    assert _alerts(kafka, topics["alerts"]) == workload["alerts"]  # unique ids, same values
    assert _windows(out) == workload["windows"], "every window closed exactly once"
