"""The detector on a real multi-executor Spark cluster (standalone master + two workers, 1 core each).

The job runs in a driver subprocess (:mod:`tests.spark_cluster.driver`) against
``spark://127.0.0.1:<port>`` with two executors, and as the reference in another subprocess on
``local[2]``, over the same 6-partition topic on the embedded broker. Spark's REST API shows
both executors ran tasks; the query progress shows state-store rows; the alerts are identical.
Killing a worker (and its executor) mid-run loses no window and duplicates no alert.
"""

from __future__ import annotations

import signal
import subprocess
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


def _alerts(kafka: str, topic: str) -> dict[str, dict[str, Any]]:
    msgs = consume_all(kafka, topic, expected=1, timeout_s=15)
    alerts = [decode(m.value(), Alert) for m in msgs]
    ids = [a.alert_id for a in alerts]
    assert len(ids) == len(set(ids)), f"duplicated alerts: {sorted(ids)}"
    return {a.alert_id: {k: v for k, v in msgspec.structs.asdict(a).items() if k != "detected_at_ms"} for a in alerts}


def _windows(out: Path) -> list[tuple[str, int]]:
    return sorted((seg, start) for b in read_lines(out / "batches.jsonl") for seg, start in b["windows"])


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
        killed = cluster.kill_worker(1)
        print(f"killed worker 1 and its executor after batch 0: pids {killed}")
        result = finish_driver(proc, out, timeout_s=300)
    finally:
        stop_process(proc)
    if result.get("error") is not None:
        # the driver's query failed: a restart from the checkpoint finishes on the remaining executor
        print(f"query failed ({result['error'][:200]}); restarting from the checkpoint")
        result = run_driver(
            out,
            cluster.url,
            kafka,
            topics,
            checkpoint,
            "--executors",
            "1",
            "--max-offsets",
            "1500",
            "--rules",
            workload["rules"],
        )
    assert result.get("exit_code") == 0 and result["error"] is None, tail(out / "driver.log")
    dead = [eid for eid, e in result["executors"].items() if eid != "driver" and not e["active"]]
    print(f"executors: {result['executors']}")
    assert _alerts(kafka, topics["alerts"]) == workload["alerts"]
    windows = _windows(out)
    assert sorted(set(windows)) == workload["windows"]
    assert dead or len(result["executors"]) <= 2, result["executors"]
