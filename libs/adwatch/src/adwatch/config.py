"""Typed settings from the environment, validated once at start-up.

Shared settings use the prefix ``ADWATCH_`` (``ADWATCH_KAFKA_BOOTSTRAP``); each service
subclasses :class:`ServiceSettings` with its own prefix (``ADWATCH_NOTIFIER_...``).
A wrong value stops the service with a message that names the variable.

Secrets can also come from files (Kubernetes Secrets mounted as a volume): with
``ADWATCH_SECRETS_DIR=/run/secrets/adwatch`` a file named like the variable, lower-case
(``adwatch_redis_url``), supplies its value. URLs that can carry a password (Redis,
ClickHouse) are ``SecretStr``: they print as ``**********``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adwatch.errors import ConfigError


class CommonSettings(BaseSettings):
    """Where the shared infrastructure is; every service reads these."""

    model_config = SettingsConfigDict(env_prefix="ADWATCH_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL (may carry a password: a secret)"
    )
    clickhouse_url: SecretStr = Field(
        SecretStr("chdb://./.adwatch/clickhouse"),
        description="ClickHouse: chdb://<dir> (embedded) or http(s)://user:pass@host:8123/db (a secret)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Python log level")
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="json (one object per line), text, or auto: text on a terminal, else json"
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz (0: any free)")
    metrics_host: str = Field("0.0.0.0", description="Address the ops server binds (127.0.0.1 for local runs)")
    grafana_url: str = Field(
        "", description="Link in notifications (Grafana); {alert_id}, {fingerprint} filled in per alert"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class ServiceSettings(BaseSettings):
    """Base of each service's own settings; subclasses set their ``env_prefix``."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")


_S = TypeVar("_S", bound=BaseSettings)


def load_settings(cls: type[_S], **overrides: Any) -> _S:
    """Build settings or raise :class:`ConfigError` naming each bad variable."""
    secrets_dir = os.environ.get("ADWATCH_SECRETS_DIR")
    if secrets_dir and not Path(secrets_dir).is_dir():
        raise ConfigError(f"ADWATCH_SECRETS_DIR: {secrets_dir} is not a directory")
    try:
        return cls(**overrides, _secrets_dir=secrets_dir)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors():
            name = (prefix + "_".join(str(p) for p in err["loc"])).upper()
            shown = "a secret" if _is_secret(cls, err["loc"]) else repr(err.get("input"))
            problems.append(f"{name}: {err['msg']} (got {shown})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def load_or_exit(cls: type[_S], **overrides: Any) -> _S:
    """Entry-point variant: print the problem and exit 2 instead of a stack trace."""
    try:
        return load_settings(cls, **overrides)
    except ConfigError as exc:
        print(f"adwatch: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _is_secret(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> bool:
    field = cls.model_fields.get(str(loc[0])) if loc else None
    return field is not None and "Secret" in str(field.annotation)


def secret_values(*settings: BaseSettings) -> list[str]:
    """Every ``SecretStr`` value of the given settings (top level and in mappings), for log masking."""
    values: list[str] = []
    for obj in settings:
        for name in type(obj).model_fields:
            value = getattr(obj, name)
            items = value.values() if isinstance(value, dict) else [value]
            values += [v.get_secret_value() for v in items if isinstance(v, SecretStr) and v.get_secret_value()]
    return values
