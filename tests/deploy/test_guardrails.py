"""The release's stores (Redis, ClickHouse) and the guard rails around the pods (ServiceAccounts,
probes, PodDisruptionBudgets, NetworkPolicies, KEDA ScaledObjects), for every environment."""

from __future__ import annotations

import base64
import functools
import re
import shlex
from typing import Any

import helm_python as helm
import pytest
import yaml

from adwatch.contracts import TOPIC_ALERTS, TOPIC_PARTITIONS

from . import chart

CASES = sorted(chart.CASES)


@functools.cache
def rendered(case: str) -> dict[str, str]:
    return chart.render_case(case)


def objects(case: str) -> list[dict[str, Any]]:
    return chart.objects(rendered(case))


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def workloads(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


def pods(objs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Every pod the release starts, by a name -> its labels (SparkApplication driver and executors too)."""
    out = {f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["metadata"]["labels"] for o in workloads(objs)}
    for app in (o for o in objs if o["kind"] == "SparkApplication"):
        for role in ("driver", "executor"):
            out[f"SparkApplication/{app['metadata']['name']}/{role}"] = app["spec"][role]["labels"]
    return out


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels + matchExpressions In/NotIn/Exists) against pod labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


# ---- Redis and ClickHouse: passwords only in Secrets -------------------------------------------


def generated_passwords(case: str) -> list[str]:
    return [
        base64.b64decode(s["data"]["password"]).decode()
        for s in by_kind(objects(case), "Secret").values()
        if s["metadata"].get("annotations", {}).get("adwatch.io/generated") == "true"
    ]


@pytest.mark.parametrize("case", CASES)
def test_store_passwords_appear_only_in_their_secret(case: str) -> None:
    passwords = generated_passwords(case)
    if case in ("default", "kind"):
        assert passwords, "the release's Redis (and kind's ClickHouse) get a generated password"
    for password in passwords:
        assert re.fullmatch(r"[A-Za-z0-9]{32}", password), "URL-safe, 32 characters"
        encoded = base64.b64encode(password.encode()).decode()
        for name, text in rendered(case).items():
            if name != "secrets.yaml":
                assert password not in text and encoded not in text, f"{case}: a generated password in {name}"
    for obj in objects(case):
        if obj["kind"] == "ConfigMap":  # no store URL (it would carry the password) as a plain setting
            assert not {"ADWATCH_REDIS_URL", "ADWATCH_CLICKHOUSE_URL"} & set(obj.get("data", {})), obj["metadata"]
    for wl in workloads(objects(case)):
        for container in wl["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                if "PASSWORD" in entry["name"] or (entry["name"].endswith("_URL") and "value" not in entry):
                    assert "secretKeyRef" in entry["valueFrom"], f"{wl['metadata']['name']}: {entry}"
                if entry["name"].endswith("_URL") and "@" in entry.get("value", ""):  # credentials only as $(VAR)
                    userinfo = entry["value"].split("://", 1)[1].split("@", 1)[0]
                    assert re.fullmatch(r"[A-Za-z0-9_]*:\$\([A-Z_]+_PASSWORD\)", userinfo), entry
            assert "requirepass" not in " ".join(container.get("command", []))
            for arg in container.get("args", []):
                assert not re.search(r"requirepass\s+\"?[A-Za-z0-9]{8}", arg), "a literal password in args"


@pytest.mark.parametrize("case", CASES)
def test_every_component_reaches_redis_with_its_password(case: str) -> None:
    values = chart.load_values(chart.CASES[case])
    deploy = values.get("redis", {}).get("deploy", True)
    for wl in by_kind(objects(case), "Deployment").values():
        (container,) = wl["spec"]["template"]["spec"]["containers"]
        env = env_of(container)
        url = env["ADWATCH_REDIS_URL"]
        if deploy:
            assert url["value"] == "redis://:$(REDIS_PASSWORD)@adwatch-redis:6379/0"
            names = list(env)
            assert names.index("REDIS_PASSWORD") < names.index("ADWATCH_REDIS_URL"), "$(VAR) needs it first"
            assert (
                env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] in by_kind(objects(case), "Secret")
                or (values["redis"]["auth"]["existingSecret"])
            )
        else:
            assert url["valueFrom"]["secretKeyRef"] == {"name": "adwatch-infra", "key": "redis-url"}


def test_redis_password_from_an_existing_secret() -> None:
    objs = objects("all-features")  # redis.auth.existingSecret: adwatch-redis-auth, key redis-password
    assert "adwatch-redis" not in by_kind(objs, "Secret")
    redis = by_kind(objs, "StatefulSet")["adwatch-redis"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    ref = {"name": "adwatch-redis-auth", "key": "redis-password"}
    assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref
    assert env_of(container)["REDISCLI_AUTH"]["value"] == "$(REDIS_PASSWORD)"  # the probes' redis-cli
    script = container["args"][0]
    assert 'requirepass "$REDIS_PASSWORD"' in script and "requirepass" not in shlex.split(script.splitlines()[0])
    for wl in by_kind(objs, "Deployment").values():
        (c,) = wl["spec"]["template"]["spec"]["containers"]
        assert env_of(c)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref


def test_external_redis_needs_a_url_secret() -> None:
    """deploy=false with no Secret: a clear message, never a URL to a Service that does not exist."""
    with pytest.raises(helm.HelmError, match=r"redis.deploy is false.*set redis.external.existingSecret"):
        chart.render({"redis": {"deploy": False}})
    objs = chart.objects(chart.render({"redis": {"deploy": False, "external": {"existingSecret": "my-redis"}}}))
    assert not [o for o in objs if o["metadata"]["name"] == "adwatch-redis"]
    wl = by_kind(objs, "Deployment")["adwatch-notifier-console"]
    ref = env_of(wl["spec"]["template"]["spec"]["containers"][0])["ADWATCH_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "my-redis", "key": "redis-url"}


def test_clickhouse_in_the_kind_release() -> None:
    objs = objects("kind")
    ch = by_kind(objs, "StatefulSet")["adwatch-clickhouse"]
    spec = ch["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    repo, tag = container["image"].rsplit(":", 1)
    assert repo == "clickhouse/clickhouse-server" and re.match(r"^[0-9]+\.[0-9]+", tag), "a pinned tag"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": "http"}
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    (claim,) = ch["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/var/lib/clickhouse"} in container["volumeMounts"]
    assert env_of(container)["CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "adwatch-clickhouse",
        "key": "password",
    }
    service = by_kind(objs, "Service")["adwatch-clickhouse"]
    assert {p["port"] for p in service["spec"]["ports"]} >= {8123}
    assert matches({"matchLabels": service["spec"]["selector"]}, ch["spec"]["template"]["metadata"]["labels"])
    users = by_kind(objs, "ConfigMap")["adwatch-clickhouse-users"]["data"]["adwatch.xml"]
    assert '<password from_env="CLICKHOUSE_PASSWORD"/>' in users and "<adwatch>" in users
    assert '<networks replace="replace"><ip>::1</ip><ip>127.0.0.1</ip></networks>' in users, "default: localhost"
    detector = by_kind(objs, "Deployment")["adwatch-detector"]
    env = env_of(detector["spec"]["template"]["spec"]["containers"][0])
    assert (
        env["ADWATCH_CLICKHOUSE_URL"]["value"]
        == "http://adwatch:$(CLICKHOUSE_PASSWORD)@adwatch-clickhouse:8123/default"
    )
    config = by_kind(objs, "ConfigMap")["adwatch-detector-env"]["data"]
    assert config["ADWATCH_DETECTOR_CLICKHOUSE_ENABLED"] == "true"
    for name in ("adwatch-generator", "adwatch-notifier-console"):  # only the detector writes history
        containers = by_kind(objs, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
        assert "ADWATCH_CLICKHOUSE_URL" not in env_of(containers[0])


def test_cloud_clickhouse_is_external() -> None:
    objs = objects("cloud")
    assert not [o for o in objs if "clickhouse" in o["metadata"]["name"]]
    (app,) = [o for o in objs if o["kind"] == "SparkApplication"]
    for role in ("driver", "executor"):
        env = {e["name"]: e for e in app["spec"][role]["env"]}
        assert env["ADWATCH_CLICKHOUSE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "adwatch-infra",
            "key": "clickhouse-url",
        }


def test_clickhouse_enabled_without_a_server_fails() -> None:
    values = {"components": {"detector": {"env": {"ADWATCH_DETECTOR_CLICKHOUSE_ENABLED": "true"}}}}
    with pytest.raises(helm.HelmError, match="no ClickHouse is set"):
        chart.render(values)


# ---- ServiceAccounts and probes ----------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_every_workload_has_probes_and_a_tokenless_service_account(case: str) -> None:
    objs = objects(case)
    accounts = by_kind(objs, "ServiceAccount")
    for wl in workloads(objs):
        name = f"{wl['kind']}/{wl['metadata']['name']}"
        spec = wl["spec"]["template"]["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        account = accounts[spec["serviceAccountName"]]
        assert account["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            assert {"livenessProbe", "readinessProbe"} <= set(container), name
            if wl["kind"] == "Deployment":  # the adwatch services' ops server (libs/adwatch)
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
                assert container["livenessProbe"]["httpGet"]["port"] == "metrics", name


def test_the_spark_driver_keeps_its_own_account() -> None:
    objs = objects("cloud")
    (app,) = [o for o in objs if o["kind"] == "SparkApplication"]
    sa = app["spec"]["driver"]["serviceAccount"]
    assert "automountServiceAccountToken" not in by_kind(objs, "ServiceAccount")[sa], "the driver needs its token"
    assert "adwatch-detector" not in by_kind(objs, "ServiceAccount"), "no unused detector account in spark mode"


def test_pod_metadata_and_placement_values() -> None:
    objs = objects("all-features")
    for wl in workloads(objs):
        template = wl["spec"]["template"]
        assert template["metadata"]["labels"]["example.com/tier"] == "alerting"
        assert template["metadata"]["annotations"]["example.com/team"] == "ads"
        assert template["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
        assert template["spec"]["tolerations"][0]["key"] == "dedicated"
        assert "podAntiAffinity" in template["spec"]["affinity"]
    generator = by_kind(objs, "ServiceAccount")["adwatch-generator"]
    assert generator["metadata"]["annotations"] == {"example.com/role": "generator"}


# ---- PodDisruptionBudgets ----------------------------------------------------------------------


@pytest.mark.parametrize("case", ["cloud", "all-features"])
def test_one_disruption_budget_per_notifier_channel(case: str) -> None:
    objs = objects(case)
    notifiers = {n: d for n, d in by_kind(objs, "Deployment").items() if n.startswith("adwatch-notifier-")}
    budgets = by_kind(objs, "PodDisruptionBudget")
    assert set(budgets) == set(notifiers)
    for name, budget in budgets.items():
        assert budget["spec"]["maxUnavailable"] == 1
        for other, deployment in by_kind(objs, "Deployment").items():
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert matches(budget["spec"]["selector"], labels) == (other == name), (name, other)
    assert not by_kind(objects("default"), "PodDisruptionBudget")


# ---- NetworkPolicies ---------------------------------------------------------------------------


def _policies(case: str) -> dict[str, dict[str, Any]]:
    return by_kind(objects(case), "NetworkPolicy")


@pytest.mark.parametrize("case", ["cloud", "all-features"])
def test_every_pod_has_exactly_one_policy(case: str) -> None:
    policies = _policies(case)
    for pod, labels in pods(objects(case)).items():
        selecting = [n for n, p in policies.items() if matches(p["spec"]["podSelector"], labels)]
        assert len(selecting) == 1, f"{pod}: selected by {selecting}"
        assert policies[selecting[0]]["spec"]["policyTypes"] == ["Ingress", "Egress"], pod
    all_labels = list(pods(objects(case)).values())
    for name, policy in policies.items():
        assert any(matches(policy["spec"]["podSelector"], labels) for labels in all_labels), f"{name} selects nothing"


def _peers_of(rules: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [peer for rule in rules for peer in rule.get(key, [])]


def _rule_reaches(policy: dict[str, Any], labels: dict[str, str], port: int) -> bool:
    for rule in policy["spec"]["egress"]:
        if any(p["port"] == port for p in rule.get("ports", [])) and any(
            "podSelector" in peer and matches(peer["podSelector"], labels) for peer in rule.get("to", [])
        ):
            return True
    return False


def test_policies_let_only_the_right_pods_talk_to_the_stores() -> None:
    objs = objects("all-features")
    policies = _policies("all-features")
    labels = pods(objs)
    redis = labels["StatefulSet/adwatch-redis"]
    clickhouse = labels["StatefulSet/adwatch-clickhouse"]
    components = {p: lab for p, lab in labels.items() if component_of(lab) not in ("redis", "clickhouse")}
    # Redis: from every component (the detector's executors too), nothing from ClickHouse
    (redis_in,) = policies["adwatch-redis"]["spec"]["ingress"]
    for pod, lab in components.items():
        assert any(matches(p["podSelector"], lab) for p in redis_in["from"]), pod
        assert _rule_reaches(policies[_policy_of(policies, lab)], redis, 6379), pod
    assert not any(matches(p["podSelector"], clickhouse) for p in redis_in["from"] if "podSelector" in p)
    assert [p["port"] for p in redis_in["ports"]] == [6379]
    assert policies["adwatch-redis"]["spec"]["egress"] == []
    # ClickHouse: the detector's pods only (plus the namespaces in networkPolicy.clickhouseFrom)
    (ch_in,) = policies["adwatch-clickhouse"]["spec"]["ingress"]
    for pod, lab in components.items():
        is_detector = component_of(lab) == "detector"
        from_pods = [p for p in ch_in["from"] if "podSelector" in p]
        assert any(matches(p["podSelector"], lab) for p in from_pods) == is_detector, pod
        assert _rule_reaches(policies[_policy_of(policies, lab)], clickhouse, 8123) == is_detector, pod
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "grafana"}}} in ch_in["from"]


def component_of(labels: dict[str, str]) -> str:
    """The component of a pod (the SparkApplication's executors carry only their name)."""
    return labels.get("app.kubernetes.io/component") or labels["app.kubernetes.io/name"].removesuffix("-executor")


def _policy_of(policies: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    (name,) = [n for n, p in policies.items() if matches(p["spec"]["podSelector"], labels)]
    return name


@pytest.mark.parametrize("case", ["cloud", "all-features"])
def test_policies_admit_only_ops_ports_from_monitoring_and_the_ingress(case: str) -> None:
    values = chart.load_values(chart.CASES[case])
    channels = values["components"]["notifier"]["channels"]
    for name, policy in _policies(case).items():
        if name in ("adwatch-redis", "adwatch-clickhouse"):
            continue
        ingress = policy["spec"]["ingress"]
        sources = {
            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for p in _peers_of(ingress, "from")
            if "namespaceSelector" in p
        }
        channel = name.removeprefix("adwatch-notifier-") if name.startswith("adwatch-notifier-") else None
        exposed = channel is not None and channels[channel].get("ingress", {}).get("enabled", False)
        assert sources == ({"monitoring", "ingress-nginx"} if exposed else {"monitoring"}), name
        for rule in ingress:
            if any("namespaceSelector" in p for p in rule["from"]):
                assert len(rule["ports"]) == 1 and rule["ports"][0]["port"] >= 9100, f"{name}: only the ops port"
        # who may talk to Kafka and the OTLP endpoint: every component, through its own namespace rule
        egress_ns = {
            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for p in _peers_of(policy["spec"]["egress"], "to")
            if "namespaceSelector" in p
        }
        assert {"kube-system", "kafka", "observability"} <= egress_ns, name


def test_spark_driver_and_executors_reach_each_other_and_the_api() -> None:
    policy = _policies("cloud")["adwatch-detector"]
    labels = pods(objects("cloud"))
    driver, executor = (labels[f"SparkApplication/adwatch-detector/{r}"] for r in ("driver", "executor"))
    peers = [p["podSelector"] for p in _peers_of(policy["spec"]["ingress"], "from") if "podSelector" in p]
    assert any(matches(s, driver) for s in peers) and any(matches(s, executor) for s in peers)
    api = [r for r in policy["spec"]["egress"] if any(p["port"] == 6443 for p in r.get("ports", []))]
    assert api and api[0]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]


def test_the_detector_reaches_its_object_store_checkpoint() -> None:
    """cloud's checkpoint is s3a://: the detector's policy lets it out on 443 (networkPolicy.objectStore)."""
    policy = _policies("cloud")["adwatch-detector"]
    store = [r for r in policy["spec"]["egress"] if r.get("to") == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]]
    assert [p["port"] for r in store for p in r["ports"]] == [443]
    for name, other in _policies("cloud").items():
        if name != "adwatch-detector" and not name.startswith("adwatch-notifier-"):
            assert not [r for r in other["spec"]["egress"] if "ipBlock" in str(r)], name


def test_no_policies_unless_enabled() -> None:
    assert not _policies("default") and not _policies("kind")


# ---- KEDA ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["cloud", "all-features"])
def test_a_scaled_object_per_channel_on_its_consumer_lag(case: str) -> None:
    objs = objects(case)
    scaled = by_kind(objs, "ScaledObject")
    deployments = by_kind(objs, "Deployment")
    assert scaled
    for name, so in scaled.items():
        spec = so["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert "replicas" not in deployments[name]["spec"], "KEDA owns the replicas"
        (trigger,) = spec["triggers"]
        channel = name.removeprefix("adwatch-notifier-")
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == f"notifier-{channel}"
        assert trigger["metadata"]["topic"] == TOPIC_ALERTS
        assert trigger["metadata"]["bootstrapServers"] == "adwatch-kafka-bootstrap.kafka.svc:9092"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= TOPIC_PARTITIONS[TOPIC_ALERTS]
    if case == "all-features":  # per channel overrides
        assert (
            "adwatch-notifier-console" not in scaled and "replicas" in deployments["adwatch-notifier-console"]["spec"]
        )
        assert scaled["adwatch-notifier-slack"]["spec"]["maxReplicaCount"] == 2
        assert scaled["adwatch-notifier-slack"]["spec"]["triggers"][0]["metadata"]["lagThreshold"] == "20"


def test_keda_max_replicas_never_above_the_alerts_partitions() -> None:
    partitions = TOPIC_PARTITIONS[TOPIC_ALERTS]
    values = chart.load_values(chart.CASES["cloud"])
    values["autoscaling"]["notifier"]["maxReplicaCount"] = partitions
    assert by_kind(chart.objects(chart.render(values)), "ScaledObject")
    values["autoscaling"]["notifier"]["maxReplicaCount"] = partitions + 1
    with pytest.raises(helm.HelmError, match=rf"above the {partitions} partitions of the alerts topic"):
        chart.render(values)
    values["autoscaling"]["notifier"]["maxReplicaCount"] = 2
    values["autoscaling"]["notifier"]["channels"] = {"email": {"maxReplicaCount": partitions + 1}}
    with pytest.raises(helm.HelmError, match="notifier-email is above"):
        chart.render(values)


# ---- the schema accepts the guard rails and rejects their typos -------------------------------


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"networkPolicy": {"enabeld": True}}, id="typo-network-policy"),
        pytest.param({"podDisruptionBudget": {"minAvailable": 1}}, id="pdb-unknown-key"),
        pytest.param({"autoscaling": {"notifier": {"maxReplicas": 3}}}, id="typo-keda"),
        pytest.param({"autoscaling": {"notifier": {"channels": {"slak": {}}}}}, id="keda-unknown-channel"),
        pytest.param({"redis": {"url": "redis://elsewhere:6379/0"}}, id="redis-url-is-gone"),
        pytest.param({"clickhouse": {"auth": {"username": "default"}}}, id="clickhouse-default-user"),
        pytest.param({"clickhouse": {"image": "clickhouse/clickhouse-server:latest"}}, id="clickhouse-unpinned"),
        pytest.param({"default": {"serviceAccount": {"create": True}}}, id="sa-unknown-key"),
        pytest.param({"networkPolicy": {"kafka": {"namespace": "Kafka_NS"}}}, id="bad-namespace"),
        pytest.param({"autoscaling": {"notifier": {"minReplicaCount": 0}}}, id="keda-scale-to-zero"),
    ],
)
def test_schema_rejects_guard_rail_mistakes(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.render(values)


# ---- NOTES.txt ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_notes_say_where_alerts_go_and_how_to_drill(case: str) -> None:
    values = chart.load_values(chart.CASES[case])
    notes = chart.render_notes(values)
    merged = chart._merge(_defaults(), values)  # over the chart's own defaults
    enabled = [c for c, v in merged["components"]["notifier"]["channels"].items() if v.get("enabled")]
    assert enabled
    for channel in enabled:
        assert f"  - {channel}" in notes and f"svc/adwatch-notifier-{channel}" in notes
    assert "port-forward svc/grafana" in notes or merged["grafana"]["url"] in notes
    drills = [
        "drill " + line.split("adwatch-generator drill ", 1)[1]
        for line in notes.splitlines()
        if "adwatch-generator drill " in line and "--help" not in line
    ]
    assert drills
    for drill in drills:  # every drill command printed is one the generator's own parser accepts
        parse_drill(shlex.split(drill.split("#")[0].rstrip(" \\")))


def parse_drill(argv: list[str]) -> None:
    """Parse `drill ...` with the generator's own parser (cli.drill_parser, or the older __main__._parser)."""
    assert argv[0] == "drill"
    try:
        from adwatch_generator.cli import drill_parser  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        from adwatch_generator.__main__ import _parser  # type: ignore[attr-defined,unused-ignore]

        _parser().parse_args(argv)
    else:
        drill_parser().parse_args(argv[1:])


@functools.cache
def _defaults() -> dict[str, Any]:
    return yaml.safe_load((chart.CHART / "values.yaml").read_text())


# ---- the rendered Redis command, run for real ---------------------------------------------------


def test_rendered_redis_command_starts_a_protected_redis(tmp_path: Any) -> None:
    """kind's Redis container script and readiness probe, run against a local redis-server: it
    needs the password, keeps the AOF, the probe passes through REDISCLI_AUTH, and the password is
    not in the process's arguments."""
    import os
    import subprocess
    from pathlib import Path

    import redis

    from adwatch_dev.infra import InfraError, free_port, poll_until, redis_binary

    try:
        binary = Path(redis_binary())
    except InfraError as exc:
        pytest.skip(str(exc))
    container = by_kind(objects("kind"), "StatefulSet")["adwatch-redis"]["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    script = container["args"][0].replace("--dir /data", f"--dir {tmp_path} --port {port} --bind 127.0.0.1", 1)
    password = "Pw" + os.urandom(8).hex()
    env = {**os.environ, "PATH": f"{binary.parent}:{os.environ['PATH']}", "REDIS_PASSWORD": password}
    server = subprocess.Popen(
        [*container["command"], script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        poll_until(lambda: redis.Redis.from_url(url).ping(), "the rendered Redis to answer")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port).ping()
        assert redis.Redis.from_url(url).config_get("appendonly") == {"appendonly": "yes"}
        assert password not in Path(f"/proc/{server.pid}/cmdline").read_bytes().decode(errors="replace")
        probe = container["readinessProbe"]["exec"]["command"]
        probe_env = {**env, "REDISCLI_AUTH": password}
        probe = [*probe[:-1], probe[-1].replace("redis-cli", f"redis-cli -p {port}")]
        assert subprocess.run(probe, env=probe_env, timeout=10, capture_output=True).returncode == 0
        assert subprocess.run(probe, env={**env, "REDISCLI_AUTH": "wrong"}, timeout=10).returncode != 0
    finally:
        server.terminate()
        server.wait(timeout=10)
