"""What a channel returns or raises, and the one place HTTP/SMTP codes become (retry, reason).

Reasons use Alertmanager's vocabulary so dashboards read the same:
``clientError``, ``serverError``, ``rateLimited``, ``timeout``, ``other``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

from adwatch.errors import AdwatchError

Channel = Literal["slack", "email", "pagerduty", "webhook", "console"]
CHANNELS: tuple[Channel, ...] = ("slack", "email", "pagerduty", "webhook", "console")
Reason = Literal["clientError", "serverError", "rateLimited", "timeout", "other"]


@dataclass(frozen=True)
class Delivery:
    """The provider accepted the notification; ``provider_id`` is its handle (Slack ts, ...)."""

    channel: str
    target: str
    provider_id: str | None = None


class DeliveryError(AdwatchError):
    """A send failed. ``retryable`` says whether trying again can help.

    The message never contains URLs, tokens or keys: it goes to logs and dead letters.
    """

    def __init__(self, reason: Reason, detail: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after


def classify_status(status: int) -> tuple[bool, Reason]:
    """HTTP status -> (retry, reason): 429 and 5xx retry, any other 4xx is permanent."""
    if status == 429:
        return True, "rateLimited"
    if 500 <= status < 600:
        return True, "serverError"
    if 400 <= status < 500:
        return False, "clientError"
    return False, "other"


def classify_smtp(code: int) -> tuple[bool, Reason]:
    """SMTP reply code -> (retry, reason): 4xx is transient, 5xx permanent."""
    if 400 <= code < 500:
        return True, "serverError"
    if 500 <= code < 600:
        return False, "clientError"
    return False, "other"


def http_error(status: int, detail: str, retry_after: str | float | None = None) -> DeliveryError:
    """A :class:`DeliveryError` for a non-success HTTP answer, with Retry-After parsed."""
    retry, reason = classify_status(status)
    return DeliveryError(
        reason, f"HTTP {status} {detail}".strip(), retryable=retry, retry_after=parse_retry_after(retry_after)
    )


RETRY_AFTER_MAX_S = 3600.0  # a provider asking for more than an hour is answered by the deadline


def parse_retry_after(value: str | float | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

    ``now`` (epoch seconds) is the clock the date is compared with; None when absent or unparsable.
    """
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        try:
            when = parsedate_to_datetime(str(value))
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), RETRY_AFTER_MAX_S)


def transport_error(exc: BaseException) -> DeliveryError:
    """A connection-level failure: retryable; the message names only the exception type."""
    name = type(exc).__name__
    is_timeout = isinstance(exc, TimeoutError) or "timeout" in name.lower() or "timed out" in str(exc).lower()
    return DeliveryError("timeout" if is_timeout else "other", f"transport {name}", retryable=True)
