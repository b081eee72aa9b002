"""build_spark chooses the bind address only once the master is known (no Spark started here)."""

from __future__ import annotations

import os

import pytest

from adwatch_detector import spark


class _Stop(Exception):
    """Raised by the fakes once what the test looks at is decided."""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SPARK_LOCAL_IP / PYSPARK_* in the environment; the originals come back afterwards."""
    for name in ("SPARK_LOCAL_IP", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        monkeypatch.setenv(name, "placeholder")  # so the undo restores the real value (or its absence)
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_no_loopback_is_set_before_the_master_is_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, str | None] = {}

    def resolve(requested: str | None) -> str:
        seen["SPARK_LOCAL_IP"] = os.environ.get("SPARK_LOCAL_IP")
        raise _Stop

    monkeypatch.setattr(spark, "resolve_master", resolve)
    with pytest.raises(_Stop):
        spark.build_spark(None)
    assert seen == {"SPARK_LOCAL_IP": None}


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("resolved", "local_ip"),
    [
        pytest.param("spark://10.0.0.5:7077", None, id="standalone-master-from-spark-conf"),
        pytest.param("k8s://https://kubernetes.default.svc", None, id="kubernetes-master"),
        pytest.param("local[2]", "127.0.0.1", id="local-master-from-spark-conf"),
    ],
)
def test_the_resolved_master_decides_the_bind_address(
    monkeypatch: pytest.MonkeyPatch, resolved: str, local_ip: str | None
) -> None:
    monkeypatch.setattr(spark, "resolve_master", lambda requested: resolved)

    def jvm_conf() -> None:
        raise _Stop

    monkeypatch.setattr(spark, "spark_jvm_conf", jvm_conf)
    with pytest.raises(_Stop):
        spark.build_spark(None)
    assert os.environ.get("SPARK_LOCAL_IP") == local_ip
    assert os.environ["PYSPARK_PYTHON"]
