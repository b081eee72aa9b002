"""The notifier's HTTP routes: the silence API and Slack's button clicks, mounted on the ops server.

Why the ops server (``adwatch.telemetry.OpsServer.mount``) and not a server of our own: every
notifier process already serves it on one port (``ADWATCH_METRICS_PORT``) with a thread, a
Kubernetes Service port and a shutdown tied to the process; a second server would need all
four again. A route is a plain function ``HttpRequest -> HttpResponse``, tested without a socket.
Each route is mounted only when its secret is configured, so an unconfigured API answers 404
like any unknown path.

Silence API (``Authorization: Bearer <ADWATCH_NOTIFIER_API_TOKEN>`` on every request; the same
validation as ``adwatch-notifier silence``):

- ``GET /api/v1/silences[?all=true]``: active and pending silences (``all``: also the ended ones kept)
- ``GET /api/v1/silences/{id}``: one silence
- ``POST /api/v1/silences``: ``{"matchers": ["country=US", "alert_type=~ctr_.*"], "duration": "1h"
  | "ends_at": ..., "starts_at": ... (optional, default now), "author": "...", "comment": "..."}``;
  times are RFC 3339 with a zone (``2026-12-01T12:00:00Z``) or epoch seconds. 201 with the silence.
- ``DELETE /api/v1/silences/{id}``: expire it now (404 when no such active or pending silence).

Errors are ``{"error": "..."}`` with 400 (bad input), 401 (token), 404, 405, 503 (Redis down).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import SecretStr

from adwatch.errors import AdwatchError, ConfigError
from adwatch.telemetry import HttpRequest, HttpResponse, RouteHandler
from adwatch_notifier.ledger import LedgerUnavailableError
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.settings import NotifierSettings
from adwatch_notifier.silences import RedisSilenceStore, Silence, SilenceStore, new_silence, parse_duration

logger = logging.getLogger(__name__)

SILENCES_PATH = "/api/v1/silences"
MAX_MATCHERS = 32
_FIELDS = {"matchers", "duration", "starts_at", "ends_at", "author", "comment"}
_UNAUTHORIZED = HttpResponse.json(401, {"error": "missing or wrong bearer token"}, (("WWW-Authenticate", "Bearer"),))


class RequestError(AdwatchError):
    """Bad input to the API (answered 400 with this message)."""


# --- pure: token, request -> silence, silence -> JSON -------------------------------------------
def bearer_ok(authorization: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip() or not token:
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token.encode())


def parse_time(value: object, name: str) -> float:
    """RFC 3339 with a zone, or epoch seconds -> epoch seconds."""
    if isinstance(value, bool):
        raise RequestError(f"{name}: expected an RFC 3339 time or epoch seconds")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise RequestError(f"{name}: {value[:40]!r} is not an RFC 3339 time (e.g. 2026-12-01T12:00:00Z)") from None
        if parsed.tzinfo is None:
            raise RequestError(f"{name}: give a time zone (e.g. 2026-12-01T12:00:00Z)")
        return parsed.timestamp()
    raise RequestError(f"{name}: expected an RFC 3339 time or epoch seconds")


def silence_from_request(body: bytes, now_s: float) -> Silence:
    """The silence a ``POST /api/v1/silences`` body asks for; :class:`RequestError` says what is wrong."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("body: not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestError("body: expected a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise RequestError(f"unknown fields {unknown} (expected {sorted(_FIELDS)})")
    matchers = data.get("matchers")
    if not isinstance(matchers, list) or not all(isinstance(m, str) for m in matchers):
        raise RequestError('matchers: expected a list of strings like ["country=US", "alert_type=~ctr_.*"]')
    if len(matchers) > MAX_MATCHERS:
        raise RequestError(f"matchers: at most {MAX_MATCHERS}")
    for name in ("author", "comment"):
        if not isinstance(data.get(name), str) or not data[name].strip():
            raise RequestError(f"{name}: required, a non-empty string")
    if ("duration" in data) == ("ends_at" in data):
        raise RequestError("give either duration (e.g. 1h) or ends_at")
    starts_at = parse_time(data["starts_at"], "starts_at") if "starts_at" in data else now_s
    try:
        if "duration" in data:
            if not isinstance(data["duration"], str):
                raise RequestError('duration: expected a string like "30m", "1h30m", "2d"')
            ends_at = starts_at + parse_duration(data["duration"])
        else:
            ends_at = parse_time(data["ends_at"], "ends_at")
        if ends_at <= now_s:
            raise RequestError("the silence would end in the past")
        silence = new_silence(
            matchers,
            now_s=starts_at,
            duration_s=ends_at - starts_at,
            created_by=data["author"].strip(),
            comment=data["comment"],
        )
    except ConfigError as exc:
        raise RequestError(str(exc)) from None
    return silence


def silence_state(silence: Silence, now_s: float) -> str:
    return "active" if silence.active(now_s) else ("pending" if silence.starts_at > now_s else "expired")


def silence_json(silence: Silence, now_s: float) -> dict[str, Any]:
    def at(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

    return {
        "id": silence.id,
        "state": silence_state(silence, now_s),
        "matchers": [str(m) for m in silence.matchers],
        "starts_at": at(silence.starts_at),
        "ends_at": at(silence.ends_at),
        "author": silence.created_by,
        "comment": silence.comment,
    }


# --- the route ---------------------------------------------------------------------------------
class SilencesRoute:
    """``/api/v1/silences``: list, show, create, expire (bearer token required)."""

    def __init__(
        self, token: SecretStr, store: SilenceStore, metrics: NotifierMetrics, *, now: Callable[[], float]
    ) -> None:
        self._token = token
        self.store, self.metrics, self.now = store, metrics, now

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self._handle(request)
        except RequestError as exc:
            response = HttpResponse.json(400, {"error": str(exc)})
        except LedgerUnavailableError:
            response = HttpResponse.json(503, {"error": "silence store (Redis) unavailable"})
        self.metrics.http_requests.labels("silences", str(response.status)).inc()
        return response

    def _handle(self, request: HttpRequest) -> HttpResponse:
        if not bearer_ok(request.headers.get("authorization"), self._token.get_secret_value()):
            return _UNAUTHORIZED
        rest = request.path[len(SILENCES_PATH) :].strip("/")
        now_s = self.now()
        if not rest:
            if request.method == "GET":
                everything = request.query.get("all", ["false"])[-1].lower() in ("1", "true", "yes")
                shown = sorted(
                    (s for s in self.store.all() if everything or s.ends_at > now_s), key=lambda s: s.starts_at
                )
                return HttpResponse.json(200, {"silences": [silence_json(s, now_s) for s in shown]})
            if request.method == "POST":
                silence = silence_from_request(request.body, now_s)
                self.store.add(silence)
                logger.info("silence %s added over HTTP by %s: %s", silence.id, silence.created_by, silence.comment)
                return HttpResponse.json(201, silence_json(silence, now_s))
            return HttpResponse.json(405, {"error": "use GET or POST"}, (("Allow", "GET, POST"),))
        if "/" in rest:
            return HttpResponse.json(404, {"error": "not found"})
        if request.method == "GET":
            found = [s for s in self.store.all() if s.id == rest]
            if not found:
                return HttpResponse.json(404, {"error": f"no silence {rest}"})
            return HttpResponse.json(200, silence_json(found[0], now_s))
        if request.method == "DELETE":
            if not self.store.expire(rest, now_s):
                return HttpResponse.json(404, {"error": f"no active or pending silence {rest}"})
            logger.info("silence %s expired over HTTP", rest)
            return HttpResponse.json(200, {"id": rest, "state": "expired"})
        return HttpResponse.json(405, {"error": "use GET or DELETE"}, (("Allow", "GET, DELETE"),))


def mount_routes(
    mount: Callable[[str, RouteHandler], None],
    settings: NotifierSettings,
    redis_client: redis.Redis,
    metrics: NotifierMetrics,
    now: Callable[[], float],
    *,
    silences: SilenceStore | None = None,
) -> list[str]:
    """Mount the routes whose secret is configured; the paths mounted. ``silences``: the (journaled) store."""
    from adwatch_notifier.slack_actions import PATH, RedisAckStore, SlackActionsRoute

    silences = silences or RedisSilenceStore(redis_client, settings.redis_prefix)
    mounted: list[str] = []
    if settings.api_token is not None and settings.api_token.get_secret_value():
        mount(SILENCES_PATH, SilencesRoute(settings.api_token, silences, metrics, now=now))
        mounted.append(SILENCES_PATH)
    if settings.slack_signing_secret is not None and settings.slack_signing_secret.get_secret_value():
        acks = RedisAckStore(redis_client, settings.redis_prefix)
        mount(PATH, SlackActionsRoute(settings.slack_signing_secret, silences, acks, metrics, now=now))
        mounted.append(PATH)
    return mounted
