"""k8s/ prerequisites and skaffold.yaml agree with the CRDs, the contracts, the services and the chart."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from adwatch.contracts import TOPIC_CONFIGS, TOPIC_PARTITIONS

from . import chart, validate

K8S = chart.REPO / "k8s"
SERVICES = sorted(p.name for p in (chart.REPO / "services").iterdir() if (p / "pyproject.toml").exists())


def k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and "apiVersion" in doc and path.name != "kind-cluster.yaml"
    ]


def skaffold() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((chart.REPO / "skaffold.yaml").read_text())
    return config


def _json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """The ``add``/``replace`` operations skaffold profiles use (RFC 6902), applied to a copy."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            if op["op"] == "add":
                target.insert(len(target) if last == "-" else int(last), op["value"])
            else:
                target[int(last)] = op["value"]
        else:
            assert op["op"] == "add" or last in target, f"replace of a missing {op['path']}"
            target[last] = op["value"]
    return doc


def skaffold_profile(name: str) -> dict[str, Any]:
    """skaffold.yaml as profile ``name`` makes it (its patches applied)."""
    config = skaffold()
    (profile,) = [p for p in config["profiles"] if p["name"] == name]
    patched: dict[str, Any] = _json_patch(
        {k: v for k, v in config.items() if k != "profiles"}, profile.get("patches", [])
    )
    return patched


def test_k8s_custom_resources_match_the_crds() -> None:
    objs = k8s_objects()
    assert {o["kind"] for _, o in objs} >= {"Kafka", "KafkaNodePool", "KafkaTopic"}
    for path, obj in objs:
        assert validate.is_custom(obj), f"{path.name}: {validate.name_of(obj)}"
        validate.validate_custom(obj)


def test_topics_match_the_contracts() -> None:
    topics = {o["spec"]["topicName"]: o for _, o in k8s_objects() if o["kind"] == "KafkaTopic"}
    assert {name: o["spec"]["partitions"] for name, o in topics.items()} == TOPIC_PARTITIONS
    for name, config in TOPIC_CONFIGS.items():  # e.g. alerts.deliveries is compacted: its last record per key stays
        assert {k: str(v) for k, v in topics[name]["spec"]["config"].items()} == config, name
    clusters = {o["metadata"]["name"] for _, o in k8s_objects() if o["kind"] == "Kafka"}
    assert {o["metadata"]["labels"]["strimzi.io/cluster"] for o in topics.values()} <= clusters


def test_chart_bootstrap_points_at_the_strimzi_cluster() -> None:
    (kafka,) = [o for _, o in k8s_objects() if o["kind"] == "Kafka"]
    (listener,) = [x for x in kafka["spec"]["kafka"]["listeners"] if x["type"] == "internal"]
    expected = f"{kafka['metadata']['name']}-kafka-bootstrap.{kafka['metadata']['namespace']}.svc:{listener['port']}"
    for case in chart.CASES:
        assert chart.load_values(chart.CASES[case]).get("kafka", {}).get("bootstrap", expected) == expected, case
    assert yaml.safe_load((chart.CHART / "values.yaml").read_text())["kafka"]["bootstrap"] == expected
    pools = [o for _, o in k8s_objects() if o["kind"] == "KafkaNodePool"]
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"] for p in pools)


def test_skaffold_has_one_artifact_per_service() -> None:
    config = skaffold()
    assert config["apiVersion"] == "skaffold/v4beta14"
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert sorted(artifacts) == [f"adwatch-{name}" for name in SERVICES]
    for name in SERVICES:
        artifact = artifacts[f"adwatch-{name}"]
        assert artifact["context"] == "."
        assert artifact["docker"]["dockerfile"] == f"services/{name}/Dockerfile"


@pytest.mark.parametrize("name", SERVICES)
def test_service_has_a_dockerfile(name: str) -> None:
    assert (chart.REPO / "services" / name / "Dockerfile").is_file(), f"skaffold builds services/{name}/Dockerfile"


def test_skaffold_images_reach_the_chart_components() -> None:
    (release,) = skaffold()["deploy"]["helm"]["releases"]
    assert (chart.REPO / release["chartPath"]).resolve() == chart.CHART
    components = yaml.safe_load((chart.CHART / "values.yaml").read_text())["components"]
    assert sorted(components) == SERVICES
    templates = release["setValueTemplates"]
    for name in SERVICES:
        artifact = re.sub(r"[^A-Za-z0-9]", "_", f"adwatch-{name}")
        assert templates[f"components.{name}.imageOverride.repository"] == f"{{{{.IMAGE_REPO_{artifact}}}}}"
        assert templates[f"components.{name}.imageOverride.tag"] == f"{{{{.IMAGE_TAG_{artifact}}}}}"
    for path in release["valuesFiles"]:
        assert (chart.REPO / path).is_file(), path


def test_skaffold_profiles_use_the_environment_values() -> None:
    profiles = {p["name"]: p for p in skaffold()["profiles"]}
    values = [op["value"] for op in profiles["cloud"]["patches"] if op["path"].endswith("/valuesFiles")]
    assert values == [["helm/values-cloud.yaml"]]
    assert "kind" in profiles


@pytest.mark.parametrize("name", SERVICES)
def test_skaffold_builds_like_make_images(name: str) -> None:
    """skaffold builds with BuildKit, its hook makes the wheelhouse, and its default base is the Dockerfile's."""
    config = skaffold()
    assert config["build"]["local"]["useBuildkit"] and config["build"]["local"]["useDockerCLI"]
    artifact = {a["image"]: a for a in config["build"]["artifacts"]}[f"adwatch-{name}"]
    assert artifact["hooks"]["before"][0]["command"] == ["scripts/images.sh", "wheels", name]
    dockerfile = (chart.REPO / "services" / name / "Dockerfile").read_text()
    (pinned,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, flags=re.M)
    assert artifact["docker"]["buildArgs"]["BASE_IMAGE"] == f'{{{{default "{pinned}" .BASE_IMAGE}}}}'


@pytest.mark.parametrize("profile", ["kind", "cloud"])
def test_skaffold_builds_the_detector_connectors_its_values_need(profile: str) -> None:
    """An s3a:// checkpoint needs hadoop-aws in the image (SPARK_CONNECTORS has s3), and a Kafka
    connector built in is the one the job reads with (DETECTOR_SOURCE=kafka): the Dockerfile's
    defaults are no connector and the Python reader."""
    config = skaffold_profile(profile)
    (detector,) = [a for a in config["build"]["artifacts"] if a["image"] == "adwatch-detector"]
    args = detector["docker"]["buildArgs"]
    dockerfile = (chart.REPO / "services/detector/Dockerfile").read_text()
    defaults = dict(re.findall(r"^ARG (SPARK_CONNECTORS|DETECTOR_SOURCE)=(\S+)$", dockerfile, flags=re.M))
    assert defaults == {"SPARK_CONNECTORS": "none", "DETECTOR_SOURCE": "python"}
    assert "ENV ADWATCH_DETECTOR_SOURCE=${DETECTOR_SOURCE}" in dockerfile
    connectors = set(args.get("SPARK_CONNECTORS", defaults["SPARK_CONNECTORS"]).split(",")) - {"none"}
    source = args.get("DETECTOR_SOURCE", defaults["DETECTOR_SOURCE"])
    script = (chart.REPO / "services/detector/docker/spark-connectors.sh").read_text()
    assert all(re.search(rf"^\s+{c}\)", script, flags=re.M) for c in connectors), connectors

    (release,) = config["deploy"]["helm"]["releases"]
    values = chart.load_values([chart.REPO / f for f in release["valuesFiles"]])
    detector_values = values.get("components", {}).get("detector", {})
    checkpoint = detector_values.get("checkpoint", {}).get("url", "")
    if checkpoint.startswith("s3a://"):
        assert "s3" in connectors, f"{profile}: {checkpoint} but the image is built without hadoop-aws"
    assert (source == "kafka") == ("kafka" in connectors), f"{profile}: source {source}, connectors {connectors}"
    # nothing in the values switches the job back to another reader
    assert detector_values.get("env", {}).get("ADWATCH_DETECTOR_SOURCE", source) == source
    if profile == "cloud":
        assert connectors == {"kafka", "s3"} and source == "kafka"


def test_images_sh_reads_kafka_when_built_with_the_kafka_connector() -> None:
    """``SPARK_CONNECTORS=kafka,s3 scripts/images.sh build detector`` passes DETECTOR_SOURCE=kafka."""
    script = (chart.REPO / "scripts/images.sh").read_text()
    assert '--build-arg "SPARK_CONNECTORS=$connectors"' in script
    assert '--build-arg "DETECTOR_SOURCE=${DETECTOR_SOURCE:-$source}"' in script
    assert '[[ ",$connectors," == *,kafka,* ]] && source=kafka' in script


# The Spark in each kubeflow spark-operator controller image: its Dockerfile's SPARK_IMAGE
# (github.com/kubeflow/spark-operator, tag v<version>). Add a row when the pin moves.
OPERATOR_SPARK = {"2.3.0": "4.0.0", "2.4.0": "4.0.0", "2.5.0": "4.0.1", "2.5.1": "4.0.1", "2.5.2": "4.0.4"}


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def test_spark_operator_submits_with_the_images_spark_major() -> None:
    """uv.lock's pyspark (the image's Spark) = the chart's sparkVersion; the operator's controller
    image is pinned to its chart version, and the Spark it submits with has the same major."""
    import tomllib

    lock = tomllib.loads((chart.REPO / "uv.lock").read_text())
    image_spark = next(p["version"] for p in lock["package"] if p["name"] == "pyspark")
    chart_spark = str(
        yaml.safe_load((chart.CHART / "values.yaml").read_text())["components"]["detector"]["spark"]["version"]
    )
    assert chart_spark == image_spark
    values_file = K8S / "spark-operator-values.yaml"
    text = values_file.read_text()
    versions = set(re.findall(r"--version (\S+)", text)) | set(
        re.findall(r"spark-operator/spark-operator --version (\S+)", (K8S / "README.md").read_text())
    )
    (operator_chart,) = versions
    values = yaml.safe_load(text)
    assert values["image"]["repository"] == "kubeflow/spark-operator/controller"
    assert values["image"]["tag"] == operator_chart, "the controller image is pinned to the chart's version"
    operator_spark = OPERATOR_SPARK[operator_chart]
    assert f"submits with Spark {operator_spark}" in text, "the values file names the Spark it submits with"
    assert _major_minor(operator_spark)[0] == _major_minor(image_spark)[0], (operator_spark, image_spark)
    # the chart makes the driver's service account and RBAC; the operator makes none there
    assert values["spark"]["serviceAccount"]["create"] is False and values["spark"]["rbac"]["create"] is False
    (app,) = [o for o in chart.objects(chart.render_case("cloud")) if o["kind"] == "SparkApplication"]
    assert app["spec"]["sparkVersion"] == image_spark
    assert chart.NAMESPACE in values["spark"]["jobNamespaces"]


@pytest.mark.parametrize("profile", ["kind", "cloud"])
def test_skaffold_port_forwards_reach_what_the_profile_deploys(profile: str) -> None:
    """Every forward names an object its values render (the driver pod: spark-operator's
    <app>-driver); cloud forwards Grafana, where the chart ships its dashboard."""
    config = skaffold_profile(profile)
    (release,) = config["deploy"]["helm"]["releases"]
    objs = chart.objects(chart.render(chart.load_values([chart.REPO / f for f in release["valuesFiles"]])))
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    names |= {("Pod", f"{o['metadata']['name']}-driver") for o in objs if o["kind"] == "SparkApplication"}
    ports = {
        o["metadata"]["name"]: {
            p["containerPort"] for c in o["spec"]["template"]["spec"]["containers"] for p in c["ports"]
        }
        for o in objs
        if o["kind"] == "Deployment"
    }
    ports |= {
        f"{o['metadata']['name']}-driver": {p["containerPort"] for p in o["spec"]["driver"]["ports"]}
        for o in objs
        if o["kind"] == "SparkApplication"
    }
    forwards = config["portForward"]
    assert len({f["localPort"] for f in forwards}) == len(forwards)
    grafana = [f for f in forwards if "grafana" in f["resourceName"]]
    for f in forwards:
        if f in grafana:
            continue
        assert f["namespace"] == release["namespace"], f
        assert (f["resourceType"].capitalize(), f["resourceName"]) in names, f"{profile}: {f} renders nothing"
        assert f["port"] in ports[f["resourceName"]], f
    dashboards = [o for o in objs if o["kind"] == "ConfigMap" and "dashboard" in o["metadata"]["name"]]
    assert bool(grafana) == bool(dashboards), f"{profile}: Grafana forward {grafana}, dashboards {len(dashboards)}"
    assert profile != "cloud" or grafana[0]["localPort"] == 3000
