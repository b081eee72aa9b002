"""The ops endpoints, secret masking and trace context in Kafka headers."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, Counter

from adwatch.logs import SecretMaskingFilter, mask_secrets
from adwatch.telemetry import HttpRequest, HttpResponse, OpsServer, extract_context, inject_headers


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_ops_server_serves_metrics_health_and_readiness() -> None:
    registry = CollectorRegistry()
    Counter("adwatch_test_things_total", "things", registry=registry).inc()
    ready = {"ok": False}
    server = OpsServer(0, ready=lambda: ready["ok"], registry=registry, host="127.0.0.1").start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/readyz")[0] == 503
        ready["ok"] = True
        assert _get(base + "/readyz")[0] == 200
        status, body = _get(base + "/metrics")
        assert status == 200 and "adwatch_test_things_total 1.0" in body
    finally:
        server.stop()


def test_mounted_routes_get_method_path_query_headers_body_and_run_then_after_answering() -> None:
    seen: list[HttpRequest] = []
    followed: list[str] = []

    def echo(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        if request.path.endswith("/boom"):
            raise RuntimeError("secret-ish detail")
        return HttpResponse(201, b"made", "text/plain", (("X-Thing", "1"),), then=lambda: followed.append("done"))

    server = OpsServer(0, host="127.0.0.1").start()
    server.mount("/api/v1/things", echo)
    with pytest.raises(ValueError):
        server.mount("/metrics", echo)
    try:
        base = f"http://127.0.0.1:{server.port}"
        req = urllib.request.Request(
            base + "/api/v1/things/7?all=true", data=b'{"a":1}', method="PUT", headers={"X-Token": "t"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert (resp.status, resp.read(), resp.headers["X-Thing"]) == (201, b"made", "1")
        assert seen[0].method == "PUT" and seen[0].path == "/api/v1/things/7"
        assert seen[0].query == {"all": ["true"]} and seen[0].headers["x-token"] == "t" and seen[0].body == b'{"a":1}'
        status, body = _get(base + "/api/v1/things/boom")
        assert status == 500 and "secret-ish" not in body
        assert _get(base + "/api/v1/thingsx")[0] == 404  # a prefix is a path segment, not a string prefix
        assert _get(base + "/healthz")[0] == 200
        assert followed == ["done"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("https://hooks.slack.com/services/T000/B000/XXXX", id="slack-webhook"),
        pytest.param("xoxb-1234-abcd", id="slack-token"),
    ],
)
def test_secrets_are_masked(secret: str) -> None:
    assert secret not in mask_secrets(f"posting to {secret} failed")


def test_masking_filter_masks_given_secrets(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("adwatch.test.masking")
    logger.addFilter(SecretMaskingFilter(["R0UTINGKEY"]))
    with caplog.at_level(logging.INFO):
        logger.info("routing key %s rejected", "R0UTINGKEY")
    assert "R0UTINGKEY" not in caplog.text and "***" in caplog.text


def test_trace_context_travels_in_headers() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("send") as span:
        headers = inject_headers([("other", b"x")])
    assert any(k == "traceparent" for k, _ in headers)
    ctx = extract_context(headers)
    assert trace.get_current_span(ctx).get_span_context().trace_id == span.get_span_context().trace_id
