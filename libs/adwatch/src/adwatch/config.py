"""Typed settings from the environment, validated once at start-up.

Shared settings use the prefix ``ADWATCH_`` (``ADWATCH_KAFKA_BOOTSTRAP``); each service
subclasses :class:`ServiceSettings` with its own prefix (``ADWATCH_NOTIFIER_...``).
A wrong value stops the service with a message that names the variable.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from adwatch.errors import ConfigError


class CommonSettings(BaseSettings):
    """Where the shared infrastructure is; every service reads these."""

    model_config = SettingsConfigDict(env_prefix="ADWATCH_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL")
    clickhouse_url: str = Field(
        "chdb://./.adwatch/clickhouse",
        description="ClickHouse: chdb://<dir> (embedded) or http(s)://user:pass@host:8123/db",
    )
    log_level: str = Field("INFO", description="Python log level")
    metrics_port: int = Field(0, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz (0: any free)")
    grafana_url: str = Field("", description="Grafana dashboard URL linked from notifications")


class ServiceSettings(BaseSettings):
    """Base of each service's own settings; subclasses set their ``env_prefix``."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")


_S = TypeVar("_S", bound=BaseSettings)


def load_settings(cls: type[_S], **overrides: Any) -> _S:
    """Build settings or raise :class:`ConfigError` naming each bad variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors():
            name = (prefix + "_".join(str(p) for p in err["loc"])).upper()
            problems.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def load_or_exit(cls: type[_S], **overrides: Any) -> _S:
    """Entry-point variant: print the problem and exit 2 instead of a stack trace."""
    try:
        return load_settings(cls, **overrides)
    except ConfigError as exc:
        print(f"adwatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
