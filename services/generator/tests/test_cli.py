"""The command line: bad input exits 2 with a clear message; file/stdout output; the drill menu."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from adwatch.contracts import AdEvent, TruthRecord, decode, segment_key
from adwatch_generator.__main__ import main
from adwatch_generator.metrics import GeneratorMetrics
from adwatch_generator.progress import Progress, format_bar, format_progress
from adwatch_generator.runner import interactive_drill, menu_text
from adwatch_generator.scenarios import Scenario
from adwatch_generator.traffic import TrafficModel

START, END = "2025-01-15T17:00:00Z", "2025-01-15T17:01:00Z"
START_MS = 1_736_960_400_000


def run(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--rate", "-5"], "ADWATCH_GENERATOR_RATE", id="negative-rate"),
        pytest.param(["--rate", "fast"], "invalid float value", id="rate-not-a-number"),
        pytest.param(["--trace-sample", "2"], "ADWATCH_GENERATOR_TRACE_SAMPLE", id="sample-above-one"),
        pytest.param(["--scenario", "ctr_drop:XX|banner"], "unknown segment", id="unknown-segment"),
        pytest.param(["--scenario", "meltdown"], "unknown scenario type", id="unknown-scenario"),
        pytest.param(["--scenario", "ctr_drop:US|banner:0:5m:2"], "below 1", id="bad-magnitude"),
        pytest.param(["live", "--duration", "forever"], "bad duration", id="bad-duration"),
        pytest.param(["backfill", "--start", END, "--end", START], "--end must be after --start", id="range"),
        pytest.param(["backfill", "--hours", "-1"], "--hours must be positive", id="hours"),
        pytest.param(["live", "--clock", "teatime"], "--clock: bad duration", id="bad-clock"),
        pytest.param(["--no-such-flag"], "unrecognized arguments", id="unknown-flag"),
        pytest.param(["drill", "--choice", "9"], "unknown choice", id="drill-choice"),
    ],
)
def test_bad_flags_exit_2_with_a_clear_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(args) == 2
    assert message in capsys.readouterr().err


def test_bad_environment_value_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ADWATCH_GENERATOR_SEED", "lucky")
    assert run(["segments"]) == 2
    assert "ADWATCH_GENERATOR_SEED" in capsys.readouterr().err


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADWATCH_GENERATOR_RATE", "1")
    out = tmp_path / "events.jsonl"
    assert run(["backfill", "--start", START, "--end", END, "--rate", "300", "-o", str(out), "-q"]) == 0
    expected = sum(len(b) for b in TrafficModel(seed=42, rate=300).generate(START_MS, START_MS + 60_000))
    assert len(out.read_bytes().splitlines()) == expected > 200


def _served(name: str, labels: dict[str, str]) -> float:
    """A sample of the process-wide registry, the one the entry point's ops server serves."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_backfill_writes_jsonl_and_ground_truth_files(tmp_path: Path) -> None:
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    args = [
        *("backfill", "--start", START, "--end", END, "--seed", "3", "-q"),
        *("-o", str(out), "--truth-file", str(truth)),
        *("--scenario", "click_flood_without_impressions:US|*:10s:30s:2", "--scenario", "clean:DE|banner"),
    ]
    clicks = ("adwatch_generator_events_produced_total", {"event_type": "click"})
    floods = ("adwatch_generator_truth_records_total", {"scenario": "click_flood_without_impressions"})
    clicks_before, floods_before = _served(*clicks), _served(*floods)
    assert run(args) == 0
    events = [decode(line, AdEvent) for line in out.read_bytes().splitlines()]
    assert _served(*clicks) - clicks_before == sum(e.event_type == "click" for e in events)
    assert _served(*floods) - floods_before == 1
    orphans = [e for e in events if e.event_type == "click" and e.impression_id is None]
    assert orphans and all(START_MS + 10_000 <= e.event_time_ms < START_MS + 40_000 for e in orphans)
    records = [decode(line, TruthRecord) for line in truth.read_bytes().splitlines()]
    assert [(r.scenario, r.expected_alert_type) for r in records] == [
        ("click_flood_without_impressions", "click_without_impression"),
        ("clean", None),
    ]
    assert records[0].start_ms == START_MS + 10_000 and records[0].end_ms == START_MS + 40_000


def test_live_clock_pins_event_time_and_scenarios_to_another_time_of_day(tmp_path: Path) -> None:
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    args = [*("live", "--clock", START, "--duration", "2s", "--warmup-minutes", "1", "-q", "-o", str(out))]
    args += ["--truth-file", str(truth), "--scenario", "ctr_drop:US|banner:1s:1m"]
    assert run(args) == 0
    times = [decode(line, AdEvent).event_time_ms for line in out.read_bytes().splitlines()]
    assert times and min(times) >= START_MS - 60_000 and max(times) <= START_MS + 2_000
    (record,) = [decode(line, TruthRecord) for line in truth.read_bytes().splitlines()]
    assert record.start_ms == START_MS + 1_000  # offsets count from the pinned start


def test_stdout_output_and_bad_flag_through_the_console_script() -> None:
    python = sys.executable
    argv = [python, "-m", "adwatch_generator", "backfill", "--start", START, "--end", "2025-01-15T17:00:10Z"]
    ok = subprocess.run([*argv, "--output", "-", "--rate", "100"], capture_output=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines and all(decode(line, AdEvent) for line in lines)
    assert b"100.0%" in ok.stderr  # the progress bar went to stderr, not into the data
    bad = subprocess.run(
        [python, "-m", "adwatch_generator", "live", "--rate", "nope"], capture_output=True, timeout=60, check=False
    )
    assert bad.returncode == 2 and b"invalid float value" in bad.stderr


def test_progress_line_and_bar(metrics: GeneratorMetrics, registry: CollectorRegistry) -> None:
    assert format_progress(1000, 83.4, 5000) == "Sent 1,000 events | Rate: 83 events/sec | Total 5,000"
    assert format_bar(0.5, 1234, 99.0, width=10) == "[#####.....]  50.0% | 1,234 events | 99 events/sec"
    ticks = iter([0.0, 1.0, 2.0, 6.0])
    out = io.StringIO()
    progress = Progress(out, metrics, interval_s=5.0, clock=lambda: next(ticks))
    progress.add(400)
    progress.add(100)
    progress.add(500)
    assert out.getvalue() == "Sent 1,000 events | Rate: 167 events/sec | Total 1,000\n"
    assert registry.get_sample_value("adwatch_generator_rate_events_per_second") == 1000 / 6


def test_drill_menu_is_scriptable_through_its_prompts() -> None:
    answers = iter(["1", "DE|native", "2m", "", "7", "", "8", "q"])
    injected: list[Scenario] = []
    said: list[str] = []
    code = interactive_drill(injected.append, lambda _prompt: next(answers), said.append, clock=lambda: 1000.0)
    assert code == 0
    assert [(s.kind, s.segments[:1], s.magnitude) for s in injected] == [
        ("ctr_drop", (segment_key("DE", "native"),), 0.4),
        ("clean", (segment_key("US", "banner"),), 1.0),
    ]
    assert injected[0].start_ms == 1_000_000 and injected[0].end_ms == 1_120_000
    assert len(injected[1].segments) == 64
    assert any("unknown choice" in line for line in said)
    assert "1) CTR drop" in menu_text() and "6) Traffic drop" in menu_text() and "7) Clean" in menu_text()


@pytest.mark.parametrize(
    ("args", "code", "out"),
    [
        pytest.param(["--help"], 0, "usage: adwatch-generator [live|backfill|drill|segments]", id="help"),
        pytest.param(["bogus"], 2, "unknown command 'bogus'", id="unknown-command"),
        pytest.param(["live", "--help"], 0, "--warmup-minutes", id="live-help"),
        pytest.param(["backfill", "--help"], 0, "--hours", id="backfill-help"),
        pytest.param(["drill", "--help"], 0, "--choice", id="drill-help"),
        pytest.param(["segments", "--rate", "60"], 0, "events/min", id="segments"),
    ],
)
def test_the_command_shape_of_every_service(
    args: list[str], code: int, out: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(args) == code
    captured = capsys.readouterr()
    assert out in captured.out + captured.err
