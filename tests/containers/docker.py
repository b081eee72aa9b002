"""The project's Docker engine and images for tests: started, built and cleaned up by the tests.

The daemon is ``scripts/docker-daemon.sh`` (its own data root and socket under
``.adwatch/docker``); the images come from ``scripts/images.sh build`` once per session.
Without a container engine the image tests skip with the reason, except with ``CI=true``,
where they fail. Containers are started with ``--network host`` (they reach the embedded
broker, Redis and the fakes on 127.0.0.1) and removed by id.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from adwatch_dev.testing import missing_tool

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("generator", "detector", "notifier")
TAG = os.environ.get("ADWATCH_IMAGE_TAG", "test")


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI (where the images must be built and run)."""
    missing_tool(f"container engine: {reason}")


@dataclass
class Docker:
    """A docker CLI bound to one daemon; every container it starts is removed by id."""

    host: str
    started_daemon: bool = False
    containers: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return dict(os.environ) | {"DOCKER_HOST": self.host}

    def cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args], env=self.env(), capture_output=True, text=True, timeout=timeout, check=check
        )

    def run(
        self,
        image: str,
        args: list[str],
        env: dict[str, str],
        name: str,
        volumes: dict[str, str] | None = None,
        writable: dict[str, str] | None = None,
    ) -> str:
        """Start a container in the background on the host network; returns its id.

        ``volumes`` (host path -> container path) are mounted read-only, ``writable`` read-write.
        """
        argv = ["run", "-d", "--network", "host", "--name", f"{name}-{os.getpid()}-{len(self.containers)}"]
        for host_path, path in (volumes or {}).items():
            argv += ["-v", f"{host_path}:{path}:ro"]
        for host_path, path in (writable or {}).items():
            argv += ["-v", f"{host_path}:{path}"]
        for key, value in env.items():
            argv += ["-e", f"{key}={value}"]
        cid = self.cli(*argv, image, *args).stdout.strip()
        self.containers.append(cid)
        return cid

    def logs(self, cid: str) -> str:
        out = self.cli("logs", cid, check=False)
        return out.stdout + out.stderr

    def state(self, cid: str) -> dict[str, object]:
        state: dict[str, object] = json.loads(self.cli("inspect", "--format", "{{json .State}}", cid).stdout)
        return state

    def stop(self, cid: str, grace_s: int) -> tuple[float, int]:
        """``docker stop`` (SIGTERM, SIGKILL after the grace period): seconds taken and exit code."""
        t0 = time.monotonic()
        self.cli("stop", "--time", str(grace_s), cid, timeout=grace_s + 30)
        return time.monotonic() - t0, int(str(self.state(cid)["ExitCode"]))

    def remove_all(self) -> None:
        for cid in self.containers:
            self.cli("rm", "-f", cid, check=False)
        self.containers.clear()


def start_docker() -> Docker:
    if shutil.which("docker") is None:
        unavailable("no docker CLI")
    if os.environ.get("DOCKER_HOST"):
        docker = Docker(os.environ["DOCKER_HOST"])
        if docker.cli("version", check=False).returncode != 0:
            unavailable(f"DOCKER_HOST={docker.host} does not answer")
        return docker
    script = REPO / "scripts" / "docker-daemon.sh"
    was_running = subprocess.run([script, "status"], capture_output=True).returncode == 0
    out = subprocess.run([script, "start"], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        unavailable(f"the project's Docker daemon did not start: {out.stderr.strip()[-500:]}")
    host = out.stdout.strip().split("=", 1)[1]
    return Docker(host, started_daemon=not was_running)


def stop_docker(docker: Docker) -> None:
    docker.remove_all()
    if docker.started_daemon:
        subprocess.run([REPO / "scripts" / "docker-daemon.sh", "stop"], capture_output=True, timeout=60)


def build_images(docker: Docker) -> dict[str, str]:
    """``scripts/images.sh build`` for every service; image name by service."""
    t0 = time.monotonic()
    out = subprocess.run(
        [REPO / "scripts" / "images.sh", "build", *SERVICES],
        env=docker.env() | {"TAG": TAG},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        pytest.fail(f"image build failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}", pytrace=False)
    print(f"\nimages built in {time.monotonic() - t0:.0f} s:\n{out.stderr.strip()}")
    return {svc: f"adwatch-{svc}:{TAG}" for svc in SERVICES}
