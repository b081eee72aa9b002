"""What tests/containers gives the detector's driver container, made from the rendered cloud
SparkApplication (tests/deploy/sparkapp.py), checked offline against the spec."""

from __future__ import annotations

from . import sparkapp


def test_driver_properties_carry_the_specs_spark_settings() -> None:
    app, _ = sparkapp.render_cloud()
    props = sparkapp.driver_properties(app, "spark://127.0.0.1:7077")
    executor = app["spec"]["executor"]
    assert props["spark.master"] == "spark://127.0.0.1:7077"
    assert props["spark.app.name"] == app["metadata"]["name"] == "adwatch-detector"
    assert props["spark.executor.instances"] == str(executor["instances"])
    assert props["spark.cores.max"] == str(executor["instances"] * executor["cores"]) == "6"
    assert props["spark.dynamicAllocation.enabled"] == "false"
    assert props["spark.sql.shuffle.partitions"] == "12"  # values-cloud.yaml's sparkConf
    assert sparkapp.properties_text({"b": "2", "a": "1"}) == "a=1\nb=2\n"


def test_driver_args_are_the_pods() -> None:
    app, _ = sparkapp.render_cloud()
    assert sparkapp.driver_args(app) == [
        "driver",
        "--properties-file",
        sparkapp.PROPERTIES_PATH,
        "--class",
        "org.apache.spark.deploy.PythonRunner",
        "local:///opt/adwatch/app/launcher.py",
        "run",
    ]


def test_pod_env_is_what_the_kubelet_makes() -> None:
    app, config_maps = sparkapp.render_cloud()
    downward = {"metadata.name": "drv", "metadata.namespace": "ns", "spec.nodeName": "node"}
    secrets = {"ADWATCH_REDIS_URL": "redis://127.0.0.1:1/0", "ADWATCH_CLICKHOUSE_URL": "http://127.0.0.1:9/x"}
    env = sparkapp.pod_env(app["spec"]["driver"], config_maps, secrets, downward)
    assert env["ADWATCH_DETECTOR_CHECKPOINT_DIR"].startswith("s3a://")  # from the envFrom ConfigMap
    assert env["ADWATCH_REDIS_URL"] == "redis://127.0.0.1:1/0"
    assert env["K8S_POD_NAME"] == "drv"
    assert (
        "k8s.pod.name=drv," in env["OTEL_RESOURCE_ATTRIBUTES"]
        and "spark.role=driver" in env["OTEL_RESOURCE_ATTRIBUTES"]
    )
    files = sparkapp.mounted_files(app["spec"]["driver"], app, config_maps)
    assert set(files) == {env["ADWATCH_DETECTOR_RULES_FILE"]}
