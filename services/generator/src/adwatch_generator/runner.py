"""The three ways to run the generator: live, backfill and drill (the I/O around the model)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

from adwatch.contracts import TOPIC_PARTITIONS
from adwatch_generator.events import EventBatch
from adwatch_generator.metrics import GeneratorMetrics
from adwatch_generator.progress import Progress
from adwatch_generator.scenarios import (
    DEFAULT_MAGNITUDE,
    SCENARIO_KINDS,
    Scenario,
    ScenarioError,
    ScenarioKind,
    apply_control,
    make_scenario,
    parse_duration_ms,
    truth_record,
)
from adwatch_generator.settings import GeneratorSettings
from adwatch_generator.sink import FileSink, KafkaSink, Sink, TruthWatcher, TruthWriter, wait_for_kafka
from adwatch_generator.stream import EventStream
from adwatch_generator.traffic import TrafficModel

logger = logging.getLogger(__name__)

LIVE_STEP_MS = 1000


@dataclass
class Outputs:
    """The event sink, the truth writer and, with Kafka, the producer behind both."""

    sink: Sink
    truth: TruthWriter
    kafka: KafkaSink | None = None


@contextmanager
def open_outputs(
    settings: GeneratorSettings,
    bootstrap: str,
    stop: threading.Event,
    metrics: GeneratorMetrics,
    ready: threading.Event | None = None,
) -> Iterator[Outputs | None]:
    """Kafka (topics ensured, retrying while the broker is down) or a file; None if stopped first."""
    if settings.output != "kafka":
        file_sink = FileSink(settings.output, metrics)
        try:
            yield Outputs(file_sink, TruthWriter(metrics, settings.truth_file))
        finally:
            file_sink.close()
        return
    topics = {
        settings.topic: TOPIC_PARTITIONS.get(settings.topic, 6),
        settings.truth_topic: TOPIC_PARTITIONS.get(settings.truth_topic, 1),
    }
    if not wait_for_kafka(bootstrap, topics, stop, metrics):
        yield None
        return
    kafka = KafkaSink(
        bootstrap, settings.topic, metrics, trace_sample=settings.trace_sample, seed=settings.seed, stop=stop
    )
    if ready is not None:
        ready.set()
    try:
        yield Outputs(kafka, TruthWriter(metrics, settings.truth_file, kafka, settings.truth_topic), kafka)
    finally:
        kafka.close()


def _send(outputs: Outputs, batch: EventBatch, progress: Progress, fraction: float | None = None) -> None:
    outputs.sink.send(batch)
    progress.add(len(batch), fraction)


def run_backfill(
    settings: GeneratorSettings,
    outputs: Outputs,
    start_ms: int,
    end_ms: int,
    scenarios: Sequence[Scenario],
    stop: threading.Event,
    metrics: GeneratorMetrics,
    progress_out: TextIO | None,
) -> int:
    """Event time ``[start_ms, end_ms)`` as fast as possible; returns the number of events."""
    model = TrafficModel(seed=settings.seed, rate=settings.effective_rate)
    outputs.truth.write(truth_record(s) for s in scenarios)
    progress = Progress(progress_out, metrics, min(settings.progress_interval_s, 1.0))
    span = max(end_ms - start_ms, 1)
    for batch in model.generate(start_ms, end_ms, scenarios):
        _send(outputs, batch, progress, (int(batch.times_ms[-1]) + 1 - start_ms) / span)
        if stop.is_set():
            at_ms = int(batch.times_ms[-1])
            logger.info("stopped early at event time %d", at_ms, extra={"event_time_ms": at_ms})
            break
    else:
        progress.add(0, 1.0)
    progress.close()
    return progress.total


def run_live(
    settings: GeneratorSettings,
    outputs: Outputs,
    start_ms: int,
    scenarios: Sequence[Scenario],
    stop: threading.Event,
    metrics: GeneratorMetrics,
    progress_out: TextIO | None,
    *,
    duration_s: float | None = None,
    watcher: TruthWatcher | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Real time from ``start_ms``, after an optional warm-up backfill; returns the number of events."""
    model = TrafficModel(seed=settings.seed, rate=settings.effective_rate)
    outputs.truth.write(truth_record(s) for s in scenarios)
    warmup_ms = int(settings.warmup_minutes * 60_000)
    stream = model.stream(start_ms - warmup_ms, scenarios)
    total = 0
    if warmup_ms:
        minutes = settings.warmup_minutes
        logger.info("warm-up: backfilling %.1f minutes of event time", minutes, extra={"warmup_minutes": minutes})
        bar = Progress(progress_out, metrics, min(settings.progress_interval_s, 1.0))
        while stream.cursor_ms < start_ms and not stop.is_set():
            batch = stream.advance(min(stream.next_boundary(), start_ms))
            _send(outputs, batch, bar, 1.0 - (start_ms - stream.cursor_ms) / warmup_ms)
        bar.close()
        total += bar.total
    stream.step_ms = LIVE_STEP_MS
    end_ms = start_ms + int(duration_s * 1000) if duration_s is not None else None
    progress = Progress(progress_out, metrics, settings.progress_interval_s)
    rate, output = settings.effective_rate, settings.output
    logger.info("live at %.0f events/s (daily mean) to %s", rate, output, extra={"rate": rate, "output": output})
    while not stop.is_set():
        target = stream.next_boundary() if end_ms is None else min(stream.next_boundary(), end_ms)
        delay = target / 1000.0 - clock()
        if delay > 0 and stop.wait(delay):
            break
        if watcher is not None:
            _apply_control(stream, watcher, outputs, target)
        batch = stream.advance(target)
        _send(outputs, batch, progress)
        metrics.active_scenarios.set(len(stream.active(target)))
        metrics.event_time_lag_seconds.set(max(0.0, clock() - target / 1000.0))
        if end_ms is not None and target >= end_ms:
            break
    total += progress.total
    logger.info("live stopped after %s events", f"{total:,}", extra={"events": total})
    return total


def _apply_control(stream: EventStream, watcher: TruthWatcher, outputs: Outputs, now_ms: int) -> None:
    records = watcher.poll()
    if not records:
        return
    current = {s.scenario_id: s for s in stream.scenarios}
    updates, corrections = apply_control(current, records, now_ms)
    for scenario in updates:
        if stream.upsert(scenario):
            logger.info(
                "scenario %s: %s on %s until %d (x%g)",
                scenario.scenario_id,
                scenario.kind,
                ",".join(scenario.segments),
                scenario.end_ms,
                scenario.magnitude,
                extra={
                    "scenario_id": scenario.scenario_id,
                    "scenario": scenario.kind,
                    "segments": list(scenario.segments),
                    "end_ms": scenario.end_ms,
                    "magnitude": scenario.magnitude,
                },
            )
    fresh = [truth_record(s) for s in updates if s not in corrections]
    outputs.truth.write(fresh, to_kafka=False)  # already on the topic; keep the local file complete
    outputs.truth.write(truth_record(s) for s in corrections)


# --- drill ----------------------------------------------------------------------------------
MENU_KINDS: tuple[ScenarioKind, ...] = (*SCENARIO_KINDS[:6], "clean")
MENU_TITLES = {
    "ctr_drop": "CTR drop",
    "ctr_spike": "CTR spike (bot clicks)",
    "traffic_spike": "Traffic spike",
    "ecpm_drop": "eCPM drop",
    "click_flood_without_impressions": "Click flood without impressions",
    "traffic_drop": "Traffic drop (outage)",
    "clean": "Clean: stop the running scenarios",
}


def menu_text() -> str:
    lines = ["Inject an anomaly into the running generator:"]
    for number, kind in enumerate(MENU_KINDS, start=1):
        default = f" (default x{DEFAULT_MAGNITUDE[kind]:g})" if kind != "clean" else ""
        lines.append(f"  {number}) {MENU_TITLES[kind]}{default}")
    lines.append("  q) quit")
    return "\n".join(lines)


def choice_kind(choice: str) -> ScenarioKind:
    """Menu number (1-7) or a scenario type name -> the scenario type."""
    choice = choice.strip()
    if choice.isdigit() and 1 <= int(choice) <= len(MENU_KINDS):
        return MENU_KINDS[int(choice) - 1]
    if choice in SCENARIO_KINDS:
        return choice
    raise ScenarioError(f"unknown choice {choice!r}: pick 1-{len(MENU_KINDS)} or a scenario type")


def interactive_drill(
    inject: Callable[[Scenario], None],
    ask: Callable[[str], str],
    say: Callable[[str], None],
    clock: Callable[[], float],
) -> int:
    """The menu loop: pick a number, answer three questions (Enter keeps the default)."""
    while True:
        say(menu_text())
        answer = ask("choice> ").strip().lower()
        if answer in ("q", "quit", "exit"):
            return 0
        try:
            kind = choice_kind(answer)
            default_segments = "*" if kind == "clean" else "US|banner"
            segments = ask(f"segments [{default_segments}]> ").strip() or default_segments
            duration = "1s" if kind == "clean" else (ask("duration [5m]> ").strip() or "5m")
            magnitude_text = "" if kind == "clean" else ask(f"magnitude [{DEFAULT_MAGNITUDE[kind]:g}]> ").strip()
            scenario = make_scenario(
                kind,
                segments=segments,
                start_ms=int(clock() * 1000),
                duration_ms=parse_duration_ms(duration),
                magnitude=float(magnitude_text) if magnitude_text else None,
            )
        except (ScenarioError, ValueError) as exc:
            say(f"not injected: {exc}")
            continue
        inject(scenario)
        seconds = (scenario.end_ms - scenario.start_ms) / 1000
        say(
            f"injected {scenario.scenario_id}: {scenario.kind} on {','.join(scenario.segments)} "
            f"for {seconds:.0f}s (x{scenario.magnitude:g})"
        )


def run_drill(
    settings: GeneratorSettings,
    bootstrap: str,
    scenarios: Sequence[Scenario],
    stop: threading.Event,
    metrics: GeneratorMetrics,
    *,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.time,
) -> int:
    """Publish scenarios to the truth topic, where every live generator picks them up."""
    topics = {settings.truth_topic: TOPIC_PARTITIONS.get(settings.truth_topic, 1)}
    if not wait_for_kafka(bootstrap, topics, stop, metrics):
        return 1
    kafka = KafkaSink(bootstrap, settings.truth_topic, metrics, stop=stop)
    truth = TruthWriter(metrics, settings.truth_file, kafka, settings.truth_topic)

    def inject(scenario: Scenario) -> None:
        truth.write([truth_record(scenario)])
        if kafka.flush(10.0):
            say("warning: the truth record was not confirmed by the broker")

    try:
        if scenarios:
            for scenario in scenarios:
                inject(scenario)
                say(f"injected {scenario.scenario_id}: {scenario.kind} on {','.join(scenario.segments)}")
            return 0
        try:
            return interactive_drill(inject, ask, say, clock)
        except (EOFError, KeyboardInterrupt):
            say("")
            return 0
    finally:
        kafka.close()
