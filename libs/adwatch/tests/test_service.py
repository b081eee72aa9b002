"""The service skeleton: settings errors name the variable, SIGTERM sets stop, ops server lives and dies with it."""

from __future__ import annotations

import os
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from adwatch.config import ServiceSettings, load_settings, secret_values
from adwatch.errors import ConfigError
from adwatch.service import Heartbeat, service
from adwatch.telemetry import HttpResponse


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ADWATCH_DEMO_", frozen=True, extra="ignore")

    batch: int = Field(10, ge=1)
    api_key: SecretStr | None = None


@pytest.fixture(autouse=True)
def _loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADWATCH_METRICS_HOST", "127.0.0.1")
    monkeypatch.setenv("ADWATCH_LOG_FORMAT", "json")


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def test_sigterm_sets_stop_and_readiness_follows_the_check() -> None:
    with service("demo", DemoSettings, overrides={"batch": 5}) as svc:
        assert svc.settings.batch == 5
        port = svc.ops_port
        assert port is not None
        assert _status(port, "/healthz") == 200
        assert _status(port, "/readyz") == 503  # not ready until the service says so
        svc.ready_when(lambda: True)
        assert _status(port, "/readyz") == 200
        assert _status(port, "/things") == 404
        svc.mount("/things", lambda request: HttpResponse(204))
        assert _status(port, "/things") == 204
        os.kill(os.getpid(), signal.SIGTERM)
        assert svc.stop.wait(5)
        assert _status(port, "/readyz") == 503  # stopping: out of the load balancer at once
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert signal.getsignal(signal.SIGTERM) is not None


def test_bad_variable_exits_2_naming_it_without_echoing_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADWATCH_DEMO_BATCH", "0")
    with pytest.raises(SystemExit) as exit_info, service("demo", DemoSettings):
        pass
    assert exit_info.value.code == 2
    assert "ADWATCH_DEMO_BATCH" in capsys.readouterr().err


def test_secret_values_are_collected_and_file_secrets_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    secrets = os.path.join(tmp_path, "secrets")
    os.mkdir(secrets)
    with open(os.path.join(secrets, "adwatch_demo_api_key"), "w") as f:
        f.write("k3y-from-a-file")
    monkeypatch.setenv("ADWATCH_SECRETS_DIR", secrets)
    settings = load_settings(DemoSettings)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k3y-from-a-file"
    assert "k3y-from-a-file" in secret_values(settings)
    assert "k3y" not in repr(settings)


def test_missing_secrets_dir_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADWATCH_SECRETS_DIR", "/nonexistent/adwatch-secrets")
    with pytest.raises(ConfigError, match="ADWATCH_SECRETS_DIR"):
        load_settings(DemoSettings)


@pytest.mark.parametrize(
    ("argv", "ran", "code"),
    [
        pytest.param([], ("run", []), 0, id="no-arguments-run-the-default"),
        pytest.param(["--rate", "5"], ("run", ["--rate", "5"]), 0, id="options-go-to-the-default"),
        pytest.param(["backtest", "--json"], ("backtest", ["--json"]), 0, id="named-command"),
        pytest.param(["nope"], None, 2, id="unknown-command"),
    ],
)
def test_dispatch_runs_one_command_shape(argv: list[str], ran: tuple[str, list[str]] | None, code: int) -> None:
    from adwatch.service import dispatch

    calls: list[tuple[str, list[str]]] = []

    def command(name: str) -> Callable[[list[str]], int]:
        def record(args: list[str]) -> int:
            calls.append((name, args))
            return 0

        return record

    commands = {name: command(name) for name in ("run", "backtest")}
    assert dispatch("prog", argv, commands, default="run") == code
    assert calls == ([ran] if ran else [])


def test_healthz_fails_once_the_loop_stops_beating() -> None:
    """A wedged loop (a stalled query, a stuck poll) is restarted by the liveness probe."""
    clock = [0.0]
    beat = Heartbeat(clock=lambda: clock[0])
    with service("demo", DemoSettings) as svc:
        port = svc.ops_port
        assert port is not None
        svc.alive_when(beat, max_silence_s=30, what="the poll loop")
        clock[0] = 29.0
        assert _status(port, "/healthz") == 200
        clock[0] = 31.0
        assert _status(port, "/healthz") == 503
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert b"the poll loop made no progress for 31 s (limit 30 s)" in err.value.read()
        beat.beat()
        assert _status(port, "/healthz") == 200
        assert _status(port, "/readyz") == 503  # readiness is its own question


def test_a_services_metrics_live_on_its_registry_built_once_per_registry() -> None:
    import threading

    from prometheus_client import CollectorRegistry, Counter

    from adwatch.config import CommonSettings
    from adwatch.service import Service

    class RunMetrics:
        def __init__(self, registry: CollectorRegistry) -> None:
            self.runs_total = Counter("adwatch_test_runs_total", "Runs", registry=registry)

    def run(registry: CollectorRegistry) -> RunMetrics:
        common = CommonSettings()
        svc = Service(name="t", settings=common, common=common, stop=threading.Event(), registry=registry)
        metrics = svc.metrics(RunMetrics)
        metrics.runs_total.inc()
        return metrics

    mine, other = CollectorRegistry(), CollectorRegistry()
    first, again = run(mine), run(mine)  # a second run in the process: same series, no duplicate error
    assert first is again and mine.get_sample_value("adwatch_test_runs_total") == 2
    assert run(other) is not first and other.get_sample_value("adwatch_test_runs_total") == 1
