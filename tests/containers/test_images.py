"""The three images, run: generator -> embedded broker -> detector -> notifier -> fake Slack.

Everything runs from the images built in this session (``--network host``) against the
embedded broker and Redis and a fake Slack on 127.0.0.1: a backfilled half hour with a
traffic flood on ``US|banner`` must reach Slack as an alert, its trace (generator, detector
and notifier spans) must arrive at an OTLP/HTTP receiver, and every container must stop on
SIGTERM within its grace period with exit code 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adwatch.contracts import Alert
from adwatch_dev.fakes import FakeSlack
from adwatch_dev.testing import TopicReader, poll_until, unique
from tests.containers.docker import Docker
from tests.containers.otlp import OtlpReceiver

pytestmark = pytest.mark.containers

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


def test_alert_from_the_images_reaches_slack_with_one_trace(
    containers: Docker,
    images: dict[str, str],
    kafka: str,
    redis_url: str,
    topic_factory: Callable[..., str],
    otlp: OtlpReceiver,
) -> None:
    docker = containers
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
    with FakeSlack() as slack:
        notifier_env = common | {
            "ADWATCH_NOTIFIER_SLACK_WEBHOOK_URL": slack.webhook_url,
            "ADWATCH_NOTIFIER_ALERTS_TOPIC": alerts,
            "ADWATCH_NOTIFIER_DLQ_TOPIC": alerts_dlq,
            "ADWATCH_NOTIFIER_REDIS_PREFIX": unique("adwatch:notifier"),
            "ADWATCH_NOTIFIER_SLACK_MIN_INTERVAL_MS": "0",
        }
        t0 = time.monotonic()
        notifier = docker.run(images["notifier"], ["--channel", "slack"], notifier_env, "notifier-slack")
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
                ours = [s for s in sends if s.attributes.get("adwatch.segment") == "US|banner"]
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
                s for s in spans if s.name == f"send {alerts}" and s.attributes.get("adwatch.segment") == "US|banner"
            ][:1]
            generator_traces = {s.trace_id for s in spans if s.service == "generator" and s.name == f"send {events}"}
            assert alert_span.links and set(alert_span.links) <= generator_traces, (
                "the alert span links to the generator's spans of the events behind it"
            )
            assert alert_span.resource.get("deployment.environment") == "container-test"

            # SIGTERM: each long-running container stops within its grace period, cleanly
            for name, cid in (("notifier", notifier), ("detector", detector)):
                took, code = docker.stop(cid, GRACE_S[name])
                print(f"{name}: stopped in {took:.1f} s, exit {code}")
                assert took < GRACE_S[name] and code == 0, (
                    f"{name} exit {code} after {took:.1f}s:\n{docker.logs(cid)[-3000:]}"
                )
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


def test_detector_image_runs_as_a_spark_operator_driver(
    containers: Docker, images: dict[str, str], kafka: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """The arguments spark-operator gives a driver pod: ``driver --properties-file ... --class
    org.apache.spark.deploy.PythonRunner <main file> <args>``; the master comes from the properties."""
    docker = containers
    events, alerts = topic_factory("ad-events", 2), topic_factory("alerts")
    dlq = topic_factory("ad-events-dlq")
    props = tmp_path / "spark.properties"
    props.write_text(
        "spark.master=local[1]\n"
        "spark.app.name=adwatch-detector-driver-test\n"
        "spark.submit.deployMode=cluster\n"
        "spark.sql.shuffle.partitions=2\n"
    )
    props.chmod(0o644)
    tmp_path.chmod(0o755)
    env = {
        "ADWATCH_KAFKA_BOOTSTRAP": kafka,
        "ADWATCH_METRICS_PORT": "0",
        "ADWATCH_DETECTOR_INPUT_TOPIC": events,
        "ADWATCH_DETECTOR_ALERTS_TOPIC": alerts,
        "ADWATCH_DETECTOR_DLQ_TOPIC": dlq,
        "ADWATCH_DETECTOR_REDIS_ENABLED": "false",
        "ADWATCH_DETECTOR_CLICKHOUSE_ENABLED": "false",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    args = [
        "driver",
        "--properties-file",
        "/etc/adwatch/spark.properties",
        "--class",
        "org.apache.spark.deploy.PythonRunner",
        "local:///opt/adwatch/app/launcher.py",
        "run",
    ]
    cid = docker.run(
        images["detector"], args, env, "detector-driver", volumes={str(props): "/etc/adwatch/spark.properties"}
    )
    try:
        poll_until(
            lambda: "query adwatch_detector started" in docker.logs(cid) or _exited(docker, cid),
            "the driver's streaming query",
            timeout_s=180,
            interval_s=1,
        )
        logs = docker.logs(cid)
        assert "query adwatch_detector started" in logs, logs[-4000:]
        # spark.master from the properties file (read from the JVM spark-submit started), not local[2]
        assert "spark master local[1]" in logs, logs[-4000:]
    finally:
        took, _ = docker.stop(cid, GRACE_S["detector"])
    assert took < GRACE_S["detector"]
