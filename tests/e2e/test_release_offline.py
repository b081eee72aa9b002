"""What tests/e2e/test_kubernetes.py installs and waits for, checked offline: its release's own
topics and consumer group, the images skaffold built, and the SparkApplication it waits on."""

from __future__ import annotations

from typing import Any

import pytest

from adwatch.contracts import TOPIC_PARTITIONS

from ..deploy import chart, validate
from . import kube
from .test_kubernetes import SPARK_APP, _expected_deployments

IMAGES = {c: (f"adwatch-{c}", "v0.1.0-12-gabc1234") for c in kube.COMPONENTS}
TOPICS = kube.isolated_topics("e2e-abc123")


def _render(mode: str) -> list[dict[str, Any]]:
    base = chart.load_values(chart.CASES["kind"])
    if mode == "sparkApplication":  # what ADWATCH_K8S_SPARK_VALUES gives: a checkpoint every pod reaches
        base["components"]["detector"]["checkpoint"] = {"url": "s3a://bucket/adwatch-e2e/checkpoint"}
    values = kube.release_values(base, mode, IMAGES, TOPICS, "notifier-e2e-abc123")
    return chart.objects(chart.render(values))


def test_the_release_topics_are_valid_kafka_topics_named_apart() -> None:
    objs = kube.kafka_topics(TOPICS)
    assert {o["spec"]["topicName"]: o["spec"]["partitions"] for o in objs} == {
        TOPICS[name]: n for name, n in TOPIC_PARTITIONS.items()
    }
    for obj in objs:
        assert obj["metadata"]["name"] == obj["spec"]["topicName"] and obj["metadata"]["namespace"] == "kafka"
        validate.validate_custom(obj)
    assert not set(TOPICS.values()) & set(TOPIC_PARTITIONS), "no topic of the skaffold release"


@pytest.mark.parametrize("mode", ["deployment", "sparkApplication"])
def test_the_release_uses_its_own_topics_group_and_skaffolds_images(mode: str) -> None:
    objs = _render(mode)
    env = {
        o["metadata"]["name"]: o["data"]
        for o in objs
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-env")
    }
    for component, names in kube.TOPIC_ENV.items():
        instance = "adwatch-notifier-console-env" if component == "notifier" else f"adwatch-{component}-env"
        assert {var: env[instance][var] for var in names.values()} == {
            var: TOPICS[topic] for topic, var in names.items()
        }, instance
    assert env["adwatch-notifier-console-env"]["ADWATCH_NOTIFIER_GROUP_ID"] == "notifier-e2e-abc123"
    images = {o["spec"]["template"]["spec"]["containers"][0]["image"] for o in objs if o["kind"] == "Deployment"}
    images |= {o["spec"]["image"] for o in objs if o["kind"] == "SparkApplication"}
    assert images - {"redis:7-alpine"} == {f"{r}:{t}" for r, t in IMAGES.values()}
    deployments = {o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"}
    assert deployments >= _expected_deployments(mode)
    apps = [o["metadata"]["name"] for o in objs if o["kind"] == "SparkApplication"]
    if mode == "sparkApplication":
        assert apps == [SPARK_APP] and "adwatch-detector" not in deployments
    else:
        assert apps == [] and "adwatch-detector" in deployments


def test_images_are_taken_from_the_skaffold_release() -> None:
    def deployment(component: str, image: str) -> dict[str, Any]:
        return {
            "metadata": {"labels": {"app.kubernetes.io/component": component}},
            "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
        }

    found = kube.skaffold_images(
        [
            deployment("generator", "adwatch-generator:abc1234"),
            deployment("detector", "localhost:5000/adwatch-detector:abc1234@sha256:00ff"),
            deployment("notifier", "adwatch-notifier:abc1234-dirty"),
            deployment("redis", "redis:7-alpine"),
        ]
    )
    assert found == {
        "generator": ("adwatch-generator", "abc1234"),
        "detector": ("localhost:5000/adwatch-detector", "abc1234"),
        "notifier": ("adwatch-notifier", "abc1234-dirty"),
    }
    assert kube.skaffold_images([deployment("detector", "localhost:5000/adwatch-detector")]) == {}


@pytest.mark.parametrize(
    ("status", "pod"),
    [
        pytest.param({}, None, id="not-seen-yet"),
        pytest.param(
            {"applicationState": {"state": "SUBMITTED"}, "driverInfo": {"podName": "d"}}, None, id="submitted"
        ),
        pytest.param({"applicationState": {"state": "RUNNING"}}, None, id="running-no-driver-info"),
        pytest.param(
            {"applicationState": {"state": "RUNNING"}, "driverInfo": {"podName": "adwatch-detector-driver"}},
            "adwatch-detector-driver",
            id="running",
        ),
        pytest.param({"applicationState": {"state": "FAILED"}, "driverInfo": {"podName": "d"}}, None, id="failed"),
    ],
)
def test_the_driver_pod_only_once_running(status: dict[str, Any], pod: str | None) -> None:
    assert kube.spark_driver_pod({"status": status}) == pod


def test_pod_ready_needs_the_ready_condition() -> None:
    running = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}
    assert not kube.pod_ready({"status": running})
    running["conditions"] = [{"type": "Ready", "status": "True"}]
    assert kube.pod_ready({"status": running})
    assert not kube.pod_ready({"status": {"phase": "Pending"}})


def test_executors_running_counts_against_the_instances_asked_for() -> None:
    app: dict[str, Any] = {"spec": {"executor": {"instances": 2}}, "status": {"executorState": {"e1": "RUNNING"}}}
    assert not kube.spark_executors_running(app)
    app["status"]["executorState"] |= {"e2": "PENDING"}
    assert not kube.spark_executors_running(app)
    app["status"]["executorState"] |= {"e2": "RUNNING", "e0": "FAILED"}  # a replaced executor
    assert kube.spark_executors_running(app)
