"""The detector's command line and its stop loop, with a fake query (no Spark)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from adwatch_detector.__main__ import main
from adwatch_detector.runner import wait_then_stop


@dataclass
class FakeQuery:
    """A StreamingQuery: ends (or fails) after ``runs_for`` waits; a batch is running for ``busy`` polls."""

    runs_for: int | None = None
    error: str | None = None
    busy: int = 0
    active: bool = True
    calls: list[str] = field(default_factory=list)

    @property
    def isActive(self) -> bool:
        return self.active

    @property
    def status(self) -> dict[str, Any]:
        self.busy -= 1
        return {"isTriggerActive": self.busy >= 0}

    def awaitTermination(self, timeout: int | None = None) -> bool:
        self.calls.append("await")
        if self.runs_for is not None and len(self.calls) >= self.runs_for:
            self.active = False
            return True
        return False

    def exception(self) -> str | None:
        return self.error

    def stop(self) -> None:
        self.calls.append("stop")
        self.active = False


def _stopped() -> threading.Event:
    stop = threading.Event()
    stop.set()
    return stop


@pytest.mark.parametrize(
    ("query", "stop", "code", "stopped"),
    [
        pytest.param(FakeQuery(busy=3), _stopped(), 0, True, id="signal-lets-the-running-batch-finish"),
        pytest.param(FakeQuery(runs_for=2), threading.Event(), 0, False, id="query-ended-by-itself"),
        pytest.param(FakeQuery(runs_for=1, error="boom"), threading.Event(), 1, False, id="query-failed"),
    ],
)
def test_the_stop_loop(query: FakeQuery, stop: threading.Event, code: int, stopped: bool) -> None:
    assert wait_then_stop(query, stop, flush_timeout_s=5, poll_s=0) == code
    assert ("stop" in query.calls) is stopped
    assert not stopped or query.busy < 0, "stopped only once the running micro-batch had finished"


def test_a_batch_that_does_not_finish_is_stopped_at_the_flush_timeout() -> None:
    now = iter(range(100))
    query = FakeQuery(busy=1000)
    assert wait_then_stop(query, _stopped(), flush_timeout_s=3, poll_s=0, clock=lambda: float(next(now))) == 0
    assert query.calls == ["stop"] and query.busy > 900


@pytest.mark.parametrize(
    ("argv", "code", "out"),
    [
        pytest.param(["--help"], 0, "usage: adwatch-detector [run|backtest]", id="help"),
        pytest.param(["bogus"], 2, "unknown command 'bogus'", id="unknown-command"),
    ],
)
def test_one_command_shape(argv: list[str], code: int, out: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == code
    captured = capsys.readouterr()
    assert out in captured.out + captured.err


@pytest.mark.parametrize("argv", [["run", "--nope"], ["--nope"]], ids=["run", "default-command"])
def test_run_rejects_unknown_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and "adwatch-detector run" in capsys.readouterr().err


def test_a_checkpoint_of_another_state_schema_fails_with_what_to_do() -> None:
    """A version-1 checkpoint (grouped by country, ad_format) is refused by Spark; the log says how to upgrade."""
    from adwatch_detector.runner import failure_hint

    hint = failure_hint("[STATE_STORE_KEY_SCHEMA_NOT_COMPATIBLE] Provided key schema does not match existing state key")
    assert hint is not None and "ADWATCH_DETECTOR_CHECKPOINT_DIR" in hint
    assert failure_hint("Connection refused") is None
