"""``adwatch-generator``: live | backfill | drill | segments. Flags override ``ADWATCH_GENERATOR_*``.

Exit codes: 0 done, 1 stopped before Kafka was reachable, 2 bad flags or settings.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Sequence

from adwatch.config import load_or_exit
from adwatch.service import Service, service
from adwatch_generator.metrics import GeneratorMetrics
from adwatch_generator.runner import choice_kind, open_outputs, run_backfill, run_drill, run_live
from adwatch_generator.scenarios import (
    SCENARIO_KINDS,
    Scenario,
    ScenarioError,
    make_scenario,
    parse_duration_ms,
    parse_scenario,
    parse_time_ms,
)
from adwatch_generator.settings import GeneratorSettings
from adwatch_generator.sink import TruthWatcher
from adwatch_generator.traffic import TrafficModel

COMMANDS = ("live", "backfill", "drill", "segments")
SCENARIO_HELP = (
    "inject an anomaly: TYPE[:SEGMENTS[:START[:DURATION[:MAGNITUDE]]]], repeatable. TYPE: "
    + ", ".join(SCENARIO_KINDS)
    + ". SEGMENTS: US|banner,DE/native or US|* (default US|banner). START: offset from the run start "
    "(90s, 5m, -10m) or ISO time (default 0). DURATION: default 5m. MAGNITUDE: default per type. "
    "Example: --scenario 'ctr_drop:US|banner:2m:3m:0.4'"
)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap", help="Kafka bootstrap servers (env ADWATCH_KAFKA_BOOTSTRAP)")
    common.add_argument("--truth-topic", help="ground truth topic (default ad-events.truth)")
    common.add_argument("--truth-file", help="also append ground truth records to this JSONL file")
    common.add_argument("--log-level", help="DEBUG, INFO, WARNING (env ADWATCH_LOG_LEVEL)")

    gen = argparse.ArgumentParser(add_help=False, parents=[common])
    gen.add_argument("--rate", type=float, help="mean events/s over a day, all segments (default 80)")
    gen.add_argument("--rate-scale", type=float, help="multiply the rate (tests: more volume)")
    gen.add_argument("--seed", type=int, help="random seed; same seed, same events (default 42)")
    gen.add_argument("--output", "-o", help="kafka (default), - for stdout, or a path.jsonl")
    gen.add_argument("--topic", help="events topic (default ad-events)")
    gen.add_argument("--scenario", action="append", default=[], metavar="SPEC", help=SCENARIO_HELP)
    gen.add_argument("--trace-sample", type=float, help="fraction of events with a traceparent (default 0.001)")
    gen.add_argument("--progress-interval", type=float, help="seconds between progress lines (default 5)")
    gen.add_argument("--quiet", "-q", action="store_true", help="no progress output")

    parser = argparse.ArgumentParser(
        prog="adwatch-generator", description="Realistic ad events with injected anomalies and their ground truth."
    )
    sub = parser.add_subparsers(dest="command", metavar="{live,backfill,drill,segments}")
    live = sub.add_parser("live", parents=[gen], help="real-time stream (default command)")
    live.add_argument("--warmup-minutes", type=float, help="first backfill this many minutes before now")
    live.add_argument("--duration", help="stop after this long (e.g. 30s, 10m); default: run until stopped")
    live.add_argument(
        "--clock",
        help="event time at start (ISO, e.g. 2026-12-01T20:00Z): the stream then runs at real speed from that "
        "instant, to replay a time of day (tests, demos); drills assume the real clock; default now",
    )
    back = sub.add_parser("backfill", parents=[gen], help="a range of event-time history, as fast as possible")
    back.add_argument("--start", help="ISO time or offset from now (e.g. -24h); default: --hours before --end")
    back.add_argument("--end", help="ISO time or offset from now; default now")
    back.add_argument("--hours", type=float, help="length of the range when --start is not given (default 24)")
    drill = sub.add_parser("drill", parents=[common], help="inject a scenario into the running live generators")
    drill.add_argument("--scenario", action="append", default=[], metavar="SPEC", help=SCENARIO_HELP)
    drill.add_argument("--choice", help="non-interactive menu choice: 1-7 or a scenario type")
    drill.add_argument("--segments", help="with --choice: segments (default US|banner)")
    drill.add_argument("--duration", help="with --choice: duration (default 5m)")
    drill.add_argument("--magnitude", type=float, help="with --choice: magnitude (default per type)")
    sub.add_parser("segments", parents=[gen], help="list the segments with their share, CTR and eCPM")
    return parser


def parse_args(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    args = list(argv)
    if not args or (args[0] not in COMMANDS and args[0] not in ("-h", "--help")):
        args = ["live", *args]
    parser = _parser()
    return parser, parser.parse_args(args)


# command-line flag -> GeneratorSettings field (a flag given overrides the environment)
FLAG_FIELDS = {
    "rate": "rate",
    "rate_scale": "rate_scale",
    "seed": "seed",
    "output": "output",
    "topic": "topic",
    "truth_topic": "truth_topic",
    "truth_file": "truth_file",
    "trace_sample": "trace_sample",
    "warmup_minutes": "warmup_minutes",
    "progress_interval": "progress_interval_s",
}


def flag_overrides(ns: argparse.Namespace) -> dict[str, object]:
    """The settings given as flags; the rest come from ``ADWATCH_GENERATOR_*`` or defaults."""
    return {field: getattr(ns, flag) for flag, field in FLAG_FIELDS.items() if getattr(ns, flag, None) is not None}


def parse_scenarios(parser: argparse.ArgumentParser, specs: Sequence[str], run_start_ms: int) -> list[Scenario]:
    try:
        return [parse_scenario(spec, run_start_ms) for spec in specs]
    except ScenarioError as exc:
        parser.error(f"--scenario: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    parser, ns = parse_args(sys.argv[1:] if argv is None else argv)
    command = ns.command or "live"
    if command == "segments":
        return _print_segments(load_or_exit(GeneratorSettings, **flag_overrides(ns)))
    common_overrides = {"log_level": ns.log_level} if ns.log_level else {}
    with service(
        "generator", GeneratorSettings, overrides=flag_overrides(ns), common_overrides=common_overrides
    ) as svc:
        return _run(parser, ns, command, svc)


def _run(parser: argparse.ArgumentParser, ns: argparse.Namespace, command: str, svc: Service[GeneratorSettings]) -> int:
    settings, stop = svc.settings, svc.stop
    metrics = svc.metrics(GeneratorMetrics)  # on the registry the ops server's /metrics shows
    bootstrap = ns.bootstrap or svc.common.kafka_bootstrap
    now_ms = int(time.time() * 1000)
    if command == "drill":
        return _drill(parser, ns, settings, bootstrap, now_ms, stop, metrics)
    if command == "backfill":
        start_ms, end_ms = _backfill_range(parser, ns, now_ms)
        run_start = start_ms
    else:
        run_start = _live_start_ms(parser, ns.clock, now_ms)
        duration_s = _duration_s(parser, ns.duration)
    scenarios = parse_scenarios(parser, ns.scenario, run_start)
    progress_out = None if ns.quiet else sys.stderr
    ready = threading.Event()
    svc.ready_when(ready.is_set)
    with contextlib.ExitStack() as stack:
        outputs = stack.enter_context(open_outputs(settings, bootstrap, stop, metrics, ready))
        if outputs is None:
            return 1
        if command == "backfill":
            run_backfill(settings, outputs, start_ms, end_ms, scenarios, stop, metrics, progress_out)
            return 0
        watcher = None
        if settings.output == "kafka":
            group_id = f"adwatch-generator-{uuid.uuid4().hex[:8]}"
            watcher = TruthWatcher(bootstrap, settings.truth_topic, group_id, metrics)
            stack.callback(watcher.close)
        shift_s = (run_start - now_ms) / 1000.0
        run_live(
            settings,
            outputs,
            run_start,
            scenarios,
            stop,
            metrics,
            progress_out,
            duration_s=duration_s,
            watcher=watcher,
            clock=lambda: time.time() + shift_s,
        )
    return 0


def _live_start_ms(parser: argparse.ArgumentParser, clock: str | None, now_ms: int) -> int:
    """The event time live traffic starts at: now, or ``--clock`` (same wall-clock speed, shifted)."""
    if clock is None:
        return now_ms
    try:
        return parse_time_ms(clock, now_ms)
    except (ScenarioError, ValueError) as exc:
        parser.error(f"--clock: {exc}")


def _duration_s(parser: argparse.ArgumentParser, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration_ms(text) / 1000.0
    except ScenarioError as exc:
        parser.error(f"--duration: {exc}")


def _backfill_range(parser: argparse.ArgumentParser, ns: argparse.Namespace, now_ms: int) -> tuple[int, int]:
    try:
        end_ms = parse_time_ms(ns.end, now_ms) if ns.end else now_ms
        if ns.start:
            start_ms = parse_time_ms(ns.start, now_ms)
        else:
            hours = 24.0 if ns.hours is None else ns.hours
            if hours <= 0:
                parser.error("--hours must be positive")
            start_ms = end_ms - int(hours * 3_600_000)
    except ScenarioError as exc:
        parser.error(f"--start/--end: {exc}")
    if end_ms <= start_ms:
        parser.error("--end must be after --start")
    return start_ms, end_ms


def _drill(
    parser: argparse.ArgumentParser,
    ns: argparse.Namespace,
    settings: GeneratorSettings,
    bootstrap: str,
    now_ms: int,
    stop: threading.Event,
    metrics: GeneratorMetrics,
) -> int:
    scenarios = parse_scenarios(parser, ns.scenario, now_ms)
    if ns.choice:
        try:
            kind = choice_kind(ns.choice)
            duration = parse_duration_ms(ns.duration) if ns.duration else (1000 if kind == "clean" else 300_000)
            scenarios.append(
                make_scenario(kind, segments=ns.segments, start_ms=now_ms, duration_ms=duration, magnitude=ns.magnitude)
            )
        except ScenarioError as exc:
            parser.error(f"--choice: {exc}")
    return run_drill(settings, bootstrap, scenarios, stop, metrics)


def _print_segments(settings: GeneratorSettings) -> int:
    model = TrafficModel(seed=settings.seed, rate=settings.effective_rate)
    print(f"{'segment':<22} {'share':>7} {'events/min':>11} {'CTR':>7} {'eCPM $':>8}")
    for seg in sorted(model.segments, key=lambda s: -s.share):
        per_min = settings.effective_rate * seg.share * 60
        print(f"{seg.key:<22} {seg.share:7.2%} {per_min:11,.1f} {seg.ctr:7.2%} {seg.ecpm_usd:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
