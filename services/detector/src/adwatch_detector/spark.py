"""One place that builds the SparkSession (the service, tests and the e2e suite share it).

The master comes from, in order: the caller (``ADWATCH_DETECTOR_SPARK_MASTER``), Spark's
own configuration (``spark.master`` from ``spark-submit --master``, a properties file such
as the one spark-operator hands a driver pod, or ``spark-defaults.conf``), else ``local[2]``.
Settings Spark already has (from spark-submit or the properties file) are never overridden:
the defaults below fill only what is unset. Loopback is the default bind address only for
a local master; a driver of a cluster binds where Spark's configuration says.
"""

from __future__ import annotations

import os
import sys

from pyspark import SparkConf
from pyspark.sql import SparkSession

ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
DEFAULT_MASTER = "local[2]"


def prepare_environment(master: str) -> None:
    """Workers must run this interpreter (the venv's packages); a local master binds to loopback.

    Call it with the resolved master (:func:`resolve_master`): a cluster's driver must not get
    ``SPARK_LOCAL_IP=127.0.0.1`` just because its master came from Spark's configuration.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def spark_jvm_conf() -> SparkConf:
    """Spark's own configuration, read from the JVM.

    A bare ``SparkConf()`` made before the gateway is up is an empty Python dict: it sees
    neither spark-submit's properties (``--master``, ``--properties-file``, as spark-operator
    hands a driver pod) nor ``spark-defaults.conf``. So the gateway is started (or, under
    spark-submit, joined through ``PYSPARK_GATEWAY_PORT``) first; the JVM's ``SparkConf``
    then loads the ``spark.*`` system properties spark-submit set.
    """
    from pyspark import SparkContext

    SparkContext._ensure_initialized()
    return SparkConf()


def spark_conf_master() -> str | None:
    """``spark.master`` as Spark's own configuration has it (None when unset)."""
    master = spark_jvm_conf().get("spark.master", None)
    return master or None


def resolve_master(requested: str | None) -> str:
    """The caller's master if given, else Spark's ``spark.master``, else ``local[2]``."""
    return requested or spark_conf_master() or DEFAULT_MASTER


def build_spark(
    master: str | None = DEFAULT_MASTER,
    app_name: str = "adwatch-detector",
    shuffle_partitions: int = 4,
    extra_conf: dict[str, str] | None = None,
) -> SparkSession:
    """A session tuned for small state and short batches; call once per process (6-7 s).

    ``master=None`` takes Spark's own ``spark.master`` (see :func:`resolve_master`).
    """
    bind_loopback = False
    if master is None:
        # resolving starts the gateway JVM (or joins spark-submit's): too late for SPARK_LOCAL_IP
        # to reach it, so a local master binds to loopback through the driver's conf below
        master = resolve_master(None)
        bind_loopback = master.startswith("local") and "SPARK_LOCAL_IP" not in os.environ
    prepare_environment(master)
    given = spark_jvm_conf()
    defaults = {
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
        "spark.python.worker.reuse": "true",
    }
    builder = SparkSession.builder.master(master).appName(given.get("spark.app.name", None) or app_name)
    if bind_loopback:
        defaults |= {"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}
    for key, value in defaults.items():
        if not given.contains(key):
            builder = builder.config(key, value)
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
