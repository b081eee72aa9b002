"""One way to start any adwatch service.

``with service("detector", DetectorSettings) as svc:`` does, in this order, what every
service needs before its first record: load its settings and the common ones (exit 2 with
a message naming the variable), logging (JSON or text, secrets masked), tracing, the stop
event set by SIGTERM/SIGINT, and the ops server (``/metrics``, ``/healthz``, ``/readyz``).
Leaving the block stops the ops server and restores the signal handlers. Each
``__main__`` is then a parser and a few lines.

Metrics follow one pattern in every service: a ``<Service>Metrics(registry)`` class
registers its series on the registry it is given (Alertmanager's ``NewMetrics``), and the
entry point takes it from ``svc.metrics(<Service>Metrics)`` (built on ``svc.registry``, the
one the ops server serves) and passes it down. Nothing reads a module-level metric.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from prometheus_client import REGISTRY, CollectorRegistry
from pydantic_settings import BaseSettings

from adwatch.config import CommonSettings, load_or_exit, secret_values
from adwatch.lifecycle import stop_on_signals
from adwatch.logs import setup_logging
from adwatch.telemetry import OpsServer, RouteHandler, setup_tracing

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=BaseSettings)
M = TypeVar("M")

# registry -> metrics class -> its instance there: a registry holds each series once, and one
# process may run an entry point more than once, even concurrently (the tests do; a drill runs
# beside a live run), so runs on one registry share its metrics objects.
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, dict[Callable[..., object], object]] = (
    weakref.WeakKeyDictionary()
)
_METRICS_LOCK = threading.Lock()


@dataclass
class Service(Generic[S]):
    """What a running service is handed: its settings, the stop event, its metrics registry."""

    name: str
    settings: S
    common: CommonSettings
    stop: threading.Event
    registry: CollectorRegistry = REGISTRY
    ops_port: int | None = None
    _ready: Callable[[], bool] = field(default=lambda: False, repr=False)
    _alive: Callable[[], str | None] = field(default=lambda: None, repr=False)
    _ops: OpsServer | None = field(default=None, repr=False)

    def metrics(self, factory: Callable[[CollectorRegistry], M]) -> M:
        """``factory(self.registry)``, e.g. ``svc.metrics(DetectorMetrics)``: this service's metrics on
        the registry its ops server serves, built on first use and shared by later runs on it."""
        with _METRICS_LOCK:
            built = _METRICS.setdefault(self.registry, {})
            if factory not in built:
                built[factory] = factory(self.registry)
            return cast(M, built[factory])

    def ready_when(self, check: Callable[[], bool]) -> None:
        """``/readyz`` answers 200 while ``check()`` is true (until set: not ready)."""
        self._ready = check

    def alive_when(self, heartbeat: Heartbeat, max_silence_s: float, what: str) -> None:
        """``/healthz`` answers 503 once ``heartbeat`` has not beaten for ``max_silence_s``: the
        service's loop (``what``) is wedged, and restarting it is the cure (a liveness probe)."""
        self._alive = lambda: heartbeat.stale(max_silence_s, what)

    def is_alive(self) -> str | None:
        return self._alive()

    def is_ready(self) -> bool:
        return not self.stop.is_set() and self._ready()

    def mount(self, prefix: str, handler: RouteHandler) -> None:
        """Serve ``prefix`` (and the paths under it) on the ops server (see :meth:`OpsServer.mount`)."""
        if self._ops is None:
            raise RuntimeError(f"{self.name}: no ops server to mount {prefix} on (serve_ops=False)")
        self._ops.mount(prefix, handler)


class Heartbeat:
    """The last time a service's loop made progress (monotonic clock), beaten by the loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()  # the start counts as a beat: start-up has the same allowance

    def beat(self) -> None:
        self._last = self._clock()

    def silence_s(self) -> float:
        return self._clock() - self._last

    def stale(self, max_silence_s: float, what: str) -> str | None:
        """None while fresh; else a sentence for /healthz and the logs."""
        silence = self.silence_s()
        return (
            f"{what} made no progress for {silence:.0f} s (limit {max_silence_s:.0f} s)"
            if silence > max_silence_s
            else None
        )


@contextlib.contextmanager
def service(
    name: str | Callable[[S], str],
    settings_cls: type[S],
    *,
    overrides: dict[str, Any] | None = None,
    common_overrides: dict[str, Any] | None = None,
    serve_ops: bool = True,
    extra_secrets: list[str] | None = None,
) -> Iterator[Service[S]]:
    """Start-up and shutdown shared by every service (see the module docstring).

    ``name`` (the OpenTelemetry service name and the logs' ``service`` field) may depend on
    the settings, e.g. ``notifier-slack`` for one channel's process.
    """
    common = load_or_exit(CommonSettings, **(common_overrides or {}))
    settings = load_or_exit(settings_cls, **(overrides or {}))
    name = name if isinstance(name, str) else name(settings)
    secrets = secret_values(common, settings) + list(extra_secrets or [])
    setup_logging(common.log_level, service=name, fmt=common.log_format, secrets=secrets)
    setup_tracing(name)
    stop = threading.Event()
    svc = Service(name=name, settings=settings, common=common, stop=stop)
    with stop_on_signals(stop):
        ops = (
            OpsServer(common.metrics_port, svc.is_ready, svc.registry, common.metrics_host, svc.is_alive).start()
            if serve_ops
            else None
        )
        svc.ops_port = ops.port if ops else None
        svc._ops = ops
        logger.info("%s starting", name)
        try:
            yield svc
        finally:
            if ops is not None:
                ops.stop()
            logger.info("%s stopped", name)


Command = Callable[[list[str]], int]


def dispatch(prog: str, argv: Sequence[str] | None, commands: Mapping[str, Command], default: str) -> int:
    """The one command-line shape of every service: ``prog [COMMAND] [OPTIONS]``.

    The first argument names the command unless it is an option (then ``default`` runs, so
    ``adwatch-detector`` = ``adwatch-detector run``); each command parses its own options.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(f"usage: {prog} [{'|'.join(commands)}] [OPTIONS]  (default: {default}; COMMAND --help for its options)")
        return 0
    name = args[0] if args and not args[0].startswith("-") else default
    if name not in commands:
        print(f"{prog}: unknown command {name!r} (use: {', '.join(commands)})", file=sys.stderr)
        return 2
    return commands[name](args[1:] if args and args[0] == name else args)
