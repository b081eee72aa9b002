"""The notifier's settings (env prefix ``ADWATCH_NOTIFIER_``), validated once at start-up.

Secrets are ``SecretStr`` (never shown in repr or logs) and may also come from mounted files:
for any secret field, ``ADWATCH_NOTIFIER_<NAME>_FILE=/run/secrets/x`` reads the value from that
file; and, through :func:`adwatch.config.load_settings`, any setting may be a file named like its
variable (``adwatch_notifier_webhook_url``) in ``ADWATCH_SECRETS_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from adwatch.config import ServiceSettings
from adwatch.contracts import TOPIC_ALERTS, TOPIC_ALERTS_DELIVERIES, TOPIC_ALERTS_DLQ
from adwatch.errors import ConfigError
from adwatch_notifier.delivery import Channel
from adwatch_notifier.retry import RetryPolicy

ENV_PREFIX = "ADWATCH_NOTIFIER_"
SECRET_FIELDS = (
    "slack_webhook_url",
    "slack_bot_token",
    "pagerduty_routing_key",
    "smtp_password",
    "webhook_url",
    "api_token",
    "slack_signing_secret",
)


class NotifierSettings(ServiceSettings):
    """Everything one notifier process needs; one process serves one channel."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    channel: Channel = Field("console", description="CHANNEL: slack|email|pagerduty|webhook|console")
    alerts_topic: str = Field(TOPIC_ALERTS, description="ALERTS_TOPIC: topic of Alert records")
    dlq_topic: str = Field(TOPIC_ALERTS_DLQ, description="DLQ_TOPIC: dead-letter topic")
    deliveries_topic: str = Field(
        TOPIC_ALERTS_DELIVERIES,
        description="DELIVERIES_TOPIC: compacted journal of open episodes, restored into Redis when it lost them ('': off)",
    )
    restore_timeout_seconds: float = Field(
        30, gt=0, description="RESTORE_TIMEOUT_SECONDS: longest read of the deliveries journal"
    )
    group_id: str = Field("", description="GROUP_ID: consumer group (default notifier-<channel>)")
    routes_file: str = Field("", description="ROUTES_FILE: routing YAML (default: built-in escalation)")
    redis_prefix: str = Field("adwatch:notifier", description="REDIS_PREFIX: namespace of the Redis keys")

    slack_webhook_url: SecretStr | None = Field(None, description="SLACK_WEBHOOK_URL: incoming webhook")
    slack_bot_token: SecretStr | None = Field(None, description="SLACK_BOT_TOKEN: xoxb- token (enables chat.update)")
    slack_channel: str = Field("", description="SLACK_CHANNEL: default channel for the bot token")
    slack_api_url: str = Field("https://slack.com/api/", description="SLACK_API_URL: Web API base URL")
    slack_min_interval_ms: int = Field(1000, ge=0, description="SLACK_MIN_INTERVAL_MS: per Slack channel")
    slack_signing_secret: SecretStr | None = Field(
        None,
        description="SLACK_SIGNING_SECRET: the Slack app's signing secret; when set, firing Slack messages get "
        "Acknowledge / Silence 1h buttons and POST /slack/actions (on the ops port) takes their clicks "
        "(unset: no buttons, the path answers 404)",
    )

    pagerduty_routing_key: SecretStr | None = Field(None, description="PAGERDUTY_ROUTING_KEY: target 'default'")
    pagerduty_routing_keys: dict[str, SecretStr] = Field(
        default_factory=dict, description='PAGERDUTY_ROUTING_KEYS: JSON {"name": "key"} for named targets'
    )
    pagerduty_url: str = Field("https://events.pagerduty.com", description="PAGERDUTY_URL: Events API base")
    pagerduty_min_interval_ms: int = Field(500, ge=0, description="PAGERDUTY_MIN_INTERVAL_MS: per routing key")

    smtp_host: str = Field("", description="SMTP_HOST")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP_PORT")
    smtp_user: str = Field("", description="SMTP_USER (auth when set)")
    smtp_password: SecretStr | None = Field(None, description="SMTP_PASSWORD")
    smtp_starttls: bool = Field(True, description="SMTP_STARTTLS")
    smtp_ca_file: str = Field("", description="SMTP_CA_FILE: extra CA bundle for STARTTLS")
    smtp_from: str = Field("", description="SMTP_FROM")
    smtp_to: str = Field("", description="SMTP_TO: comma-separated default recipients")

    webhook_url: SecretStr | None = Field(None, description="WEBHOOK_URL: generic JSON POST target")

    api_token: SecretStr | None = Field(
        None,
        description="API_TOKEN: bearer token of the silence HTTP API /api/v1/silences on the ops port "
        "(unset: the API is off and answers 404)",
    )

    cooldown_seconds: float = Field(600, ge=0, description="COOLDOWN_SECONDS: per fingerprint per channel")
    idempotency_ttl_seconds: int = Field(7 * 24 * 3600, ge=60, description="IDEMPOTENCY_TTL_SECONDS")
    claim_lease_seconds: float = Field(30, gt=0, description="CLAIM_LEASE_SECONDS: a claim's liveness lease")
    resend_in_doubt: bool = Field(False, description="RESEND_IN_DOUBT: resend when a crash hid the outcome")
    retry_deadline_seconds: float = Field(300, gt=0, description="RETRY_DEADLINE_SECONDS")
    retry_initial_seconds: float = Field(1.0, gt=0, description="RETRY_INITIAL_SECONDS: first backoff")
    retry_max_seconds: float = Field(60.0, gt=0, description="RETRY_MAX_SECONDS: backoff cap")
    request_timeout_seconds: float = Field(10.0, gt=0, description="REQUEST_TIMEOUT_SECONDS: per attempt")
    delivery_workers: int = Field(
        4,
        ge=1,
        le=64,
        description="DELIVERY_WORKERS: records sent at once per channel, off the poll thread "
        "(a provider that hangs holds one, the others flow)",
    )
    liveness_stall_seconds: float = Field(
        120.0,
        gt=0,
        description="LIVENESS_STALL_SECONDS: /healthz fails once the poll loop made no turn for this long (wedged)",
    )
    max_alert_age_seconds: float = Field(
        3600, ge=0, description="MAX_ALERT_AGE_SECONDS: firings detected longer ago are not sent (0: any age)"
    )
    max_held_records: int = Field(
        1000, ge=1, description="MAX_HELD_RECORDS: records waiting for a retry before consumption pauses"
    )
    silence_refresh_seconds: float = Field(
        1.0, ge=0, description="SILENCE_REFRESH_SECONDS: how often the silences are read again from Redis"
    )
    inhibit_source_ttl_seconds: int = Field(
        900, ge=1, description="INHIBIT_SOURCE_TTL_SECONDS: a firing source inhibits this long unless resolved"
    )
    inhibit_wait_seconds: float = Field(
        3.0,
        ge=0,
        le=60,
        description="INHIBIT_WAIT_SECONDS: an inhibition target with no firing source waits this long for one, "
        "when a source could still follow it on another key (the detector writes a window's CTR/eCPM alerts "
        "before its traffic alert; other alerts are not delayed; 0: no wait)",
    )
    dashboard_url_template: str = Field(
        "",
        description="DASHBOARD_URL_TEMPLATE: per-alert dashboard link; {segment} (the segment id), any dimension "
        "({country} {ad_format} {app_id}...; '' when the segment lacks it), {grafana_vars} (var-<name>=<value>&...), "
        "{where}, {alert_type} {from_ms} {to_ms}; values URL-encoded",
    )
    dimensions: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="DIMENSIONS: JSON list of further dimension names that silences, routes, group_by and "
        'inhibition may use as labels (["exchange", "device_os"] are known already, as are the events\' '
        "country, ad_format, app_id, placement_id, campaign_id)",
    )
    runbook_url_template: str = Field("", description="RUNBOOK_URL_TEMPLATE: runbook link, {alert_type}")

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``<NAME>_FILE`` variables (Kubernetes/Docker secrets) fill unset secret fields."""
        if not isinstance(data, dict):
            return data
        for name in SECRET_FIELDS:
            path = os.environ.get(f"{ENV_PREFIX}{name.upper()}_FILE")
            if path and not data.get(name):
                try:
                    data[name] = Path(path).read_text().strip()
                except OSError as exc:
                    raise ValueError(f"{ENV_PREFIX}{name.upper()}_FILE: cannot read ({exc.strerror})") from None
        return data

    @property
    def consumer_group(self) -> str:
        return self.group_id or f"notifier-{self.channel}"

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.retry_initial_seconds, self.retry_max_seconds, self.retry_deadline_seconds)

    def secret_values(self) -> list[str]:
        """Every secret as plain text, for the log filter (never log these)."""
        values = [s.get_secret_value() for s in (getattr(self, n) for n in SECRET_FIELDS) if s is not None]
        values += [s.get_secret_value() for s in self.pagerduty_routing_keys.values()]
        return [v for v in values if v]


def check_channel_settings(settings: NotifierSettings) -> None:
    """Fail fast when the selected channel lacks its settings, naming the variables."""
    missing: list[str] = []
    match settings.channel:
        case "slack":
            if settings.slack_webhook_url is None and settings.slack_bot_token is None:
                missing.append("SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN")
        case "pagerduty":
            if settings.pagerduty_routing_key is None and not settings.pagerduty_routing_keys:
                missing.append("PAGERDUTY_ROUTING_KEY")
        case "email":
            missing += [n.upper() for n in ("smtp_host", "smtp_from", "smtp_to") if not getattr(settings, n)]
            if settings.smtp_user and settings.smtp_password is None:
                missing.append("SMTP_PASSWORD")
        case "webhook":
            if settings.webhook_url is None:
                missing.append("WEBHOOK_URL")
    if missing:
        names = ", ".join(ENV_PREFIX + m.replace(" or ", f" or {ENV_PREFIX}") for m in missing)
        raise ConfigError(f"channel {settings.channel!r} needs {names}")


def check_route_targets(settings: NotifierSettings, targets: list[str]) -> None:
    """Fail fast when a route of this channel names a target the settings cannot reach.

    ``targets``: the ``target`` of each route of the channel ('' = the channel's default).
    A bot token with neither ``SLACK_CHANNEL`` nor a target on every Slack route, or a
    PagerDuty route naming a routing key that is not configured, would only fail at the first alert.
    """
    match settings.channel:
        case "slack":
            if settings.slack_bot_token is not None and not settings.slack_channel and "" in targets:
                raise ConfigError(
                    f"channel 'slack' with {ENV_PREFIX}SLACK_BOT_TOKEN needs {ENV_PREFIX}SLACK_CHANNEL "
                    "(a route without a target posts there)"
                )
        case "pagerduty":
            known = set(settings.pagerduty_routing_keys) | ({"default"} if settings.pagerduty_routing_key else set())
            unknown = sorted({t or "default" for t in targets} - known)
            if unknown:
                raise ConfigError(
                    f"channel 'pagerduty': routes name routing keys {unknown} missing from "
                    f"{ENV_PREFIX}PAGERDUTY_ROUTING_KEY / {ENV_PREFIX}PAGERDUTY_ROUTING_KEYS"
                )
