"""A Spark standalone cluster on 127.0.0.1 from pyspark's own distribution, and its driver runs.

:class:`StandaloneCluster` starts ``spark-class ...deploy.master.Master`` and N
``...deploy.worker.Worker`` processes (1 core, 1 GiB each), waits until the master lists
them alive, and stops them by PID (workers' executor JVMs too). :func:`run_driver` runs
``python -m tests.spark_cluster.driver`` (one SparkSession per process: the test run's own
local[2] session can't share its JVM with a cluster's driver) and returns its result.
The cluster test and ``benchmarks/bench_cluster.py`` share these helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyspark

from adwatch.contracts import AdEvent, encode
from adwatch.kafka import make_producer
from adwatch_dev.infra import poll_until

REPO = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).parent
MINUTE_MS = 60_000
T0_MS = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE_MS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def spark_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(root / "logs"),
        SPARK_DAEMON_MEMORY="256m",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
    )
    return env


def _children(pid: int) -> list[int]:
    """Child processes of ``pid``, of any of its threads (a JVM forks from worker threads, and
    ``/proc/<pid>/task/<pid>/children`` lists only the main thread's)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(children))


def _stop(pid: int, proc: subprocess.Popen[bytes] | None = None, grace_s: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        if proc is None and not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(10)


class StandaloneCluster:
    """A master and ``workers`` workers (1 core, 1 GiB) on 127.0.0.1, logs and work dirs under ``root``."""

    def __init__(self, root: Path, workers: int = 2) -> None:
        self.root = root
        self.n_workers = workers
        self.port = free_port()
        self.webui_port = free_port()
        self.master_proc: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _spawn(self, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        log = open(self.root / "logs" / f"{name}.out", "wb")  # noqa: SIM115 (closed with the process)
        cmd = [str(SPARK_HOME / "bin" / "spark-class"), *args]
        return subprocess.Popen(cmd, env=spark_env(self.root), stdout=log, stderr=subprocess.STDOUT, cwd=self.root)

    def start(self, timeout_s: float = 90) -> StandaloneCluster:
        self.master_proc = self._spawn(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--webui-port",
                str(self.webui_port),
            ],
        )
        for i in range(self.n_workers):
            work = self.root / f"work-{i}"
            work.mkdir(parents=True, exist_ok=True)
            self.workers.append(
                self._spawn(
                    f"worker-{i}",
                    [
                        "org.apache.spark.deploy.worker.Worker",
                        self.url,
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "1",
                        "--memory",
                        "1g",
                        "--webui-port",
                        str(free_port()),
                        "--work-dir",
                        str(work),
                    ],
                )
            )
        poll_until(lambda: self.alive_workers() == self.n_workers, "the standalone workers", timeout_s=timeout_s)
        return self

    def alive_workers(self) -> int:
        for p in [self.master_proc, *self.workers]:
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"spark process {p.args[1:2]} exited {p.returncode}; logs in {self.root / 'logs'}")
        try:
            state = get_json(f"http://127.0.0.1:{self.webui_port}/json/")
        except OSError:
            return 0
        return sum(1 for w in state.get("workers", []) if w.get("state") == "ALIVE")

    def executor_ids(self, index: int) -> list[str]:
        """Spark's ids of the executors worker ``index`` runs (``--executor-id`` of its executor JVMs)."""
        ids = []
        for pid in _children(self.workers[index].pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "--executor-id" in argv:
                ids.append(argv[argv.index("--executor-id") + 1])
        return ids

    def kill_worker(self, index: int) -> list[int]:
        """SIGKILL worker ``index`` and the executor JVMs it launched (a lost node); their PIDs."""
        worker = self.workers[index]
        executors = _children(worker.pid)
        pids = [worker.pid, *executors]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.wait(10)
        return pids

    def stop(self) -> None:
        for w in self.workers:
            executors = _children(w.pid)
            _stop(w.pid, w)
            for pid in executors:
                _stop(pid)
        if self.master_proc is not None:
            _stop(self.master_proc.pid, self.master_proc)


# Sensitive thresholds and a short warm-up, so a few minutes of a small input fire an alert.
TEST_RULES = """
default:
  warmup_windows: 5
  alert_budget_per_day: 50.0
  expected_segments: 4
"""


def synth_input(minutes: int = 14, per_min: int = 400, drop_from: int = 8, seed: int = 5) -> list[bytes]:
    """AdEvents of two segments (US|banner's CTR drops from ``drop_from``), deterministic."""
    rng = np.random.default_rng(seed)
    out: list[bytes] = []
    n = 0
    for minute in range(minutes):
        for country, fmt, ctr in (("US", "banner", 0.06), ("DE", "native", 0.04)):
            rate = ctr * (0.15 if country == "US" and minute >= drop_from else 1.0)
            k = int(rng.poisson(per_min))
            offsets = np.sort(rng.integers(0, MINUTE_MS - 2000, k))
            clicked = rng.random(k) < rate
            for i in range(k):
                n += 1
                t = T0_MS + minute * MINUTE_MS + int(offsets[i])
                ev = AdEvent(
                    event_id=f"i{n}",
                    event_time_ms=t,
                    event_type="impression",
                    country=country,
                    ad_format=fmt,
                    app_id="app1",
                    placement_id="p1",
                    campaign_id="c1",
                    user_hash=f"u{n % 97}",
                    revenue_usd=0.002,
                )
                out.append(encode(ev))
                if clicked[i]:
                    click = AdEvent(
                        event_id=f"c{n}",
                        event_time_ms=t + 1000,
                        event_type="click",
                        country=country,
                        ad_format=fmt,
                        app_id="app1",
                        placement_id="p1",
                        campaign_id="c1",
                        user_hash=f"u{n % 97}",
                        impression_id=f"i{n}",
                        revenue_usd=0.0,
                    )
                    out.append(encode(click))
    return out


def produce_round_robin(bootstrap: str, topic: str, values: Sequence[bytes]) -> int:
    """Every partition at the same event time, as a live producer keeps them."""
    producer = make_producer(bootstrap, **{"linger.ms": 5})
    parts = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value=value, partition=i % parts)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    return len(values)


def start_driver(
    out: Path, master: str, bootstrap: str, topics: dict[str, str], checkpoint: Path, *extra: str
) -> subprocess.Popen[bytes]:
    """``python -m tests.spark_cluster.driver`` in its own process; result in ``out/result.json``."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "tests.spark_cluster.driver",
        "--master",
        master,
        "--bootstrap",
        bootstrap,
        "--input",
        topics["in"],
        "--alerts",
        topics["alerts"],
        "--dlq",
        topics["dlq"],
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--ui-port",
        str(free_port()),
        *extra,
    ]
    log = open(out / "driver.log", "ab")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, env=spark_env(out), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """End a driver subprocess (by its PID) if it still runs: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        _stop(proc.pid, proc)


def finish_driver(proc: subprocess.Popen[bytes], out: Path, timeout_s: float) -> dict[str, Any]:
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _stop(proc.pid, proc)
        raise AssertionError(f"driver still running after {timeout_s}s:\n{tail(out / 'driver.log')}") from None
    result = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    result["exit_code"] = code
    return result


def run_driver(
    out: Path,
    master: str,
    bootstrap: str,
    topics: dict[str, str],
    checkpoint: Path,
    *extra: str,
    timeout_s: float = 300,
) -> dict[str, Any]:
    return finish_driver(start_driver(out, master, bootstrap, topics, checkpoint, *extra), out, timeout_s)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
