"""A real deploy: install charts/adwatch into a cluster, wait until it runs, check /readyz, uninstall.

Runs only when KUBECONFIG names a reachable cluster that already has what k8s/README.md lists
(Strimzi Kafka in namespace ``kafka``) and the skaffold release (``skaffold run -p kind``, which
builds the images and loads them into kind):
    KUBECONFIG=~/.kube/config .venv/bin/pytest tests/e2e/test_kubernetes.py
The images are the ones skaffold built (its tag policy is the git commit): the test reads them
from the skaffold release's Deployments in ADWATCH_K8S_SKAFFOLD_NAMESPACE (default ``adwatch``);
ADWATCH_K8S_IMAGE_TAG overrides the tag (e.g. after ``skaffold build``). Optional:
ADWATCH_K8S_VALUES (an extra values file).

The test's release is isolated from the skaffold release in the same Kafka cluster: its own
topics (``<topic>.e2e-<id>``, KafkaTopic objects in ``kafka``, deleted afterwards) and its own
notifier consumer group, so no alert of one release is consumed by the other.

Each test runs in both detector modes: ``deployment`` (Spark local[2] in one pod: a Deployment
``adwatch-detector``) and ``sparkApplication`` (spark-operator: no detector Deployment; the
fixture waits until the SparkApplication's ``status.applicationState.state`` is RUNNING and its
driver pod is ready). The second runs when the cluster has the SparkApplication CRD and
ADWATCH_K8S_SPARK_VALUES names a values file with a checkpoint the cluster can mount (an
s3a:// URL with an image built with SPARK_CONNECTORS=kafka,s3, or a ReadWriteMany storage
class); it is skipped otherwise, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..deploy import chart
from . import kube

pytestmark = pytest.mark.e2e
TIMEOUT_S = 600
KAFKA_NAMESPACE = "kafka"
SPARK_APP = f"{chart.RELEASE}-detector"  # the chart's SparkApplication (adwatch.instanceName)


@dataclass(frozen=True)
class Release:
    """The test's installed release: its namespace, detector mode and, in spark mode, the driver pod."""

    namespace: str
    mode: str
    driver_pod: str | None = None


def _kubectl(*args: str, namespace: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "-n", namespace, *args], input=stdin, capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout


def _get(kind: str, namespace: str, name: str | None = None) -> Any:
    return json.loads(_kubectl("get", kind, *([name] if name else []), "-o", "json", namespace=namespace))


def _images() -> dict[str, tuple[str, str]]:
    """The images skaffold built: those its release runs (tag overridden by ADWATCH_K8S_IMAGE_TAG)."""
    source = os.environ.get("ADWATCH_K8S_SKAFFOLD_NAMESPACE", "adwatch")
    try:
        images = kube.skaffold_images(_get("deployments", source)["items"])
    except subprocess.CalledProcessError:
        images = {}
    tag = os.environ.get("ADWATCH_K8S_IMAGE_TAG")
    if tag:
        return {c: (images.get(c, (f"adwatch-{c}", ""))[0], tag) for c in kube.COMPONENTS}
    if set(images) != set(kube.COMPONENTS):
        pytest.skip(
            f"no skaffold release in namespace {source} to take the image tags from (found {sorted(images)}): "
            "run `skaffold run -p kind` first or set ADWATCH_K8S_IMAGE_TAG"
        )
    return images


def _wait_for_spark_application(namespace: str) -> str:
    """Until the SparkApplication is RUNNING, its driver pod ready and its executors running: the driver pod."""
    deadline = time.monotonic() + TIMEOUT_S
    state, pod = "", None
    while time.monotonic() < deadline:
        app = _get("sparkapplication", namespace, SPARK_APP)
        state = kube.spark_state(app)
        if state in ("FAILED", "SUBMISSION_FAILED"):
            raise AssertionError(f"SparkApplication {SPARK_APP} {state}: {app.get('status', {})}")
        pod = kube.spark_driver_pod(app)
        if pod is not None and kube.spark_executors_running(app):
            try:
                if kube.pod_ready(_get("pod", namespace, pod)):
                    return pod
            except subprocess.CalledProcessError:
                pass  # the driver pod is being (re)created
        time.sleep(5)
    logs = _kubectl("logs", f"pod/{pod}", "--tail", "200", namespace=namespace) if pod else ""
    raise AssertionError(f"SparkApplication {SPARK_APP} not running after {TIMEOUT_S}s (state {state!r})\n{logs}")


@pytest.fixture(scope="module", params=["deployment", "sparkApplication"])
def release(request: pytest.FixtureRequest) -> Iterator[Release]:
    mode: str = request.param
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig or not Path(kubeconfig).is_file():
        pytest.skip("KUBECONFIG does not name a kubeconfig file: no cluster to deploy to")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (needed for port-forward)")
    import helm_python as helm

    run_id = uuid.uuid4().hex[:6]
    namespace = f"adwatch-e2e-{run_id}"
    files = chart.CASES["kind"] + (
        [Path(os.environ["ADWATCH_K8S_VALUES"])] if "ADWATCH_K8S_VALUES" in os.environ else []
    )
    if mode == "sparkApplication":
        crd = subprocess.run(["kubectl", "get", "crd", "sparkapplications.sparkoperator.k8s.io"], capture_output=True)
        if crd.returncode != 0:
            pytest.skip("no spark-operator in the cluster (SparkApplication CRD missing)")
        if "ADWATCH_K8S_SPARK_VALUES" not in os.environ:
            pytest.skip("ADWATCH_K8S_SPARK_VALUES not set: no checkpoint storage known for the SparkApplication")
        files = [*files, Path(os.environ["ADWATCH_K8S_SPARK_VALUES"])]
    topics = kube.isolated_topics(f"e2e-{run_id}")
    manifest = yaml.safe_dump_all(kube.kafka_topics(topics))
    with helm.Config(kubeconfig_path=kubeconfig, namespace=namespace) as config:
        try:
            config.check_reachable()
        except helm.HelmError as exc:
            pytest.skip(f"the cluster in KUBECONFIG is not reachable: {exc}")
        values = kube.release_values(chart.load_values(files), mode, _images(), topics, f"notifier-e2e-{run_id}")
        try:
            _kubectl("apply", "-f", "-", namespace=KAFKA_NAMESPACE, stdin=manifest)
            for name in topics.values():
                _kubectl(
                    "wait", f"kafkatopic/{name}", "--for=condition=Ready", "--timeout=120s", namespace=KAFKA_NAMESPACE
                )
            config.install(
                str(chart.CHART),
                chart.RELEASE,
                values,
                namespace=namespace,
                create_namespace=True,
                wait="watcher",
                timeout=TIMEOUT_S,
            )
            driver = _wait_for_spark_application(namespace) if mode == "sparkApplication" else None
            yield Release(namespace, mode, driver)
        finally:
            config.uninstall(chart.RELEASE, ignore_not_found=True, wait="watcher", timeout=120)
            subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], capture_output=True)
            subprocess.run(
                ["kubectl", "-n", KAFKA_NAMESPACE, "delete", "-f", "-", "--ignore-not-found", "--wait=false"],
                input=manifest,
                text=True,
                capture_output=True,
            )


def _ready_over_port_forward(namespace: str, target: str, port: int) -> int:
    """Port-forward ``target`` (deploy/NAME or pod/NAME) to a random local port, GET /readyz, stop the forward by its PID."""
    proc = subprocess.Popen(
        ["kubectl", "-n", namespace, "port-forward", target, f":{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:41234 -> 9102"
        local = line.split("127.0.0.1:")[1].split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/readyz", timeout=10) as response:
            return int(response.status)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _expected_deployments(mode: str) -> set[str]:
    names = {f"{chart.RELEASE}-generator", f"{chart.RELEASE}-notifier-console"}
    return names | ({f"{chart.RELEASE}-detector"} if mode == "deployment" else set())


def test_rollouts_are_ready(release: Release) -> None:
    deployments = _get("deployments", release.namespace)["items"]
    names = {d["metadata"]["name"] for d in deployments}
    assert names >= _expected_deployments(release.mode)
    for d in deployments:
        assert d["status"].get("readyReplicas") == d["spec"]["replicas"], d["metadata"]["name"]
    if release.mode == "sparkApplication":
        assert f"{chart.RELEASE}-detector" not in names, "spark mode renders no detector Deployment"
        app = _get("sparkapplication", release.namespace, SPARK_APP)
        assert kube.spark_state(app) == "RUNNING", app.get("status")
        assert release.driver_pod is not None
        assert kube.pod_ready(_get("pod", release.namespace, release.driver_pod))
        assert kube.spark_executors_running(app), app["status"].get("executorState")


def test_readyz_answers_200(release: Release) -> None:
    targets: list[tuple[str, int]] = []
    for d in _get("deployments", release.namespace)["items"]:
        ports = [p for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
        targets += [
            (f"deploy/{d['metadata']['name']}", p["containerPort"]) for p in ports if p.get("name") == "metrics"
        ]
    if release.driver_pod is not None:  # the SparkApplication's driver serves the detector's /metrics
        app = _get("sparkapplication", release.namespace, SPARK_APP)
        (port,) = [p["containerPort"] for p in app["spec"]["driver"]["ports"] if p["name"] == "metrics"]
        targets.append((f"pod/{release.driver_pod}", port))
    assert len(targets) >= 3, targets
    for target, port in targets:
        assert _ready_over_port_forward(release.namespace, target, port) == 200, target


def test_an_injected_scenario_reaches_the_console_notifier(release: Release) -> None:
    """A drill in the generator pod: its traffic spike is detected and printed by the release's console notifier."""
    namespace = release.namespace
    drill = ["--choice", "traffic_spike", "--segments", "US|banner", "--duration", "4m", "--magnitude", "4"]
    _kubectl("exec", "deploy/adwatch-generator", "--", "adwatch-generator", "drill", *drill, namespace=namespace)
    deadline = time.monotonic() + TIMEOUT_S
    logs = ""
    while time.monotonic() < deadline:
        logs = _kubectl("logs", "deploy/adwatch-notifier-console", "--tail", "500", namespace=namespace)
        if "Traffic spike" in logs and "US banner" in logs:
            return
        time.sleep(10)
    raise AssertionError(f"no traffic-spike alert for US banner on the console notifier; last logs:\n{logs[-2000:]}")


def _clickhouse(namespace: str, sql: str) -> list[list[str]]:
    """A query on the release's ClickHouse from inside its pod (the image's ``default`` user, localhost)."""
    out = _kubectl(
        "exec", "statefulset/adwatch-clickhouse", "--", "clickhouse-client", "--query", sql, namespace=namespace
    )
    return [line.split("\t") for line in out.strip().splitlines()]


def _duplicates(namespace: str) -> tuple[int, int, int]:
    """(windows, duplicate windows, duplicate alerts), counted without FINAL: what every query sees."""
    ((windows, dup_windows),) = _clickhouse(
        namespace, "SELECT count(), count() - uniqExact(segment, window_start_ms) FROM ad_metrics"
    )
    ((dup_alerts,),) = _clickhouse(namespace, "SELECT count() - uniqExact(alert_id) FROM ad_alerts")
    return int(windows), int(dup_windows), int(dup_alerts)


def test_history_lands_in_the_release_clickhouse_exactly_once_across_a_detector_restart(release: Release) -> None:
    """The detector pod (or Spark driver) is killed mid-stream: it resumes from its checkpoint, and its
    replayed micro-batch inserts nothing twice (insert_deduplication_token per query, batch, table)."""
    namespace = release.namespace
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and _duplicates(namespace)[0] == 0:
        time.sleep(10)
    before, dup_windows, dup_alerts = _duplicates(namespace)
    assert before > 0, "no window reached the release's ClickHouse"
    assert (dup_windows, dup_alerts) == (0, 0)
    if release.mode == "sparkApplication":
        assert release.driver_pod is not None
        _kubectl("delete", f"pod/{release.driver_pod}", "--wait=false", namespace=namespace)
        _wait_for_spark_application(namespace)
    else:
        _kubectl("delete", "pod", "-l", "app.kubernetes.io/name=detector", "--wait=false", namespace=namespace)
        _kubectl("rollout", "status", "deploy/adwatch-detector", f"--timeout={TIMEOUT_S}s", namespace=namespace)
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and _duplicates(namespace)[0] <= before:
        time.sleep(10)
    after, dup_windows, dup_alerts = _duplicates(namespace)
    assert after > before, "the restarted detector wrote no new window"
    assert (dup_windows, dup_alerts) == (0, 0), f"{dup_windows} windows and {dup_alerts} alerts written twice"
