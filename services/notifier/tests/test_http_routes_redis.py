"""The notifier's HTTP routes over real HTTP on 127.0.0.1 with the real Redis: Slack clicks and the silence API."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from adwatch.contracts import Alert
from adwatch.storage import make_redis
from adwatch.telemetry import OpsServer
from adwatch_dev.fakes import FakeSlack
from adwatch_dev.testing import unique
from adwatch_notifier import NotifierSettings
from adwatch_notifier.api import mount_routes
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.silences import RedisSilenceStore
from adwatch_notifier.slack_actions import ACK_ACTION, SILENCE_ACTION, RedisAckStore, signature

SECRET, TOKEN, FP = "slack-signing-secret-for-tests", "api-token-for-tests", "ctr_drop:ad_format=banner,country=US"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _server(settings: NotifierSettings, redis_url: str, registry: CollectorRegistry) -> OpsServer:
    server = OpsServer(0, registry=registry, host="127.0.0.1").start()
    mount_routes(server.mount, settings, make_redis(redis_url), NotifierMetrics(registry), time.time)
    return server


def _click(action_id: str, response_url: str) -> bytes:
    payload = {
        "type": "block_actions",
        "user": {"id": "U0ONCALL", "username": "ana"},
        "actions": [{"action_id": action_id, "block_id": "adwatch_actions", "value": FP, "type": "button"}],
        "response_url": response_url,
        "message": {"text": "CTR dropped", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]},
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def _post(
    base: str, body: bytes, secret: str = SECRET, age_s: float = 0, signed: bool = True, sent: bytes | None = None
) -> httpx.Response:
    """Sign ``body`` as Slack would (with ``secret``, ``age_s`` ago) and send it (or ``sent`` instead)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signed:
        ts = str(int(time.time() - age_s))
        headers |= {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature(secret, ts, body)}
    return httpx.post(base + "/slack/actions", content=body if sent is None else sent, headers=headers, timeout=10)


def test_slack_clicks_over_http_with_redis(redis_url: str, slack: FakeSlack) -> None:
    registry, prefix = CollectorRegistry(), unique("notifier-http")
    settings = NotifierSettings(redis_prefix=prefix, slack_signing_secret=SecretStr(SECRET))
    silences = RedisSilenceStore(make_redis(redis_url), prefix)
    server = _server(settings, redis_url, registry)
    try:
        base = f"http://127.0.0.1:{server.port}"
        click = _click(SILENCE_ACTION, slack.response_url)
        for refused in (
            _post(base, click, secret="not-the-secret"),
            _post(base, click, sent=click.replace(b"U0ONCALL", b"U0INTRUDER")),  # tampered after signing
            _post(base, click, age_s=400),
            _post(base, click, signed=False),
        ):
            assert refused.status_code == 401, refused.text
            assert SECRET not in refused.text
        assert silences.all() == [] and slack.requests == []
        assert registry.get_sample_value("adwatch_notifier_slack_rejected_total", {"reason": "bad_signature"}) == 2
        assert registry.get_sample_value("adwatch_notifier_slack_rejected_total", {"reason": "stale"}) == 1
        assert registry.get_sample_value("adwatch_notifier_slack_rejected_total", {"reason": "unsigned"}) == 1

        accepted = _post(base, click)
        assert accepted.status_code == 200
        [silence] = silences.all()
        assert [str(m) for m in silence.matchers] == [f"fingerprint={FP}"] and silence.created_by == "slack:ana"
        assert 3590 < silence.ends_at - time.time() <= 3600
        [replaced] = slack.wait_for(1)
        assert replaced.path.startswith("/actions/") and replaced.json()["replace_original"] is True
        assert "Silenced by <@U0ONCALL>" in json.dumps(replaced.json())

        assert _post(base, _click(ACK_ACTION, slack.response_url)).status_code == 200
        ack = RedisAckStore(make_redis(redis_url), prefix).get(FP)
        assert ack is not None and (ack.user_id, ack.user_name) == ("U0ONCALL", "ana")
        assert "Acknowledged by <@U0ONCALL>" in json.dumps(slack.wait_for(2)[1].json())
        assert registry.get_sample_value("adwatch_notifier_slack_actions_total", {"action": "acknowledge"}) == 1
        assert httpx.get(base + "/api/v1/silences").status_code == 404  # no API token: the API is off
    finally:
        server.stop()


def test_silence_api_over_http_with_redis(redis_url: str) -> None:
    registry, prefix = CollectorRegistry(), unique("notifier-http")
    settings = NotifierSettings(redis_prefix=prefix, api_token=SecretStr(TOKEN))
    server = _server(settings, redis_url, registry)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        api = f"http://127.0.0.1:{server.port}/api/v1/silences"
        new: dict[str, Any] = {"matchers": ["country=DE"], "duration": "2h", "author": "ana", "comment": "deploy"}
        assert httpx.post(api, json=new).status_code == 401
        assert httpx.post(api, json=new, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(api).status_code == 401
        bad = httpx.post(api, content=b"{not json", headers=auth)
        assert bad.status_code == 400 and bad.json() == {"error": "body: not valid JSON"}
        assert httpx.post(api, json={**new, "matchers": ["country=~("]}, headers=auth).status_code == 400
        created = httpx.post(api, json=new, headers=auth)
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        [stored] = RedisSilenceStore(make_redis(redis_url), prefix).all()  # what every replica reads
        assert stored.id == sid and stored.created_by == "ana"
        assert [s["id"] for s in httpx.get(api, headers=auth).json()["silences"]] == [sid]
        assert httpx.delete(f"{api}/{sid}").status_code == 401
        assert httpx.delete(f"{api}/{sid}", headers=auth).json() == {"id": sid, "state": "expired"}
        assert httpx.delete(f"{api}/{sid}", headers=auth).status_code == 404
        assert httpx.get(api, headers=auth).json() == {"silences": []}
        assert httpx.post(f"http://127.0.0.1:{server.port}/slack/actions").status_code == 404  # no signing secret
        assert TOKEN not in httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
    finally:
        server.stop()


def test_run_mounts_the_configured_routes_on_the_ops_server(harness: Any, alert_factory: Callable[..., Alert]) -> None:
    """``run(mount=...)`` (what ``adwatch-notifier run`` passes): the API answers while the notifier runs."""
    server = OpsServer(0, host="127.0.0.1").start()
    answers: dict[str, int] = {}

    def on_ready(_stats: Any) -> None:
        api = f"http://127.0.0.1:{server.port}/api/v1/silences"
        answers["api"] = httpx.get(api, headers={"Authorization": f"Bearer {TOKEN}"}).status_code
        answers["slack"] = httpx.post(f"http://127.0.0.1:{server.port}/slack/actions").status_code

    try:
        harness.publish(alert_factory())
        settings = harness.settings("console", api_token=SecretStr(TOKEN), slack_signing_secret=SecretStr(SECRET))
        harness.run_once(
            settings,
            1,
            stream=io.StringIO(),
            metrics=NotifierMetrics(CollectorRegistry()),
            mount=server.mount,
            ready_when=lambda _check: on_ready(None),  # the routes are mounted by then, the loop not yet started
        )
    finally:
        server.stop()
    assert answers == {"api": 200, "slack": 401}
