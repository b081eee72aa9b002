"""Run the real services as processes against the embedded infrastructure, for e2e tests.

Each service is started by its console script with its settings in the environment, the
way a cluster runs it; output goes to a log file per process; everything is stopped by
PID when the test ends.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from adwatch.contracts import Alert, decode
from adwatch.infra import EmbeddedInfra, ManagedProcess, free_port, spawn
from adwatch.kafka import make_consumer
from adwatch.testing import unique

BIN = Path(sys.executable).parent


@dataclass
class Pipeline:
    """Handles on the processes of one pipeline run, plus what the sinks saw."""

    infra: EmbeddedInfra
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def base_env(self) -> dict[str, str]:
        python = str(BIN / "python")
        return (
            dict(os.environ)
            | self.infra.env()
            | {
                "ADWATCH_CLICKHOUSE_URL": f"chdb://{self.workdir / 'clickhouse'}",
                "PYSPARK_PYTHON": python,
                "PYSPARK_DRIVER_PYTHON": python,
                "SPARK_LOCAL_IP": "127.0.0.1",
                "ADWATCH_LOG_LEVEL": "INFO",
            }
            | self.env
        )

    def start(self, name: str, argv: list[str], **env: str) -> ManagedProcess:
        """Start ``argv`` (a console script and its arguments) as process ``name``."""
        port = free_port()
        self.ports[name] = port
        full_env = self.base_env() | {"ADWATCH_METRICS_PORT": str(port)} | env
        log = self.workdir / f"{name}.log"
        proc = spawn(name, [str(BIN / argv[0]), *argv[1:]], log, env=full_env)
        self.processes[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.processes.pop(name)
        os.killpg(proc.pid, sig)
        proc.popen.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.processes):
            self.processes.pop(name).stop()

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def metrics(self, name: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=5) as resp:
            body: bytes = resp.read()
            return body.decode()

    def assert_running(self) -> None:
        for name, proc in self.processes.items():
            assert proc.alive(), f"{name} exited with {proc.popen.returncode}:\n{self.log(name)[-3000:]}"


class TopicReader:
    """Reads a topic from the start and keeps everything it has seen."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = make_consumer(bootstrap, unique("e2e-reader"))
        self.consumer.subscribe([topic])
        self.records: list[tuple[bytes | None, bytes, float]] = []

    def drain(self, seconds: float = 0.5) -> list[tuple[bytes | None, bytes, float]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is not None and not msg.error():
                self.records.append((msg.key(), msg.value(), time.time()))
        return self.records

    def alerts(self) -> list[Alert]:
        return [decode(value, Alert) for _, value, _ in self.drain(0.3)]

    def close(self) -> None:
        self.consumer.close()
