"""The services as real processes against the embedded infrastructure.

Used by ``adwatch run`` (``make run``), the end-to-end tests and the latency benchmark:
each service is started by its console script with its settings in the environment, the
way a cluster runs it, with its own /metrics port and log file, and stopped by PID.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from adwatch_dev.infra import EmbeddedInfra, ManagedProcess, free_port, spawn

BIN = Path(sys.executable).parent


@dataclass
class LocalPipeline:
    """Handles on the processes of one local pipeline run."""

    infra: EmbeddedInfra
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def base_env(self) -> dict[str, str]:
        """Our environment, pointed at the embedded infrastructure, plus ``self.env``."""
        python = str(BIN / "python")
        return (
            dict(os.environ)
            | self.infra.env()
            | {
                "ADWATCH_CLICKHOUSE_URL": f"chdb://{(self.workdir / 'clickhouse').resolve()}",
                "PYSPARK_PYTHON": python,
                "PYSPARK_DRIVER_PYTHON": python,
                "SPARK_LOCAL_IP": "127.0.0.1",
                "ADWATCH_METRICS_HOST": "127.0.0.1",
            }
            | self.env
        )

    def start(
        self,
        name: str,
        argv: list[str],
        to_terminal: bool = False,
        on_output: Callable[[str], None] | None = None,
        **env: str,
    ) -> ManagedProcess:
        """Start ``argv`` (a console script and its arguments) as process ``name``.

        Its output goes to ``<workdir>/<name>.log``, or to our terminal with ``to_terminal``;
        with ``on_output``, stdout is read line by line and handed to it (stderr: the log).
        """
        port = free_port()
        self.ports[name] = port
        full_env = self.base_env() | {"ADWATCH_METRICS_PORT": str(port)} | env
        log = None if to_terminal else self.workdir / f"{name}.log"
        proc = spawn(name, [str(BIN / argv[0]), *argv[1:]], log, env=full_env, pipe_stdout=on_output is not None)
        if on_output is not None:
            threading.Thread(target=_pump, args=(proc, on_output), name=f"{name}-stdout", daemon=True).start()
        self.processes[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill one process (SIGKILL by default: a crash, no clean shutdown)."""
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

    def dead(self) -> list[ManagedProcess]:
        return [proc for proc in self.processes.values() if not proc.alive()]

    def assert_running(self) -> None:
        for proc in self.dead():
            raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{self.log(proc.name)[-3000:]}")


def _pump(proc: ManagedProcess, on_output: Callable[[str], None]) -> None:
    """Hand a child's stdout to ``on_output`` line by line until it closes."""
    assert proc.popen.stdout is not None
    for raw in proc.popen.stdout:
        on_output(raw.decode(errors="replace").rstrip("\n"))
