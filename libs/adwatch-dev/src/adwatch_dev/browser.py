"""Headless Chromium driven over the DevTools protocol, for tests of the pages adwatch writes.

Debian's ``chromium`` (``scripts/install_chromium.sh``, called by ``make test``) starts with
a fresh profile and the flags this machine needs (no network: no background services), its
DevTools endpoint on 127.0.0.1 on a port Chromium picks; the page's console errors and
uncaught exceptions are collected, JavaScript is evaluated and screenshots are taken. The
browser is stopped by PID.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adwatch_dev.infra import InfraError, ManagedProcess, poll_until, spawn

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Page:
    """One tab: ``errors`` collects console errors and uncaught exceptions as text."""

    ws: Any
    errors: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def call(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events meanwhile are recorded)."""
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = self._receive(deadline)
            if msg is not None and msg.get("id") == ident:
                if "error" in msg:
                    raise InfraError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
        raise InfraError(f"{method}: no answer in {timeout_s:.0f}s")

    def _receive(self, deadline: float) -> dict[str, Any] | None:
        self.ws.settimeout(max(0.05, deadline - time.monotonic()))
        msg: dict[str, Any] = json.loads(self.ws.recv())
        if "method" in msg:
            self.events.append(msg)
            self._note(msg)
        return msg

    def _note(self, msg: dict[str, Any]) -> None:
        params = msg.get("params", {})
        if msg["method"] == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif msg["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif msg["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(params["entry"].get("text", "log error"))

    def wait_event(self, method: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.events:
                if event["method"] == method:
                    self.events.remove(event)
                    return event
            self._receive(deadline)
        raise InfraError(f"no {method} in {timeout_s:.0f}s")

    def open(self, url: str, width: int = 1280, height: int = 900, timeout_s: float = 60.0) -> None:
        """Load ``url`` and wait for its load event."""
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout_s)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise InfraError(f"evaluate failed: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path, full_page: bool = False, max_height: int = 4000) -> Path:
        """A PNG of the viewport (or of the page, up to ``max_height`` pixels)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            width, height = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params |= {
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(height, max_height), "scale": 1},
            }
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


class Chromium:
    """``with Chromium() as browser: page = browser.page()``: a headless browser for one test."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or chromium_binary()
        if found is None:
            raise InfraError("no chromium: run scripts/install_chromium.sh (Debian's chromium)")
        self.binary = found
        self._tmp = tempfile.TemporaryDirectory(prefix="adwatch-chromium-")
        self.profile = Path(self._tmp.name)
        self.proc: ManagedProcess | None = None
        self.port = 0
        self._sockets: list[Any] = []

    def __enter__(self) -> Chromium:
        argv = [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = spawn("chromium", argv, self.profile.parent / f"{self.profile.name}.log")
        active = self.profile / "DevToolsActivePort"
        self.port = poll_until(lambda: int(active.read_text().split()[0]), "Chromium's DevTools port", timeout_s=60)
        return self

    def page(self) -> Page:
        """The first tab, attached over its DevTools WebSocket."""
        import websocket

        def targets() -> list[dict[str, Any]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as resp:
                found: list[dict[str, Any]] = json.loads(resp.read())
                return [t for t in found if t.get("type") == "page"]

        target = poll_until(targets, "a Chromium tab", timeout_s=30)[0]
        ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self._sockets.append(ws)
        return Page(ws)

    def __exit__(self, *exc: object) -> None:
        for ws in self._sockets:
            ws.close()
        if self.proc is not None:
            self.proc.stop()
        log = self.profile.parent / f"{self.profile.name}.log"
        log.unlink(missing_ok=True)
        self._tmp.cleanup()
