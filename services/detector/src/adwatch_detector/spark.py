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


def prepare_environment(master: str | None = None) -> None:
    """Workers must run this interpreter (the venv's packages); a local master binds to loopback."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master is None or master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def spark_conf_master() -> str | None:
    """``spark.master`` as Spark's own configuration has it (None when unset).

    Under spark-submit the JVM is already up with the submitted properties; otherwise
    SparkConf starts the gateway, which reads ``spark-defaults.conf``.
    """
    master = SparkConf().get("spark.master", None)
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
    prepare_environment(master)
    if master is None:
        master = resolve_master(None)
        prepare_environment(master)
    given = SparkConf()
    defaults = {
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
        "spark.python.worker.reuse": "true",
    }
    builder = SparkSession.builder.master(master).appName(given.get("spark.app.name", None) or app_name)
    for key, value in defaults.items():
        if not given.contains(key):
            builder = builder.config(key, value)
    for key, value in (extra_conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
