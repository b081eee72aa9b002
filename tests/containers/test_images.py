"""The three images, run: generator -> embedded broker -> detector -> notifier -> fake Slack.

Everything runs from the images built in this session (``--network host``) against the
embedded broker and Redis and a fake Slack on 127.0.0.1: a backfilled half hour with a
traffic flood on ``US|banner`` must reach Slack as an alert, its trace (generator, detector
and notifier spans, one trace id) must arrive at an OTLP/HTTP receiver, and every container
must stop on SIGTERM within its grace period with exit code 0 and nothing lost (the
notifier's committed offsets at the topic's end, no alert delivered twice). The detector
image also runs the chart's cloud SparkApplication against a standalone master and workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adwatch.contracts import Alert, segment_key
from adwatch_dev.fakes import FakeSlack
from adwatch_dev.testing import PER_ALERT_ROUTES, TopicReader, poll_until, unique
from tests.containers.docker import Docker
from tests.containers.otlp import OtlpReceiver

# 1800 s, not the suite's 600: the first test of a session includes a cold image build (~450 s here)
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]

START = datetime(2026, 9, 21, 12, 0, tzinfo=UTC)
HISTORY = timedelta(minutes=30)
FLOOD = "traffic_spike:US|banner:24m:3m:3"
GRACE_S = {"generator": 10, "detector": 40, "notifier": 15}


@pytest.fixture
def containers(docker: Docker) -> Iterator[Docker]:
    try:
        yield docker
    finally:
        docker.remove_all()


def _exited(docker: Docker, cid: str) -> bool:
    return docker.state(cid)["Status"] == "exited"


def _wait_until_quiet(slack: FakeSlack, quiet_s: float = 3.0) -> None:
    """Until the fake Slack got no request for ``quiet_s`` (the notifier has caught up)."""
    seen = [len(slack.requests), time.monotonic()]

    def quiet() -> bool:
        if len(slack.requests) != seen[0]:
            seen[:] = [len(slack.requests), time.monotonic()]
        return time.monotonic() - seen[1] >= quiet_s

    poll_until(quiet, "the notifier's deliveries to go quiet", timeout_s=60, interval_s=0.5)


def _committed_and_end(kafka: str, group: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """``group``'s committed offset and the end offset of every partition of ``topic``.

    Read by a consumer configured with the group id that never subscribes (no rebalance).
    """
    from confluent_kafka import TopicPartition

    from adwatch.kafka import make_consumer

    consumer = make_consumer(kafka, group)
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        end = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        consumer.close()
    # a partition the notifier never committed (no alert on it) reads as -1001: nothing to take
    return {tp.partition: max(tp.offset, 0) for tp in committed}, end


def test_alert_from_the_images_reaches_slack_with_one_trace(
    containers: Docker,
    images: dict[str, str],
    kafka: str,
    redis_url: str,
    topic_factory: Callable[..., str],
    otlp: OtlpReceiver,
    tmp_path: Path,
) -> None:
    docker = containers
    routes = tmp_path / "routes.yaml"
    routes.write_text(PER_ALERT_ROUTES)
    routes.chmod(0o644)  # read by the image's non-root user
    # every topic made up front: topic creation on the embedded broker is slow while Spark starts
    events, alerts = topic_factory("ad-events", 6), topic_factory("alerts", 3)
    events_dlq, alerts_dlq, truth = topic_factory("ad-events-dlq"), topic_factory("alerts-dlq"), topic_factory("truth")
    common = {
        "ADWATCH_KAFKA_BOOTSTRAP": kafka,
        "ADWATCH_REDIS_URL": redis_url,
        "ADWATCH_METRICS_PORT": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=container-test",
    }
    detector_env = common | {
        "ADWATCH_DETECTOR_INPUT_TOPIC": events,
        "ADWATCH_DETECTOR_ALERTS_TOPIC": alerts,
        "ADWATCH_DETECTOR_DLQ_TOPIC": events_dlq,
        "ADWATCH_DETECTOR_REDIS_KEY_PREFIX": unique("adwatch:segment") + ":",
        "ADWATCH_DETECTOR_CLICKHOUSE_ENABLED": "false",
        "ADWATCH_DETECTOR_TRIGGER_SECONDS": "1",
    }
    reader = TopicReader(kafka, alerts)
    group = unique("notifier-slack")
    with FakeSlack() as slack:
        notifier_env = common | {
            "ADWATCH_NOTIFIER_SLACK_WEBHOOK_URL": slack.webhook_url,
            "ADWATCH_NOTIFIER_ALERTS_TOPIC": alerts,
            "ADWATCH_NOTIFIER_DLQ_TOPIC": alerts_dlq,
            "ADWATCH_NOTIFIER_REDIS_PREFIX": unique("adwatch:notifier"),
            "ADWATCH_NOTIFIER_SLACK_MIN_INTERVAL_MS": "0",
            "ADWATCH_NOTIFIER_GROUP_ID": group,
            # one alert's own path and trace (the built-in default groups Slack by alert type)
            "ADWATCH_NOTIFIER_ROUTES_FILE": "/etc/adwatch/routes.yaml",
        }
        t0 = time.monotonic()
        notifier = docker.run(
            images["notifier"],
            ["--channel", "slack"],
            notifier_env,
            "notifier-slack",
            volumes={str(routes): "/etc/adwatch/routes.yaml"},
        )
        detector = docker.run(images["detector"], ["run"], detector_env, "detector")
        generator = docker.run(
            images["generator"],
            [
                "backfill",
                "--topic",
                events,
                "--truth-topic",
                truth,
                "--rate",
                "120",
                "--seed",
                "11",
                "--start",
                START.isoformat(),
                "--end",
                (START + HISTORY).isoformat(),
                "--scenario",
                FLOOD,
                "--trace-sample",
                "0.01",
                "--quiet",
            ],
            common,
            "generator",
        )
        try:
            poll_until(lambda: _exited(docker, generator), "the generator's backfill", timeout_s=120, interval_s=1)
            assert docker.state(generator)["ExitCode"] == 0, docker.logs(generator)

            def flood_alert() -> list[Alert]:
                return [
                    a
                    for a in reader.decoded(Alert)
                    if (a.country, a.ad_format) == ("US", "banner") and a.status == "firing"
                ]

            try:
                alert = poll_until(flood_alert, "the flood's alert on the alerts topic", timeout_s=300, interval_s=1)[0]
                delivered = poll_until(
                    lambda: [r for r in slack.requests if r.ok and alert.alert_id.encode() in r.body],
                    "the alert at the fake Slack",
                    timeout_s=60,
                    interval_s=0.5,
                )
            except AssertionError:
                print("detector:\n", docker.logs(detector)[-6000:], "\nnotifier:\n", docker.logs(notifier)[-3000:])
                raise
            print(f"\nalert {alert.alert_id} at Slack {time.monotonic() - t0:.0f} s after the containers started")
            assert len(delivered) == 1

            # one trace: the detector's alert span, continued by the notifier, linking the generator's events
            def alert_trace() -> list[str]:
                spans = otlp.snapshot()
                sends = [s for s in spans if s.service == "detector" and s.name == f"send {alerts}"]
                ours = [s for s in sends if s.attributes.get("adwatch.segment") == segment_key("US", "banner")]
                if not ours:
                    return []
                trace_id = ours[0].trace_id
                return [f"{s.service}:{s.name}" for s in spans if s.trace_id == trace_id]

            names = poll_until(
                lambda: (
                    lambda names: names if {f"notifier:process {alerts}", "notifier:slack send"} <= set(names) else []
                )(alert_trace()),
                "the notifier's spans of the alert's trace at the OTLP receiver",
                timeout_s=30,
            )
            assert "detector:send " + alerts in names
            assert f"notifier:process {alerts}" in names and "notifier:slack send" in names, names
            spans = otlp.snapshot()
            (alert_span,) = [
                s
                for s in spans
                if s.name == f"send {alerts}" and s.attributes.get("adwatch.segment") == segment_key("US", "banner")
            ][:1]
            generator_traces = {s.trace_id for s in spans if s.service == "generator" and s.name == f"send {events}"}
            # one trace id: generator, detector and notifier spans; the alert's parent is an event's span
            assert f"generator:send {events}" in names, f"no generator span in the alert's trace: {names}"
            assert alert_span.trace_id in generator_traces
            assert set(alert_span.links) <= generator_traces, (
                "the alert span links to the generator's spans of the other sampled events behind it"
            )
            assert alert_span.resource.get("deployment.environment") == "container-test"

            # SIGTERM: each long-running container stops within its grace period, cleanly; the
            # detector (the producer) first, then the notifier once its deliveries went quiet
            for name, cid in (("detector", detector), ("notifier", notifier)):
                if name == "notifier":
                    _wait_until_quiet(slack)
                took, code = docker.stop(cid, GRACE_S[name])
                print(f"{name}: stopped in {took:.1f} s, exit {code}")
                assert took < GRACE_S[name] and code == 0, (
                    f"{name} exit {code} after {took:.1f}s:\n{docker.logs(cid)[-3000:]}"
                )
            # nothing lost: the stopped notifier committed every alert on the topic ...
            committed, end = _committed_and_end(kafka, group, alerts)
            assert committed == end, f"committed {committed}, topic end {end}"
            # ... and delivered none twice (some may be suppressed by the routes: at most once each)
            firing = {a.alert_id for a in reader.decoded(Alert, seconds=1.0) if a.status == "firing"}
            counts = {i: sum(1 for r in slack.requests if r.ok and i.encode() in r.body) for i in firing}
            assert counts[alert.alert_id] == 1 and max(counts.values()) == 1, counts
        finally:
            reader.close()

    live_topic = topic_factory("ad-events", 1)
    live = docker.run(
        images["generator"],
        ["live", "--topic", live_topic, "--truth-topic", truth, "--rate", "50", "--quiet"],
        common,
        "generator-live",
    )
    poll_until(lambda: docker.state(live)["Running"], "the live generator", timeout_s=30)
    time.sleep(2)
    took, code = docker.stop(live, GRACE_S["generator"])
    print(f"generator: stopped in {took:.1f} s, exit {code}")
    assert took < GRACE_S["generator"] and code == 0, docker.logs(live)[-3000:]


# Inside the image: pyspark's distribution (bin/spark-class), where SPARK_HOME points.
IMAGE_SPARK_HOME = "/opt/adwatch/lib/python3.11/site-packages/pyspark"
SHARED_CHECKPOINT = "/var/lib/adwatch/shared/checkpoint"


def test_the_rendered_spark_application_runs_on_a_standalone_master(
    containers: Docker,
    images: dict[str, str],
    kafka: str,
    redis_url: str,
    topic_factory: Callable[..., str],
    otlp: OtlpReceiver,
    tmp_path: Path,
) -> None:
    """The cloud SparkApplication as rendered by the chart, run as spark-operator would run it.

    The driver container gets what its pod would: the image's entrypoint with ``driver
    --properties-file ... --class org.apache.spark.deploy.PythonRunner <mainApplicationFile>
    <arguments>``, the Spark settings of the spec (driver and executor cores and memory,
    executor instances, dynamic allocation, ``sparkConf``) in the properties file, the env of
    ``spec.driver`` (its ConfigMap, downward API, secrets) and its ConfigMap mounts (the rules
    file). Only what cannot be the same here is changed:

    - ``spark.master``: the standalone master below, not ``k8s://`` (no cluster here); a
      standalone master grants executors by cores, so ``executor.instances`` becomes
      ``spark.cores.max = instances x cores``;
    - loopback addresses: the driver host / bind address (the pod IP and its service in a
      pod), the Kafka bootstrap, the Redis URL (a secret), the OTLP endpoint, a free metrics
      port (host network); with one address for every container, host-local shuffle reads are
      off (``spark.shuffle.readHostLocalDisk=false``: executors don't share a disk here);
    - the checkpoint: ``s3a://`` needs object storage and hadoop-aws, neither here (images
      built here have no connectors), so a directory every container mounts read-write, as a
      ReadWriteMany PVC would be; ClickHouse off (no server here); the test's own topics.

    The master and one worker per executor are started with the same ``spark-class ...Master``
    / ``...Worker`` commands as tests/spark_cluster, but from the detector image, not from the
    host's pyspark: the executors must run the image's Python and packages (the Python reader
    and the rules run in executor tasks), as executor pods of the SparkApplication run the
    image, with the executor env of ``spec.executor``. Each worker offers ``executor.cores``
    and ``executor.memory`` (advertised; the JVMs use far less here).
    """
    from tests.deploy import sparkapp
    from tests.spark_cluster.cluster import free_port, get_json, produce_round_robin, synth_input

    docker = containers
    app, config_maps = sparkapp.render_cloud()
    spec = app["spec"]
    instances, cores = int(spec["executor"]["instances"]), int(spec["executor"]["cores"])
    events, alerts, dlq = topic_factory("ad-events", 6), topic_factory("alerts", 3), topic_factory("ad-events-dlq")
    produce_round_robin(kafka, events, synth_input())

    for path in (tmp_path, tmp_path / "checkpoint"):
        path.mkdir(exist_ok=True)
        path.chmod(0o777)  # the containers run as uid 10001
    secrets = {"ADWATCH_REDIS_URL": redis_url, "ADWATCH_CLICKHOUSE_URL": "http://127.0.0.1:9/unused"}
    metrics_port = free_port()
    here = {
        "ADWATCH_KAFKA_BOOTSTRAP": kafka,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "ADWATCH_METRICS_PORT": str(metrics_port),
        "ADWATCH_DETECTOR_CHECKPOINT_DIR": SHARED_CHECKPOINT,
        "ADWATCH_DETECTOR_CLICKHOUSE_ENABLED": "false",
        "ADWATCH_DETECTOR_INPUT_TOPIC": events,
        "ADWATCH_DETECTOR_ALERTS_TOPIC": alerts,
        "ADWATCH_DETECTOR_DLQ_TOPIC": dlq,
        "ADWATCH_DETECTOR_REDIS_KEY_PREFIX": unique("adwatch:segment") + ":",
    }

    def pod(role: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
        downward = {"metadata.name": name, "metadata.namespace": "adwatch", "spec.nodeName": "container-test"}
        env = sparkapp.pod_env(spec[role], config_maps, secrets, downward) | here
        mounts = {}
        for target, text in sparkapp.mounted_files(spec[role], app, config_maps).items():
            source = tmp_path / f"{role}-{Path(target).name}"
            source.write_text(text)
            source.chmod(0o644)
            mounts[str(source)] = target
        return env, mounts

    shared = {str(tmp_path / "checkpoint"): str(Path(SHARED_CHECKPOINT).parent)}
    spark_class = f"{IMAGE_SPARK_HOME}/bin/spark-class"
    loopback = {"SPARK_LOCAL_IP": "127.0.0.1"}
    master_port, master_ui = free_port(), free_port()
    docker.run(
        images["detector"],
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(master_port), "--webui-port", str(master_ui)),
        ],
        loopback,
        "spark-master",
    )
    master = f"spark://127.0.0.1:{master_port}"

    def master_state() -> dict[str, Any]:
        try:
            state: dict[str, Any] = get_json(f"http://127.0.0.1:{master_ui}/json/")
            return state
        except OSError:
            return {}

    poll_until(lambda: master_state().get("status") == "ALIVE", "the standalone master", timeout_s=120)
    for i in range(instances):
        env, mounts = pod("executor", f"adwatch-detector-exec-{i + 1}")
        docker.run(
            images["detector"],
            [
                spark_class,
                "org.apache.spark.deploy.worker.Worker",
                master,
                *("--host", "127.0.0.1", "--cores", str(cores), "--memory", str(spec["executor"]["memory"])),
                *("--webui-port", str(free_port()), "--work-dir", "/tmp/spark-work"),
            ],
            env | loopback,
            f"spark-worker-{i}",
            volumes=mounts,
            writable=shared,
        )
    poll_until(
        lambda: sum(w.get("state") == "ALIVE" for w in master_state().get("workers", [])) == instances,
        f"{instances} standalone workers",
        timeout_s=180,
    )

    props = sparkapp.driver_properties(app, master) | {
        "spark.driver.host": "127.0.0.1",
        # every container has the host's one address here, so Spark would take executors for
        # neighbours on one host and read each other's shuffle files from local disk, which
        # lives in separate containers (in pods each executor has its own IP)
        "spark.shuffle.readHostLocalDisk": "false",
    }
    props_file = tmp_path / "spark.properties"
    props_file.write_text(sparkapp.properties_text(props))
    props_file.chmod(0o644)
    env, mounts = pod("driver", "adwatch-detector-driver")
    # spark-operator sets the bind address to the pod IP: loopback here (the entrypoint passes it on)
    env["SPARK_DRIVER_BIND_ADDRESS"] = "127.0.0.1"
    cid = docker.run(
        images["detector"],
        sparkapp.driver_args(app),
        env,
        "detector-driver",
        volumes={str(props_file): sparkapp.PROPERTIES_PATH, **mounts},
        writable=shared,
    )
    try:
        try:
            poll_until(
                lambda: "windows closed" in docker.logs(cid) or _exited(docker, cid),
                "the driver's first micro-batch with closed windows (tasks on the executors)",
                timeout_s=600,
                interval_s=2,
            )
        except AssertionError:
            print("driver:\n", docker.logs(cid)[-6000:], "\nmaster:\n", master_state())
            raise
        logs = docker.logs(cid)
        assert "query adwatch_detector started" in logs, logs[-4000:]
        assert f"spark master {master}" in logs, logs[-4000:]  # from the properties file, not local[N]
        assert "windows closed" in logs, logs[-4000:]
        state = master_state()
        (running,) = state["activeapps"]
        assert running["name"] == app["metadata"]["name"]
        # every executor the SparkApplication asks for registered: instances x cores granted
        assert running["cores"] == instances * cores, running
        assert sorted(w["coresused"] for w in state["workers"]) == [cores] * instances, state["workers"]
    finally:
        took, _ = docker.stop(cid, GRACE_S["detector"])
    assert took < GRACE_S["detector"]
