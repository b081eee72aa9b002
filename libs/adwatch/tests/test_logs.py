"""Structured logs: JSON lines with service, trace ids and bound fields; secrets masked everywhere."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from adwatch.logs import JsonFormatter, TextFormatter, bind, mask_secrets

SECRET = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


def _render(formatter: logging.Formatter, emit: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"adwatch.test.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    emit(logger)  # type: ignore[operator]
    return stream.getvalue()


def test_json_line_carries_service_bound_fields_and_trace_ids() -> None:
    tracer = TracerProvider().get_tracer("test")

    def emit(logger: logging.Logger) -> None:
        with tracer.start_as_current_span("deliver"):
            bind(logger, channel="slack", alert_id="a1").bind(stage="deliver").info(
                "delivered", extra={"partition": 3, "offset": 42}
            )

    line = json.loads(_render(JsonFormatter("notifier-slack"), emit))
    assert line["service"] == "notifier-slack"
    assert line["message"] == "delivered"
    assert (line["channel"], line["alert_id"], line["stage"]) == ("slack", "a1", "deliver")
    assert (line["partition"], line["offset"]) == (3, 42)
    assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16
    assert line["level"] == "INFO" and line["ts"].endswith("Z")


@pytest.mark.parametrize(
    "formatter", [JsonFormatter("svc", [SECRET]), TextFormatter("svc", [SECRET])], ids=["json", "text"]
)
def test_secrets_are_masked_in_messages_fields_and_tracebacks(formatter: logging.Formatter) -> None:
    def emit(logger: logging.Logger) -> None:
        try:
            raise RuntimeError(f"POST {SECRET} failed; redis://:hunter2@redis:6379/0 down")
        except RuntimeError:
            logger.exception("delivery to %s failed", SECRET, extra={"url": SECRET})

    out = _render(formatter, emit)
    assert "XXXXSECRET" not in out and "hunter2" not in out
    assert "RuntimeError" in out and "***" in out


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("redis://default:s3cr3t@redis:6379/0", "s3cr3t"),
        ("http://adwatch:pw123@clickhouse:8123/adwatch", "pw123"),
        ("token=xoxb-1234-abcd", "xoxb-1234-abcd"),
        ("routing_key=R0UTE", "R0UTE"),
    ],
)
def test_credentials_in_urls_and_key_values_are_masked(text: str, hidden: str) -> None:
    assert hidden not in mask_secrets(text)
