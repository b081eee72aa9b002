"""The silence HTTP API as pure functions and as a route on an in-memory store."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from adwatch.telemetry import HttpRequest
from adwatch_notifier.api import RequestError, SilencesRoute, bearer_ok, silence_from_request
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.silences import MemorySilenceStore

NOW = 1_764_590_400.0  # 2025-12-01T12:00:00Z
TOKEN = "s3cret-api-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def body(**fields: Any) -> bytes:
    base: dict[str, Any] = {"matchers": ["country=DE", "alert_type=~ctr_.*"], "author": "ana", "comment": "deploy"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        pytest.param(f"Bearer {TOKEN}", True, id="right"),
        pytest.param(f"bearer  {TOKEN} ", True, id="case-and-spaces"),
        pytest.param("Bearer other", False, id="wrong"),
        pytest.param(TOKEN, False, id="no-scheme"),
        pytest.param(f"Basic {TOKEN}", False, id="other-scheme"),
        pytest.param(None, False, id="missing"),
        pytest.param("Bearer ", False, id="empty"),
    ],
)
def test_bearer_ok(header: str | None, ok: bool) -> None:
    assert bearer_ok(header, TOKEN) is ok


@pytest.mark.parametrize(
    ("fields", "starts", "ends"),
    [
        pytest.param({"duration": "1h30m"}, NOW, NOW + 5400, id="duration-from-now"),
        pytest.param({"ends_at": "2025-12-01T14:00:00Z"}, NOW, NOW + 7200, id="ends-at-rfc3339"),
        pytest.param(
            {"starts_at": "2025-12-01T13:00:00+01:00", "ends_at": NOW + 60}, NOW, NOW + 60, id="zone-and-epoch"
        ),
        pytest.param({"starts_at": NOW + 600, "duration": "10m"}, NOW + 600, NOW + 1200, id="pending"),
    ],
)
def test_silence_from_request(fields: dict[str, Any], starts: float, ends: float) -> None:
    silence = silence_from_request(body(**fields), NOW)
    assert (silence.starts_at, silence.ends_at, silence.created_by, silence.comment) == (starts, ends, "ana", "deploy")
    assert [str(m) for m in silence.matchers] == ["country=DE", "alert_type=~ctr_.*"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(b"{not json", "not valid JSON", id="bad-json"),
        pytest.param(b"[1, 2]", "expected a JSON object", id="not-an-object"),
        pytest.param(body(duration="1h", colour="red"), "unknown fields ['colour']", id="unknown-field"),
        pytest.param(body(duration="1h", matchers=[]), "at least one matcher", id="no-matchers"),
        pytest.param(body(duration="1h", matchers="country=DE"), "matchers: expected a list", id="matchers-string"),
        pytest.param(body(duration="1h", matchers=["country"]), "expected name=value", id="bad-matcher"),
        pytest.param(body(duration="1h", matchers=["colour=red"]), "unknown label", id="unknown-label"),
        pytest.param(body(duration="1h", matchers=["country=~(DE"]), "bad regex", id="bad-regex"),
        pytest.param(body(duration="soon"), "duration 'soon'", id="bad-duration"),
        pytest.param(body(duration=3600), "duration: expected a string", id="duration-number"),
        pytest.param(body(), "either duration", id="no-end"),
        pytest.param(body(duration="1h", ends_at=NOW + 10), "either duration", id="both-ends"),
        pytest.param(body(ends_at="tomorrow"), "not an RFC 3339 time", id="bad-time"),
        pytest.param(body(ends_at="2025-12-01T14:00:00"), "give a time zone", id="naive-time"),
        pytest.param(body(ends_at=NOW - 1), "end in the past", id="ended"),
        pytest.param(body(starts_at=NOW + 100, ends_at=NOW + 50), "positive duration", id="ends-before-start"),
        pytest.param(body(duration="1h", author=" "), "author: required", id="no-author"),
        pytest.param(body(duration="1h", comment=None), "comment: required", id="no-comment"),
    ],
)
def test_silence_from_request_says_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("(", r"\(")):
        silence_from_request(raw, NOW)


def test_route_create_list_show_expire_with_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    registry, store, clock = CollectorRegistry(), MemorySilenceStore(), [NOW]
    route = SilencesRoute(SecretStr(TOKEN), store, NotifierMetrics(registry), now=lambda: clock[0])

    def call(method: str, path: str = "/api/v1/silences", raw: bytes = b"", **kw: Any) -> tuple[int, Any]:
        response = route(HttpRequest(method, path, headers=kw.get("headers", AUTH), body=raw, query=kw.get("q", {})))
        return response.status, json.loads(response.body) if response.body else None

    status, created = call("POST", raw=body(duration="1h"))
    assert status == 201 and created["state"] == "active" and created["ends_at"] == "2025-12-01T13:00:00Z"
    assert call("GET") == (200, {"silences": [created]})
    assert call("GET", f"/api/v1/silences/{created['id']}") == (200, created)
    assert call("DELETE", f"/api/v1/silences/{created['id']}") == (200, {"id": created["id"], "state": "expired"})
    clock[0] += 1
    assert call("GET") == (200, {"silences": []})
    [listed] = call("GET", q={"all": ["true"]})[1]["silences"]
    assert listed["state"] == "expired"
    assert call("DELETE", f"/api/v1/silences/{created['id']}")[0] == 404  # already ended
    assert call("GET", "/api/v1/silences/nope")[0] == 404
    assert call("POST", raw=b"{oops") == (400, {"error": "body: not valid JSON"})
    assert call("PUT")[0] == 405
    for headers in ({}, {"authorization": "Bearer wrong"}):
        assert call("GET", headers=headers) == (401, {"error": "missing or wrong bearer token"})
        assert call("POST", raw=body(duration="1h"), headers=headers)[0] == 401
    assert len(store.all()) == 1
    assert registry.get_sample_value("adwatch_notifier_http_requests_total", {"route": "silences", "code": "401"}) == 4
    assert TOKEN not in caplog.text
