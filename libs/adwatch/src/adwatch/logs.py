"""Structured logs: one JSON object per line (or plain text on a terminal), secrets masked.

Every line carries ``service``, the current ``trace_id``/``span_id`` and the fields bound
with :func:`bind` or passed as ``extra=`` (``channel``, ``alert_id``, ``stage``, ``topic``,
``partition``, ``offset``...), so a log search filters by field instead of parsing prose.
Secrets are masked in the message *and* in tracebacks: an exception that quotes a webhook
URL or a Redis password never reaches the log in clear.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import MutableMapping, Sequence
from typing import Any, Literal

from opentelemetry import trace

LogFormat = Literal["auto", "json", "text"]

_SECRET_PATTERNS = [
    re.compile(r"https://hooks\.slack\.com/\S+"),
    re.compile(r"xox[abprs]-[A-Za-z0-9-]+"),
    re.compile(r"(?i)(password|routing_key|token|secret)=\S+"),
    # user:password@ in any URL (redis://, http://, clickhouse)
    re.compile(r"(?<=://)[^/@\s:]*:[^/@\s]+(?=@)"),
]
# Attributes every LogRecord has; anything else on a record is a bound field.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def mask_secrets(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with the given secret values and anything that looks like a credential replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(0).split("=")[0] + "=***" if "=" in m.group(0) else "***", text)
    return text


class SecretMaskingFilter(logging.Filter):
    """Masks secrets in the rendered message of every record (handlers of any format)."""

    def __init__(self, extra_secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.extra = [s for s in extra_secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message, self.extra)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def bound_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields bound to a record (``extra=`` or :func:`bind`), not the standard attributes."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}


def _trace_fields() -> dict[str, str]:
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}


class _MaskingFormatter(logging.Formatter):
    """Base of both formats: tracebacks masked like messages."""

    def __init__(self, service: str, secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.service = service
        self.secrets = [s for s in secrets if s]

    def formatException(self, ei: Any) -> str:
        return mask_secrets(super().formatException(ei), self.secrets)

    def _message(self, record: logging.LogRecord) -> str:
        return mask_secrets(record.getMessage(), self.secrets)


class JsonFormatter(_MaskingFormatter):
    """One JSON object per line: ts, level, service, logger, message, trace ids, bound fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": self._message(record),
        }
        line.update(_trace_fields())
        for key, value in bound_fields(record).items():
            line[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return mask_secrets(json.dumps(line, default=str), self.secrets)


class TextFormatter(_MaskingFormatter):
    """``time level logger: message key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = {**_trace_fields(), **bound_fields(record)}
        fields.pop("span_id", None)
        tail = "".join(f" {k}={v}" for k, v in fields.items())
        text = f"{stamp} {record.levelname} {record.name}: {self._message(record)}{tail}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return mask_secrets(text, self.secrets)


def setup_logging(
    level: str = "INFO", *, service: str = "adwatch", fmt: LogFormat = "auto", secrets: Sequence[str] = ()
) -> None:
    """Configure the root logger once, in the entry point (``auto``: text on a terminal, else JSON)."""
    stream = sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    formatter = JsonFormatter(service, secrets) if fmt == "json" else TextFormatter(service, secrets)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class BoundLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger with fields bound to every line; ``bind`` adds more without losing these."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs

    def bind(self, **fields: Any) -> BoundLogger:
        return BoundLogger(self.logger, {**(self.extra or {}), **fields})


def bind(logger: logging.Logger | BoundLogger, **fields: Any) -> BoundLogger:
    """``logger`` with ``fields`` (e.g. ``channel=..., alert_id=...``) on every line it writes."""
    if isinstance(logger, BoundLogger):
        return logger.bind(**fields)
    return BoundLogger(logger, dict(fields))
