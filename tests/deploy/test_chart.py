"""charts/adwatch renders for every environment, and what it renders is valid and consistent
with the services (settings names, routes and rules files, security defaults)."""

from __future__ import annotations

import functools
import shlex
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
DOWNWARD_ENV = {"K8S_POD_NAME", "K8S_NAMESPACE", "K8S_NODE_NAME"}  # the pod's identity, for OTEL_RESOURCE_ATTRIBUTES
# the stores' passwords (secretKeyRefs), which the kubelet substitutes into ADWATCH_*_URL as $(VAR)
STORE_PASSWORDS = {"REDIS_PASSWORD", "CLICKHOUSE_PASSWORD"}
OTHER_ENV = (
    {"HOME", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES"}
    | DOWNWARD_ENV
    | STORE_PASSWORDS
)
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
    return [
        (validate.name_of(o), o["spec"]["template"]["spec"]) for o in objs if o["kind"] in ("Deployment", "StatefulSet")
    ]


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
    assert (folder / chart.NOTES).read_text() == chart.render_notes(chart.load_values(chart.CASES[case])), (
        f"{folder / chart.NOTES} is stale: run .venv/bin/python tests/deploy/chart.py --write"
    )
    assert committed == chart.stable(rendered(case)), (
        f"{folder} is stale: run .venv/bin/python tests/deploy/chart.py --write"
    )


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"components": {"detecter": {"enabled": True}}}, id="typo-component"),
        pytest.param({"default": {"replica": 2}}, id="typo-default-key"),
        pytest.param({"components": {"detector": {"mode": "spark"}}}, id="bad-detector-mode"),
        pytest.param({"components": {"detector": {"segments": {"set": "country"}}}}, id="typo-segments"),
        pytest.param({"components": {"detector": {"segments": {"maxTracked": 0}}}}, id="segment-cap-zero"),
        pytest.param({"monitoring": {"serviceMonitor": {"enabeld": True}}}, id="typo-monitoring"),
        pytest.param(
            {"components": {"notifier": {"channels": {"slack": {"env": {"ADWATCH_NOTIFIER_SLACK_BOT_TOKEN": "x"}}}}}},
            id="secret-as-plain-env",
        ),
        pytest.param({"components": {"notifier": {"routes": [{"chanel": "slack"}]}}}, id="typo-route"),
        pytest.param(
            {
                "components": {
                    "notifier": {"channels": {"slack": {"ingress": {"enabled": True, "paths": ["/metrics"]}}}}
                }
            },
            id="ingress-to-metrics",
        ),
        pytest.param(
            {"components": {"notifier": {"channels": {"slack": {"ingress": {"enabled": True}}}}}},
            id="ingress-without-host",
        ),
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
        if obj["kind"] == "Secret":  # only the stores' generated passwords (templates/secrets.yaml)
            annotations = obj["metadata"].get("annotations", {})
            assert annotations.get("adwatch.io/generated") == "true", f"a Secret the chart must not make: {obj}"
            assert set(obj["data"]) == {"password"} and annotations["helm.sh/resource-policy"] == "keep"
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


def test_default_chart_routes_group_like_the_notifiers_default() -> None:
    """Out of the box Slack, PagerDuty and email group by alert type, in the chart as in the notifier."""
    from adwatch_notifier.routing import DEFAULT_ROUTES_YAML

    [routes] = [o["data"]["routes.yaml"] for o in objects("default") if "routes.yaml" in o.get("data", {})]
    chart, builtin = parse_routes(routes).routes, parse_routes(DEFAULT_ROUTES_YAML).routes
    for table in (chart, builtin):
        grouped = {r.channel: r.group for r in table if r.channel in ("slack", "pagerduty", "email")}
        assert set(grouped) == {"slack", "pagerduty", "email"}
        assert all(g is not None and g.by == ("alert_type",) and g.wait_s <= 10 for g in grouped.values()), grouped
    assert {r.channel: r.group for r in chart if r.channel != "console"} == {
        r.channel: r.group for r in builtin if r.channel not in ("console", "webhook")
    }


def test_only_the_notifiers_http_routes_are_exposed() -> None:
    """Slack must reach /slack/actions; /metrics on the same port stays inside the cluster."""
    (ingress,) = [o for o in objects("all-features") if o["kind"] == "Ingress"]
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/slack/actions", "Exact"), ("/api/v1/silences", "Prefix")]
    assert {p["backend"]["service"]["name"] for p in paths} == {"adwatch-notifier-slack"}
    assert not [o for o in objects("default") if o["kind"] == "Ingress"]


def test_detector_modes() -> None:
    kind = {o["kind"] for o in objects("kind") if o["metadata"]["name"] == "adwatch-detector"}
    assert kind == {"Deployment", "Service", "ServiceAccount"}
    cloud = [o for o in objects("cloud") if o["kind"] == "SparkApplication"]
    assert len(cloud) == 1 and cloud[0]["spec"]["driver"]["ports"][0]["name"] == "metrics"
    assert not [o for o in objects("cloud") if o["kind"] == "PersistentVolumeClaim"], "object store checkpoint"
    env = next(o["data"] for o in objects("kind") if o["metadata"]["name"] == "adwatch-detector-env")
    assert env["ADWATCH_DETECTOR_SPARK_MASTER"] == "local[2]"
    assert env["ADWATCH_DETECTOR_CHECKPOINT_DIR"] == "/var/lib/adwatch/checkpoint"


@pytest.mark.parametrize("case", CASES)
def test_detector_segment_values_become_settings_the_detector_accepts(case: str) -> None:
    """components.detector.segments -> ADWATCH_DETECTOR_SEGMENT_* env, read by DetectorSettings
    itself (the cardinality guard included) as the detector reads it at start-up."""
    from adwatch_detector.settings import DetectorSettings

    values = chart.load_values(chart.CASES[case])
    detector = chart._merge(chart.load_values([chart.CHART / "values.yaml"]), values)["components"]["detector"]
    env = next(o["data"] for o in objects(case) if o["metadata"]["name"] == "adwatch-detector-env")
    names = {k: v for k, v in env.items() if k.startswith("ADWATCH_DETECTOR_")}
    settings = DetectorSettings.model_validate(
        {k.removeprefix("ADWATCH_DETECTOR_").lower(): v for k, v in names.items()}
    )
    want = detector["segments"]
    assert settings.segment_sets == want["sets"] and settings.max_tracked_segments == want["maxTracked"]
    assert settings.min_segment_volume == want["minVolume"] and settings.segment_idle_seconds == want["idleSeconds"]
    assert settings.drilldown_top == want["drilldownTop"]
    assert settings.hierarchy.sets  # parsed, not refused


def test_the_environments_watch_a_hierarchy_with_a_cap() -> None:
    cloud = chart.load_values(chart.CASES["cloud"])["components"]["detector"]["segments"]
    assert cloud["sets"].split(";")[:3] == ["*", "country", "country,ad_format"] and "campaign_id" in cloud["sets"]
    assert cloud["minVolume"] > 0 and cloud["maxTracked"] <= 250_000
    kind = chart.load_values(chart.CASES["kind"])["components"]["detector"]["segments"]
    assert kind["maxTracked"] < cloud["maxTracked"]


def test_an_unbounded_segment_set_is_refused_by_the_detector_not_discovered_as_an_oom() -> None:
    from adwatch_detector.settings import DetectorSettings

    values = {"components": {"detector": {"segments": {"sets": "country;user_hash"}}}}
    env = next(
        o["data"] for o in chart.objects(chart.render(values)) if o["metadata"]["name"] == "adwatch-detector-env"
    )
    with pytest.raises(ValueError, match="unbounded"):
        DetectorSettings.model_validate({"segment_sets": env["ADWATCH_DETECTOR_SEGMENT_SETS"]})


def test_values_files_are_yaml_mappings() -> None:
    for files in chart.CASES.values():
        for path in files:
            assert isinstance(yaml.safe_load(path.read_text()), dict), path


def _pyspark_lock_version() -> str:
    import tomllib

    lock = tomllib.loads((chart.REPO / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == "pyspark")


def test_spark_application_runs_the_images_spark_and_launcher_with_rbac() -> None:
    from adwatch.contracts import TOPIC_AD_EVENTS, TOPIC_PARTITIONS

    cloud = objects("cloud")
    (app,) = [o for o in cloud if o["kind"] == "SparkApplication"]
    spec = app["spec"]
    assert spec["sparkVersion"] == _pyspark_lock_version()
    # the image copies its launcher there (services/detector/Dockerfile)
    assert spec["mainApplicationFile"] == "local:///opt/adwatch/app/launcher.py"
    assert "/opt/adwatch/app/launcher.py" in (chart.REPO / "services/detector/Dockerfile").read_text()
    assert spec["image"].endswith("/adwatch-detector:0.1.0") and spec["type"] == "Python"
    assert spec["restartPolicy"]["type"] == "Always"
    assert spec["dynamicAllocation"] == {"enabled": False}
    executor, driver = spec["executor"], spec["driver"]
    assert executor["instances"] * executor["cores"] == TOPIC_PARTITIONS[TOPIC_AD_EVENTS]
    assert spec["sparkConf"].get("spark.dynamicAllocation.enabled", "false") == "false"
    sa = driver["serviceAccount"]
    assert executor["serviceAccount"] == sa
    assert any(o["kind"] == "ServiceAccount" and o["metadata"]["name"] == sa for o in cloud)
    (binding,) = [o for o in cloud if o["kind"] == "RoleBinding" and o["metadata"]["name"] == sa]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": chart.NAMESPACE}]
    (role,) = [o for o in cloud if o["kind"] == "Role" and o["metadata"]["name"] == binding["roleRef"]["name"]]
    pods = next(r for r in role["rules"] if "pods" in r["resources"])
    assert {"create", "delete", "watch", "list", "get"} <= set(pods["verbs"])
    # the detector env in spark mode leaves the master and the bind address to Spark
    env = next(o["data"] for o in cloud if o["metadata"]["name"] == "adwatch-detector-env")
    assert "ADWATCH_DETECTOR_SPARK_MASTER" not in env and "SPARK_LOCAL_IP" not in env
    assert env["ADWATCH_DETECTOR_CHECKPOINT_DIR"].startswith("s3a://")


def test_spark_application_needs_a_shared_checkpoint() -> None:
    values = chart.load_values(chart.CASES["cloud"])
    values["components"]["detector"]["checkpoint"]["url"] = ""
    with pytest.raises(Exception, match="ReadWriteMany"):
        chart.render(values)


def _containers_env(case: str) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for o in objects(case):
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") not in SETTINGS:
            continue  # Redis (redis.yaml) is not an adwatch component
        if o["kind"] == "Deployment":
            out += [
                (f"{o['metadata']['name']}/{c['name']}", c.get("env", []))
                for c in o["spec"]["template"]["spec"]["containers"]
            ]
        elif o["kind"] == "SparkApplication":
            out += [
                (f"{o['metadata']['name']}/{role}", o["spec"][role].get("env", [])) for role in ("driver", "executor")
            ]
    return out


@pytest.mark.parametrize("case", ["default", "kind", "cloud", "all-features"])
def test_every_component_has_downward_api_identity_and_otel_resource_attributes(case: str) -> None:
    containers = _containers_env(case)
    assert containers
    for name, env in containers:
        by_name = {e["name"]: e for e in env}
        fields = {
            k: by_name[k]["valueFrom"]["fieldRef"]["fieldPath"]
            for k in ("K8S_POD_NAME", "K8S_NAMESPACE", "K8S_NODE_NAME")
            if k in by_name
        }
        assert fields == {
            "K8S_POD_NAME": "metadata.name",
            "K8S_NAMESPACE": "metadata.namespace",
            "K8S_NODE_NAME": "spec.nodeName",
        }, name
        attrs = by_name["OTEL_RESOURCE_ATTRIBUTES"]["value"]
        names = [e["name"] for e in env]
        assert names.index("OTEL_RESOURCE_ATTRIBUTES") > names.index("K8S_NODE_NAME"), name  # $(VAR) order
        assert "k8s.pod.name=$(K8S_POD_NAME)" in attrs and "k8s.namespace.name=$(K8S_NAMESPACE)" in attrs, name
        assert "k8s.node.name=$(K8S_NODE_NAME)" in attrs, name
        if "notifier-" in name:
            assert "adwatch.channel=" in attrs, name


@pytest.mark.parametrize("case", ["kind", "all-features"])
def test_redis_keeps_its_data_across_restarts(case: str) -> None:
    """The release's Redis: AOF (fsync every second) on a PersistentVolumeClaim, probed; none without redis.deploy."""
    (redis,) = [o for o in objects(case) if o["metadata"]["name"] == "adwatch-redis" and o["kind"] == "StatefulSet"]
    spec = redis["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["sh", "-c"]
    (script,) = container["args"]
    first, *config = script.splitlines()
    server = shlex.split(first)
    assert server[:3] == ["exec", "redis-server", "-"] and server[-1] == "<<EOF"  # the password's config on stdin
    assert config == ['requirepass "$REDIS_PASSWORD"', "EOF"]
    server = server[:-1]
    options = dict(zip(server[3::2], server[4::2], strict=True))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    (mount,) = container["volumeMounts"]
    assert options["--dir"] == mount["mountPath"]
    assert "volumes" not in spec, "data must not be an emptyDir"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == mount["name"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    assert {"readinessProbe", "livenessProbe"} <= set(container)
    assert "PONG" in " ".join(container["readinessProbe"]["exec"]["command"])  # not ready while loading the AOF
    assert not [o for o in objects("cloud") if o["metadata"]["name"] == "adwatch-redis"], "redis.deploy=false"


def _statefulset(objs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [o for o in objs if o["kind"] == "StatefulSet" and o["metadata"]["name"] == name]
    return found


def test_redis_persistence_values() -> None:
    values = chart.load_values(chart.CASES["kind"])
    values["redis"]["persistence"] = {"enabled": True, "size": "5Gi", "storageClassName": "fast-ssd"}
    redis = _statefulset(chart.objects(chart.render(values)), "adwatch-redis")
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    values["redis"]["persistence"] = {"enabled": False}
    redis = _statefulset(chart.objects(chart.render(values)), "adwatch-redis")
    assert "volumeClaimTemplates" not in redis["spec"] and redis["spec"]["template"]["spec"]["volumes"]
    with pytest.raises(helm.HelmValuesError):
        chart.render({"redis": {"persistence": {"size": "lots"}}})
