"""A real deploy: install charts/adwatch into a cluster, wait for the rollouts, check /readyz, uninstall.

Runs only when KUBECONFIG names a reachable cluster that already has what k8s/README.md lists
(Strimzi Kafka + topics) and the images (e.g. `skaffold build -p kind` into a kind cluster).
    KUBECONFIG=~/.kube/config .venv/bin/pytest tests/e2e/test_kubernetes.py
Optional: ADWATCH_K8S_VALUES (extra values file), ADWATCH_K8S_IMAGE_TAG (default latest).

Each test runs in both detector modes: ``deployment`` (Spark local[2] in one pod) and
``sparkApplication`` (spark-operator; runs when the cluster has the SparkApplication CRD and
ADWATCH_K8S_SPARK_VALUES names a values file with a checkpoint the cluster can mount, e.g. an
s3a:// URL or a ReadWriteMany storage class; skipped otherwise, saying so).
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
from pathlib import Path
from typing import Any

import pytest

from ..deploy import chart

pytestmark = pytest.mark.e2e
TIMEOUT_S = 600


def _kubectl(*args: str, namespace: str) -> str:
    result = subprocess.run(
        ["kubectl", "-n", namespace, *args], capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout


@pytest.fixture(scope="module", params=["deployment", "sparkApplication"])
def release(request: pytest.FixtureRequest) -> Iterator[tuple[Any, str]]:
    mode: str = request.param
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig or not Path(kubeconfig).is_file():
        pytest.skip("KUBECONFIG does not name a kubeconfig file: no cluster to deploy to")
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (needed for port-forward)")
    import helm_python as helm

    namespace = f"adwatch-e2e-{uuid.uuid4().hex[:6]}"
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
    values = chart.load_values(files)
    values.setdefault("components", {}).setdefault("detector", {})["mode"] = mode
    tag = os.environ.get("ADWATCH_K8S_IMAGE_TAG", "latest")
    values.setdefault("default", {}).setdefault("image", {})["tag"] = tag
    with helm.Config(kubeconfig_path=kubeconfig, namespace=namespace) as config:
        try:
            config.check_reachable()
        except helm.HelmError as exc:
            pytest.skip(f"the cluster in KUBECONFIG is not reachable: {exc}")
        try:
            config.install(
                str(chart.CHART),
                chart.RELEASE,
                values,
                namespace=namespace,
                create_namespace=True,
                wait="watcher",
                timeout=TIMEOUT_S,
            )
            yield config, namespace
        finally:
            config.uninstall(chart.RELEASE, ignore_not_found=True, wait="watcher", timeout=120)
            subprocess.run(["kubectl", "delete", "namespace", namespace, "--wait=false"], capture_output=True)


def _ready_over_port_forward(namespace: str, deployment: str, port: int) -> int:
    """Port-forward to a random local port, GET /readyz, stop the forward by its PID."""
    proc = subprocess.Popen(
        ["kubectl", "-n", namespace, "port-forward", f"deploy/{deployment}", f":{port}"],
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


def test_rollouts_are_ready(release: tuple[Any, str]) -> None:
    _, namespace = release
    deployments = json.loads(_kubectl("get", "deployments", "-o", "json", namespace=namespace))["items"]
    assert {d["metadata"]["name"] for d in deployments} >= {"adwatch-detector", "adwatch-notifier-console"}
    for d in deployments:
        assert d["status"].get("readyReplicas") == d["spec"]["replicas"], d["metadata"]["name"]


def test_readyz_answers_200(release: tuple[Any, str]) -> None:
    _, namespace = release
    deployments = json.loads(_kubectl("get", "deployments", "-o", "json", namespace=namespace))["items"]
    for d in deployments:
        ports = [p for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
        metrics = [p["containerPort"] for p in ports if p.get("name") == "metrics"]
        if metrics:
            assert _ready_over_port_forward(namespace, d["metadata"]["name"], metrics[0]) == 200


def test_an_injected_scenario_reaches_the_console_notifier(release: tuple[Any, str]) -> None:
    """A drill in the generator pod: its traffic spike is detected and printed by the console notifier."""
    _, namespace = release
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
