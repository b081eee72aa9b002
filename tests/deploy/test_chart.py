"""charts/adwatch renders for every environment, and what it renders is valid and consistent
with the services (settings names, routes and rules files, security defaults)."""

from __future__ import annotations

import functools
from typing import Any

import helm_python as helm
import pytest
import yaml
from pydantic_settings import BaseSettings

from adwatch.config import CommonSettings
from adwatch_detector.rules import load_rules
from adwatch_detector.settings import DetectorSettings
from adwatch_generator.settings import GeneratorSettings
from adwatch_notifier.routing import parse_routes
from adwatch_notifier.settings import SECRET_FIELDS, NotifierSettings

from . import chart, validate

CASES = sorted(chart.CASES)
SETTINGS: dict[str, type[BaseSettings]] = {
    "generator": GeneratorSettings,
    "detector": DetectorSettings,
    "notifier": NotifierSettings,
}
# Variables the images read that are not adwatch settings.
OTHER_ENV = {"HOME", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES"}
SPARK_ENV = {"PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "SPARK_LOCAL_DIRS", "SPARK_LOCAL_IP"}


@functools.cache
def rendered(case: str) -> dict[str, str]:
    return chart.render_case(case)


def objects(case: str) -> list[dict[str, Any]]:
    return chart.objects(rendered(case))


def known_env(component: str) -> set[str]:
    """Every env name the component's settings classes accept (plus the notifier's *_FILE secrets)."""
    names = {f"ADWATCH_{f.upper()}" for f in CommonSettings.model_fields}
    cls = SETTINGS[component]
    prefix = str(cls.model_config["env_prefix"])
    names |= {prefix + f.upper() for f in cls.model_fields}
    if component == "notifier":
        names |= {f"{prefix}{f.upper()}_FILE" for f in SECRET_FIELDS}
    return names | OTHER_ENV | (SPARK_ENV if component == "detector" else set())


def pod_specs(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(validate.name_of(o), o["spec"]["template"]["spec"]) for o in objs if o["kind"] == "Deployment"]


@pytest.mark.parametrize("case", CASES)
def test_every_object_is_valid(case: str) -> None:
    objs = objects(case)
    assert objs, f"{case}: nothing rendered"
    for obj in objs:
        validate.validate(obj)


@pytest.mark.parametrize("case", CASES)
def test_examples_are_not_stale(case: str) -> None:
    folder = chart.EXAMPLES / case / "rendered"
    committed = {p.name: p.read_text() for p in sorted(folder.glob("*.yaml"))}
    assert committed == rendered(case), f"{folder} is stale: run .venv/bin/python tests/deploy/chart.py --write"


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"components": {"detecter": {"enabled": True}}}, id="typo-component"),
        pytest.param({"default": {"replica": 2}}, id="typo-default-key"),
        pytest.param({"components": {"detector": {"mode": "spark"}}}, id="bad-detector-mode"),
        pytest.param({"monitoring": {"serviceMonitor": {"enabeld": True}}}, id="typo-monitoring"),
        pytest.param(
            {"components": {"notifier": {"channels": {"slack": {"env": {"ADWATCH_NOTIFIER_SLACK_BOT_TOKEN": "x"}}}}}},
            id="secret-as-plain-env",
        ),
        pytest.param({"components": {"notifier": {"routes": [{"chanel": "slack"}]}}}, id="typo-route"),
    ],
)
def test_schema_rejects_mistakes(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.render(values)


@pytest.mark.parametrize("case", CASES)
def test_env_names_are_real_settings(case: str) -> None:
    """A typo in an env name would be ignored silently by pydantic (extra="ignore"): catch it here."""
    for obj in objects(case):
        component = obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        if component not in SETTINGS:
            continue
        names: set[str] = set()
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-env"):
            names = set(obj["data"])
        elif obj["kind"] == "Deployment":
            names = {e["name"] for c in obj["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
        unknown = names - known_env(component)
        assert not unknown, f"{validate.name_of(obj)}: unknown settings {sorted(unknown)}"


@pytest.mark.parametrize("case", CASES)
def test_secrets_only_by_reference(case: str) -> None:
    secret_names = {f"ADWATCH_NOTIFIER_{f.upper()}" for f in SECRET_FIELDS} | {
        "ADWATCH_NOTIFIER_PAGERDUTY_ROUTING_KEYS"
    }
    for obj in objects(case):
        if obj["kind"] == "ConfigMap":
            assert not secret_names & set(obj.get("data", {})), validate.name_of(obj)
        if obj["kind"] == "Secret":
            pytest.fail(f"the chart must not create Secrets: {validate.name_of(obj)}")
    for name, spec in pod_specs(objects(case)):
        for env in (e for c in spec["containers"] for e in c.get("env", [])):
            assert "value" not in env or env["name"] not in secret_names, f"{name}: {env['name']} as a plain value"


@pytest.mark.parametrize("case", CASES)
def test_pods_are_locked_down_and_probed(case: str) -> None:
    for name, spec in pod_specs(objects(case)):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert container["resources"]["limits"]["memory"], name
            assert {"livenessProbe", "readinessProbe"} <= set(container), name


def test_one_deployment_and_group_per_channel() -> None:
    objs = objects("all-features")
    deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    env = {o["metadata"]["name"]: o["data"] for o in objs if o["kind"] == "ConfigMap" and "data" in o}
    for channel in ("slack", "pagerduty", "email", "webhook", "console"):
        name = f"adwatch-notifier-{channel}"
        assert deployments[name]["spec"]["template"]["spec"]["containers"][0]["args"] == ["--channel", channel]
        assert env[f"{name}-env"]["ADWATCH_NOTIFIER_CHANNEL"] == channel
        assert env[f"{name}-env"]["OTEL_SERVICE_NAME"] == "notifier"


@pytest.mark.parametrize("case", CASES)
def test_files_parse_with_the_services_own_loaders(case: str, tmp_path: Any) -> None:
    """The routes and rules ConfigMaps are read by the notifier's and detector's own parsers."""
    for obj in objects(case):
        if obj["kind"] != "ConfigMap":
            continue
        if "routes.yaml" in obj["data"]:
            assert parse_routes(obj["data"]["routes.yaml"]).routes
        if "rules.yaml" in obj["data"]:
            path = tmp_path / "rules.yaml"
            path.write_text(obj["data"]["rules.yaml"])
            load_rules(str(path))


def test_detector_modes() -> None:
    kind = {o["kind"] for o in objects("kind") if o["metadata"]["name"] == "adwatch-detector"}
    assert kind == {"Deployment", "Service"}
    cloud = [o for o in objects("cloud") if o["kind"] == "SparkApplication"]
    assert len(cloud) == 1 and cloud[0]["spec"]["driver"]["ports"][0]["name"] == "metrics"
    assert not [o for o in objects("cloud") if o["kind"] == "PersistentVolumeClaim"], "object store checkpoint"
    env = next(o["data"] for o in objects("kind") if o["metadata"]["name"] == "adwatch-detector-env")
    assert env["ADWATCH_DETECTOR_SPARK_MASTER"] == "local[2]"
    assert env["ADWATCH_DETECTOR_CHECKPOINT_DIR"] == "/var/lib/adwatch/checkpoint"


def test_values_files_are_yaml_mappings() -> None:
    for files in chart.CASES.values():
        for path in files:
            assert isinstance(yaml.safe_load(path.read_text()), dict), path
