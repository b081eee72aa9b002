"""The image's entrypoint (docker/entrypoint.sh) run on the host, with a fake ``java`` that records its argv."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[1] / "docker" / "entrypoint.sh"


def _executor_argv(tmp_path: Path, extra_env: dict[str, str]) -> list[str]:
    java_home, spark_home, out = tmp_path / "java", tmp_path / "spark", tmp_path / "argv"
    (java_home / "bin").mkdir(parents=True)
    (spark_home / "jars").mkdir(parents=True)
    java = java_home / "bin" / "java"
    java.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {out}\n')
    java.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "JAVA_HOME": str(java_home),
        "SPARK_HOME": str(spark_home),
        "SPARK_EXECUTOR_MEMORY": "1g",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@10.0.0.1:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "spark-app-1",
        "SPARK_EXECUTOR_POD_IP": "10.0.0.9",
    } | extra_env
    subprocess.run(["bash", str(ENTRYPOINT), "executor"], env=env, check=True, timeout=30, cwd=tmp_path)
    return out.read_text().splitlines()


@pytest.mark.skipif(not Path("/usr/bin/tini").exists() or shutil.which("bash") is None, reason="no /usr/bin/tini")
def test_executor_java_options_keep_sparks_numeric_order(tmp_path: Path) -> None:
    opts = {f"SPARK_JAVA_OPT_{i}": f"-Dadwatch.opt{i}=v{i}" for i in range(12)}
    argv = _executor_argv(tmp_path, opts)
    assert argv[: argv.index("-Xms1g")] == [f"-Dadwatch.opt{i}=v{i}" for i in range(12)]
    assert argv[argv.index("--executor-id") + 1] == "3"


@pytest.mark.skipif(not Path("/usr/bin/tini").exists() or shutil.which("bash") is None, reason="no /usr/bin/tini")
def test_executor_without_java_options(tmp_path: Path) -> None:
    argv = _executor_argv(tmp_path, {})
    assert argv[0] == "-Xms1g"
