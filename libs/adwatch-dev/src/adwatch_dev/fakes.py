"""Local fake providers that answer like the real APIs, for this service's and the e2e tests.

Each is a context manager on 127.0.0.1 with ``.url``, a record of what it received
(``.requests`` / ``.messages``, with timestamps) and a queue of programmed failures::

    with FakeSlack() as slack:
        slack.fail_next(429, times=1, retry_after=1)
        ... ADWATCH_NOTIFIER_SLACK_WEBHOOK_URL=slack.webhook_url ...
        slack.wait_for(1)

``hold_next(seconds)`` delays answers (a slow provider, or a window to kill a sender in).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from adwatch_dev.infra import free_port

Body = bytes | str | dict[str, Any] | None


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}
        return json.loads(self.body or b"null")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class _Failure:
    status: int
    retry_after: float | str | None
    body: Body


class FakeHTTPServer:
    """Base: records requests, answers programmed failures first, else :meth:`answer`."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._failures: deque[_Failure] = deque()
        self._holds: deque[float] = deque()
        self.fail_when: Callable[[RecordedRequest], int | None] | None = None
        """A status for the requests it picks (e.g. one alert's), else None: an outage of one alert."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                req = RecordedRequest(
                    "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
                )
                status, headers, body = fake._respond(req)
                payload = _to_bytes(body)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender died while we held its request: that is the point of hold_next

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=type(self).__name__, daemon=True)

    # --- programming ---
    def fail_next(self, status: int, times: int = 1, retry_after: float | str | None = None, body: Body = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After``: seconds, or an HTTP-date text)."""
        with self._lock:
            self._failures.extend(_Failure(status, retry_after, body) for _ in range(times))

    def hold_next(self, seconds: float, times: int = 1) -> None:
        """Record the next requests at once but answer them only after ``seconds``."""
        with self._lock:
            self._holds.extend([seconds] * times)

    # --- inspection ---
    @property
    def accepted(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.ok]

    def wait_for(self, count: int, timeout_s: float = 30.0, accepted: bool = False) -> list[RecordedRequest]:
        """Block until ``count`` requests (or accepted ones) arrived; fail naming the count."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                got = [r for r in self.requests if r.ok or not accepted]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{type(self).__name__}: {len(got)} of {count} requests after {timeout_s}s")
                self._changed.wait(left)

    # --- serving ---
    def _respond(self, req: RecordedRequest) -> tuple[int, dict[str, str], Body]:
        with self._changed:
            failure = self._failures.popleft() if self._failures else None
            picked = self.fail_when(req) if self.fail_when is not None and failure is None else None
            if picked is not None:
                failure = _Failure(picked, None, None)
            hold = self._holds.popleft() if self._holds else 0.0
            if failure is None:
                status, headers, body = self.answer(req)
            else:
                status, headers = failure.status, {"Content-Type": "text/plain"}
                body = failure.body if failure.body is not None else self.failure_body(failure.status)
                if isinstance(body, dict):
                    headers["Content-Type"] = "application/json"
                if isinstance(failure.retry_after, str):
                    headers["Retry-After"] = failure.retry_after
                elif failure.retry_after is not None:
                    headers["Retry-After"] = f"{failure.retry_after:g}"
            req.status = status
            self.requests.append(req)
            self._changed.notify_all()
        if hold:
            time.sleep(hold)
        return status, headers, body

    def answer(self, req: RecordedRequest) -> tuple[int, dict[str, str], Body]:
        return 200, {"Content-Type": "application/json"}, {"ok": True}

    def failure_body(self, status: int) -> Body:
        return {429: "rate_limited", 400: "invalid_payload"}.get(status, "internal_error")

    def __enter__(self) -> FakeHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class SlackMessage:
    """One message as the fake Slack holds it: updated in place by ``chat.update``."""

    channel: str
    ts: str
    text: str
    blocks: list[Any]
    thread_ts: str | None = None
    updates: int = 0


class FakeSlack(FakeHTTPServer):
    """Incoming webhook at ``.webhook_url`` (answers ``ok``), Web API at ``.api_url`` and an
    interaction's ``.response_url`` (answers ``{"ok": true}``).

    The Web API keeps what it was sent (``.messages`` by ``ts``), as Slack does:
    ``chat.postMessage`` takes a channel name or id and answers the channel's id and a new ``ts``
    (with ``thread_ts``: a reply on that thread); ``chat.update`` takes the channel *id* and the
    ``ts`` of a message it holds, else ``channel_not_found`` / ``message_not_found``.
    """

    CHANNEL_ID = "C0ADWATCH"

    def __init__(self) -> None:
        super().__init__()
        self._ts = 0
        self.messages: dict[str, SlackMessage] = {}

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/services/T000/B000/XXXX"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def response_url(self) -> str:
        return f"{self.url}/actions/T000/1234/XXXX"

    def top_level(self) -> list[SlackMessage]:
        """Messages of the channel itself (not thread replies), in order."""
        with self._lock:
            return [m for m in self.messages.values() if m.thread_ts is None]

    def replies(self, ts: str) -> list[SlackMessage]:
        """The thread replies of the message ``ts``, in order."""
        with self._lock:
            return [m for m in self.messages.values() if m.thread_ts == ts]

    def answer(self, req: RecordedRequest) -> tuple[int, dict[str, str], Body]:
        if req.path.startswith("/services/"):
            return 200, {"Content-Type": "text/html"}, "ok"
        if req.path.startswith("/actions/"):
            return 200, {"Content-Type": "application/json"}, {"ok": True}
        method = req.path.rsplit("/", 1)[-1]
        headers = {"Content-Type": "application/json"}
        if not req.headers.get("authorization", "").startswith("Bearer "):
            return 200, headers, {"ok": False, "error": "not_authed"}
        data = req.json() or {}
        blocks = data.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if method == "chat.postMessage":
            thread_ts = data.get("thread_ts") or None
            if thread_ts is not None and thread_ts not in self.messages:
                return 200, headers, {"ok": False, "error": "thread_not_found"}
            self._ts += 1
            ts = f"{1700000000 + self._ts}.000100"
            self.messages[ts] = SlackMessage(self.CHANNEL_ID, ts, str(data.get("text", "")), blocks, thread_ts)
            return 200, headers, {"ok": True, "channel": self.CHANNEL_ID, "ts": ts}
        if method == "chat.update":
            if data.get("channel") != self.CHANNEL_ID:  # an id, never a name (#ads)
                return 200, headers, {"ok": False, "error": "channel_not_found"}
            held = self.messages.get(str(data.get("ts")))
            if held is None:
                return 200, headers, {"ok": False, "error": "message_not_found"}
            held.text, held.blocks, held.updates = str(data.get("text", held.text)), blocks, held.updates + 1
            return 200, headers, {"ok": True, "channel": held.channel, "ts": held.ts, "text": held.text}
        return 200, headers, {"ok": False, "error": "unknown_method"}

    def failure_body(self, status: int) -> Body:
        if status == 429:
            return {"ok": False, "error": "ratelimited"}
        return super().failure_body(status)


class FakePagerDuty(FakeHTTPServer):
    """Events API v2 at ``.url`` + ``/v2/enqueue``: 202 JSON, 400 for invalid events."""

    def answer(self, req: RecordedRequest) -> tuple[int, dict[str, str], Body]:
        headers = {"Content-Type": "application/json"}
        try:
            event = req.json()
        except ValueError:
            event = None
        if req.path != "/v2/enqueue":
            return 404, headers, {"status": "not found"}
        valid = (
            isinstance(event, dict)
            and event.get("routing_key")
            and event.get("event_action") in ("trigger", "acknowledge", "resolve")
            and (event["event_action"] != "trigger" or isinstance(event.get("payload"), dict))
        )
        if not valid:
            return (
                400,
                headers,
                {"status": "invalid event", "message": "Event object is invalid", "errors": ["invalid"]},
            )
        assert isinstance(event, dict)
        return 202, headers, {"status": "success", "message": "Event processed", "dedup_key": event.get("dedup_key")}

    def failure_body(self, status: int) -> Body:
        return {
            "status": "error",
            "message": {429: "Too Many Requests", 400: "Event object is invalid"}.get(status, "error"),
        }


class FakeWebhook(FakeHTTPServer):
    """Any generic JSON receiver: 200 ``{"ok": true}``."""


# --- SMTP ------------------------------------------------------------------------------------
class SmtpSink:
    """aiosmtpd on 127.0.0.1 recording parsed messages; optional STARTTLS and AUTH.

    ``fail_next(451)`` answers the next DATA with a transient error, ``fail_next(554)`` permanent.
    """

    def __init__(
        self, tls_context: ssl.SSLContext | None = None, user: str = "", password: str = "", require_tls: bool = False
    ) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str], float]] = []
        self._failures: deque[int] = deque()
        self._lock = threading.Condition()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink._lock:
                    if sink._failures:
                        code = sink._failures.popleft()
                        return f"{code} {'try again later' if code < 500 else 'rejected'}"
                    raw = envelope.original_content or envelope.content
                    msg = email.message_from_bytes(raw, policy=email.policy.default)
                    sink.messages.append(msg)  # type: ignore[arg-type]
                    sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), time.time()))
                    sink._lock.notify_all()
                return "250 OK"

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
            return AuthResult(success=ok)

        kwargs: dict[str, Any] = {"auth_require_tls": bool(tls_context)}
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=require_tls)
        if user:
            kwargs.update(authenticator=authenticator, auth_required=True)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.controller = Controller(Handler(), hostname=self.host, port=self.port, **kwargs)

    def fail_next(self, code: int, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([code] * times)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"SmtpSink: {len(self.messages)} of {count} messages after {timeout_s}s")
                self._lock.wait(left)
            return list(self.messages)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def self_signed_cert(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate for STARTTLS tests (needs ``cryptography``): (cert, key) paths."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def _to_bytes(body: Body) -> bytes:
    if body is None:
        return b""
    if isinstance(body, dict):
        return json.dumps(body).encode()
    return body.encode() if isinstance(body, str) else body


__all__ = [
    "FakeHTTPServer",
    "FakePagerDuty",
    "FakeSlack",
    "FakeWebhook",
    "RecordedRequest",
    "SlackMessage",
    "SmtpSink",
    "self_signed_cert",
    "server_tls_context",
]
