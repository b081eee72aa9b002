"""The rendered cloud SparkApplication, turned into what its driver pod gets from spark-operator.

spark-operator submits the SparkApplication with spark-submit in cluster mode; Spark's
Kubernetes client then starts the driver pod with the image's entrypoint and
``driver --properties-file <spark.properties> --class org.apache.spark.deploy.PythonRunner
<mainApplicationFile> <arguments>``, the properties file holding the application's Spark
settings, and the env of ``spec.driver`` (its ``envFrom`` ConfigMap, then ``env``).
:func:`driver_properties`, :func:`driver_args` and :func:`pod_env` rebuild those from the
rendered chart, so the container test runs the image exactly so, changing only what cannot
be the same on this machine (:data:`LOOPBACK_OVERRIDES` says which and why).
"""

from __future__ import annotations

import re
from typing import Any

from . import chart

PROPERTIES_PATH = "/etc/adwatch/spark/spark.properties"


def render_cloud() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The cloud case's SparkApplication and every ConfigMap it references, by name."""
    objs = chart.objects(chart.render_case("cloud"))
    (app,) = [o for o in objs if o["kind"] == "SparkApplication"]
    config_maps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    return app, config_maps


def driver_properties(app: dict[str, Any], master: str) -> dict[str, str]:
    """The Spark settings spark-operator derives from the spec, with ``spark.master`` = ``master``.

    On Kubernetes ``executor.instances`` asks for that many executors; a standalone master
    grants executors by cores, so the same request is ``spark.cores.max = instances x cores``.
    """
    spec = app["spec"]
    driver, executor = spec["driver"], spec["executor"]
    props = {
        "spark.master": master,
        "spark.app.name": app["metadata"]["name"],
        "spark.submit.deployMode": spec["mode"],
        "spark.driver.cores": str(driver["cores"]),
        "spark.driver.memory": str(driver["memory"]),
        "spark.executor.instances": str(executor["instances"]),
        "spark.executor.cores": str(executor["cores"]),
        "spark.executor.memory": str(executor["memory"]),
        "spark.cores.max": str(int(executor["instances"]) * int(executor["cores"])),
        "spark.dynamicAllocation.enabled": str(spec["dynamicAllocation"]["enabled"]).lower(),
    }
    props |= {k: str(v) for k, v in spec.get("sparkConf", {}).items()}
    return props


def driver_args(app: dict[str, Any]) -> list[str]:
    """The driver pod's arguments (Spark's Kubernetes client builds them for a Python app)."""
    spec = app["spec"]
    return [
        "driver",
        "--properties-file",
        PROPERTIES_PATH,
        "--class",
        "org.apache.spark.deploy.PythonRunner",
        spec["mainApplicationFile"],
        *spec.get("arguments", []),
    ]


def pod_env(
    role: dict[str, Any],
    config_maps: dict[str, dict[str, Any]],
    secrets: dict[str, str],
    downward: dict[str, str],
) -> dict[str, str]:
    """A driver's or executor's env as the kubelet makes it: envFrom ConfigMaps, then ``env``
    (``value`` with ``$(VAR)`` expanded, ``fieldRef`` from ``downward``, ``secretKeyRef`` from
    ``secrets`` by env name)."""
    env: dict[str, str] = {}
    for source in role.get("envFrom", []):
        env |= {k: str(v) for k, v in config_maps[source["configMapRef"]["name"]]["data"].items()}
    for entry in role.get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(entry["value"]))
        elif "fieldRef" in entry.get("valueFrom", {}):
            env[name] = downward[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            env[name] = secrets[name]
    return env


def properties_text(props: dict[str, str]) -> str:
    return "".join(f"{k}={v}\n" for k, v in sorted(props.items()))


def mounted_files(role: dict[str, Any], app: dict[str, Any], config_maps: dict[str, dict[str, Any]]) -> dict[str, str]:
    """mountPath/key -> content of the ConfigMap volumes the role mounts (the rules file)."""
    volumes = {v["name"]: v for v in app["spec"].get("volumes", [])}
    files = {}
    for mount in role.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            for key, text in config_maps[volume["configMap"]["name"]]["data"].items():
                files[f"{mount['mountPath']}/{key}"] = str(text)
    return files
