"""Tracing set-up, W3C trace context in Kafka headers, and the ops server (/metrics, /healthz, /readyz).

Logging lives in :mod:`adwatch.logs`.

A service may mount its own small HTTP routes on the ops server (:meth:`OpsServer.mount`):
a handler is a plain function :class:`HttpRequest` -> :class:`HttpResponse`, so it is tested
without a socket, and the service needs no second port, thread or shutdown of its own.

Tracing is the OpenTelemetry SDK configured by the standard ``OTEL_*`` variables: with
no exporter configured the API's no-op tracer is used and costs nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

# OpenTelemetry messaging semantic conventions v1.44 attribute names.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_PARTITION = "messaging.destination.partition.id"
MESSAGING_CONSUMER_GROUP = "messaging.consumer.group.name"
MESSAGING_KAFKA_OFFSET = "messaging.kafka.offset"
MESSAGING_KAFKA_KEY = "messaging.kafka.message.key"


# --- tracing ------------------------------------------------------------------------------
def setup_tracing(service_name: str) -> None:
    """Install an SDK tracer provider when an OTLP endpoint is configured; else stay no-op."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        logger.warning("OTEL endpoint set but opentelemetry-exporter-otlp-proto-http is not installed")
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def inject_headers(headers: Headers | None = None, ctx: otel_context.Context | None = None) -> Headers:
    """Add W3C ``traceparent``/``tracestate`` of the current (or given) context to Kafka headers."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    out = list(headers or [])
    out.extend((k, v.encode()) for k, v in carrier.items())
    return out


def extract_context(headers: Headers | Sequence[tuple[str, bytes | str | None]] | None) -> otel_context.Context:
    """The trace context carried in Kafka headers (empty context when there is none)."""
    carrier = {}
    for key, value in headers or []:
        if value is None:
            continue
        carrier[key] = value.decode() if isinstance(value, bytes) else value
    return propagate.extract(carrier)


def trace_id_exemplar() -> dict[str, str] | None:
    """``{"trace_id": ...}`` for a Prometheus exemplar when a span is recording."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return {"trace_id": format(span_context.trace_id, "032x")}


# --- /metrics, /healthz, /readyz and mounted routes ------------------------------------------
BUILTIN_PATHS = ("/metrics", "/healthz", "/readyz")
MAX_BODY_BYTES = 1024 * 1024
"""Larger request bodies are refused (413) before a mounted handler sees them."""


@dataclass(frozen=True)
class HttpRequest:
    """One request to a mounted route: header names are lower-case, the query parsed."""

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class HttpResponse:
    """What a mounted route answers; ``then`` runs after the response is sent (a follow-up call)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    then: Callable[[], None] | None = None

    @staticmethod
    def json(status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
        return HttpResponse(status, json.dumps(data).encode() + b"\n", "application/json", headers)


RouteHandler = Callable[[HttpRequest], HttpResponse]


class OpsServer:
    """Serves /metrics (Prometheus, OpenMetrics on request), /healthz, /readyz and mounted routes."""

    def __init__(
        self,
        port: int = 0,
        ready: Callable[[], bool] = lambda: True,
        registry: CollectorRegistry = REGISTRY,
        host: str = "0.0.0.0",
        alive: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.ready = ready
        self.alive = alive  # None: alive; else why not (a wedged loop): /healthz 503 and the kubelet restarts it
        self.registry = registry
        self.routes: dict[str, RouteHandler] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._send(200, encoder(server.registry), content_type)
                elif path == "/healthz":
                    try:
                        wedged = server.alive()
                    except Exception as exc:  # a broken check is no reason to restart a working service
                        logger.warning("liveness check failed: %s", type(exc).__name__)
                        wedged = None
                    if wedged:
                        self._send(503, f"not alive: {wedged}\n".encode(), "text/plain")
                    else:
                        self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    ok = _safe(server.ready)
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
                else:
                    self._route()

            def do_POST(self) -> None:
                self._route()

            def do_PUT(self) -> None:
                self._route()

            def do_PATCH(self) -> None:
                self._route()

            def do_DELETE(self) -> None:
                self._route()

            def _route(self) -> None:
                url = urlsplit(self.path)
                handler = server.route_for(url.path)
                if handler is None:
                    self._send(404, b"not found\n", "text/plain")
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY_BYTES:
                    self._reply(HttpResponse.json(413, {"error": f"body: at most {MAX_BODY_BYTES} bytes"}))
                    return
                request = HttpRequest(
                    method=self.command,
                    path=url.path,
                    query=parse_qs(url.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                try:
                    response = handler(request)
                except Exception as exc:  # a route's bug is a 500, never a traceback to the client
                    logger.error("ops route %s %s failed: %s", request.method, request.path, type(exc).__name__)
                    response = HttpResponse.json(500, {"error": "internal error"})
                self._reply(response)
                if response.then is not None:
                    try:
                        response.then()
                    except Exception as exc:
                        logger.warning(
                            "follow-up of %s %s failed: %s", request.method, request.path, type(exc).__name__
                        )

            def _reply(self, response: HttpResponse) -> None:
                self._send(response.status, response.body, response.content_type, response.headers)
                self.wfile.flush()

            def _send(
                self, code: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port: int = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="ops-http", daemon=True)

    def mount(self, prefix: str, handler: RouteHandler) -> None:
        """Serve ``prefix`` and every path under it (``prefix/...``) with ``handler``, any method.

        The built-in paths cannot be taken; the longest mounted prefix wins.
        """
        if not prefix.startswith("/") or prefix.endswith("/") or prefix in BUILTIN_PATHS:
            raise ValueError(f"cannot mount {prefix!r}: a path like /api/v1/things, not /metrics /healthz /readyz")
        self.routes[prefix] = handler
        logger.info("serving %s on port %d", prefix, self.port)

    def route_for(self, path: str) -> RouteHandler | None:
        matches = [p for p in self.routes if path == p or path.startswith(p + "/")]
        return self.routes[max(matches, key=len)] if matches else None

    def start(self) -> OpsServer:
        self.thread.start()
        logger.info("serving /metrics, /healthz, /readyz on port %d", self.port)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _safe(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:
        return False
