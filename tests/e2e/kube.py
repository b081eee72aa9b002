"""What ``test_kubernetes.py`` deploys and waits for, as plain functions (tests/deploy checks them offline).

- :func:`isolated_topics` / :func:`kafka_topics`: the release's own topics (``<topic>.<suffix>``,
  KafkaTopic objects made from ``k8s/topics.yaml``), so its generator, detector and notifier
  share nothing with the skaffold release in the same Kafka cluster.
- :func:`release_values`: the values of the test's release: detector mode, the images skaffold
  built, the isolated topics and the notifier's own consumer group.
- :func:`skaffold_images`: the images (repository, tag) the skaffold release runs, read from
  its Deployments: skaffold tags by git commit, so ``latest`` would be an image nobody built.
- :func:`spark_driver_pod`: the driver pod of a SparkApplication once spark-operator reports
  ``status.applicationState.state == RUNNING``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from adwatch.contracts import TOPIC_PARTITIONS

REPO = Path(__file__).resolve().parents[2]
TOPICS_FILE = REPO / "k8s" / "topics.yaml"
COMPONENTS = ("generator", "detector", "notifier")

# The env settings that name a topic, per component (contract topic -> settings env name).
TOPIC_ENV: dict[str, dict[str, str]] = {
    "generator": {"ad-events": "ADWATCH_GENERATOR_TOPIC", "ad-events.truth": "ADWATCH_GENERATOR_TRUTH_TOPIC"},
    "detector": {
        "ad-events": "ADWATCH_DETECTOR_INPUT_TOPIC",
        "alerts": "ADWATCH_DETECTOR_ALERTS_TOPIC",
        "ad-events.dlq": "ADWATCH_DETECTOR_DLQ_TOPIC",
    },
    "notifier": {
        "alerts": "ADWATCH_NOTIFIER_ALERTS_TOPIC",
        "alerts.dlq": "ADWATCH_NOTIFIER_DLQ_TOPIC",
        "alerts.deliveries": "ADWATCH_NOTIFIER_DELIVERIES_TOPIC",
    },
}


def isolated_topics(suffix: str) -> dict[str, str]:
    """Every contract topic -> its name in the test's release (``alerts`` -> ``alerts.<suffix>``)."""
    return {name: f"{name}.{suffix}" for name in TOPIC_PARTITIONS}


def kafka_topics(topics: dict[str, str]) -> list[dict[str, Any]]:
    """KafkaTopic objects for ``topics``: k8s/topics.yaml's (partitions, config, cluster), renamed."""
    out = []
    for doc in yaml.safe_load_all(TOPICS_FILE.read_text()):
        if not doc or doc.get("kind") != "KafkaTopic" or doc["spec"]["topicName"] not in topics:
            continue
        obj = copy.deepcopy(doc)
        name = topics[doc["spec"]["topicName"]]
        obj["metadata"]["name"] = name  # lowercase, digits, '-' and '.': a valid object name too
        obj["spec"]["topicName"] = name
        out.append(obj)
    missing = set(topics.values()) - {t["spec"]["topicName"] for t in out}
    if missing:
        raise ValueError(f"{TOPICS_FILE} has no KafkaTopic for {sorted(missing)}")
    return out


def release_values(
    base: dict[str, Any],
    mode: str,
    images: dict[str, tuple[str, str]],
    topics: dict[str, str],
    notifier_group: str,
) -> dict[str, Any]:
    """``base`` (the merged values files) with the detector mode, images, topics and the notifier's group."""
    values = copy.deepcopy(base)
    components = values.setdefault("components", {})
    components.setdefault("detector", {})["mode"] = mode
    for name in COMPONENTS:
        c = components.setdefault(name, {})
        if name in images:
            repository, tag = images[name]
            c["imageOverride"] = {**c.get("imageOverride", {}), "repository": repository, "tag": tag}
        env = c.setdefault("env", {})
        env.update({var: topics[topic] for topic, var in TOPIC_ENV[name].items()})
    # one group for every notifier channel of this release: its own, never notifier-<channel>,
    # which the skaffold release's console notifier consumes with
    components["notifier"]["env"]["ADWATCH_NOTIFIER_GROUP_ID"] = notifier_group
    return values


def skaffold_images(deployments: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """component -> (repository, tag) of the images in a release's Deployments (the skaffold release)."""
    images: dict[str, tuple[str, str]] = {}
    for d in deployments:
        component = d["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if component not in COMPONENTS:
            continue
        image = d["spec"]["template"]["spec"]["containers"][0]["image"].split("@", 1)[0]
        repository, sep, tag = image.rpartition(":")
        if not sep or "/" in tag:  # no tag (host:port/name): nothing to pin
            continue
        images[component] = (repository, tag)
    return images


def spark_state(app: dict[str, Any]) -> str:
    """spark-operator's ``status.applicationState.state`` ('' before the operator saw the app)."""
    return str(app.get("status", {}).get("applicationState", {}).get("state", ""))


def spark_driver_pod(app: dict[str, Any]) -> str | None:
    """The driver pod's name once the application is RUNNING, else None."""
    if spark_state(app) != "RUNNING":
        return None
    pod = app.get("status", {}).get("driverInfo", {}).get("podName")
    return str(pod) if pod else None


def spark_executors_running(app: dict[str, Any]) -> bool:
    """As many executors RUNNING (``status.executorState``) as ``spec.executor.instances`` asks for."""
    states = app.get("status", {}).get("executorState", {}) or {}
    wanted = int(app.get("spec", {}).get("executor", {}).get("instances", 1))
    return sum(state == "RUNNING" for state in states.values()) >= wanted


def pod_ready(pod: dict[str, Any]) -> bool:
    """Phase Running and the Ready condition True (its readiness probe answers)."""
    status = pod.get("status", {})
    ready = [c for c in status.get("conditions", []) if c.get("type") == "Ready"]
    return status.get("phase") == "Running" and bool(ready) and ready[0].get("status") == "True"
