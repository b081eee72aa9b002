"""The generator's commands: ``adwatch-generator [live|backfill|drill|segments] [OPTIONS]``.

The command shape is every service's (:func:`adwatch.service.dispatch`): the first argument
names the command unless it is an option, so ``adwatch-generator --rate 5`` is ``live --rate 5``;
each command parses its own options. Flags override ``ADWATCH_GENERATOR_*``.

Exit codes: 0 done, 1 stopped before Kafka was reachable, 2 bad flags or settings.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TextIO

from adwatch.config import load_or_exit
from adwatch.contracts import segment_id
from adwatch.service import Service, dispatch, service
from adwatch_generator.catalog import top_values
from adwatch_generator.metrics import GeneratorMetrics
from adwatch_generator.runner import Outputs, choice_kind, open_outputs, run_backfill, run_drill, run_live
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

PROG = "adwatch-generator"
SCENARIO_HELP = (
    "inject an anomaly: TYPE[:SEGMENTS[:START[:DURATION[:MAGNITUDE]]]], repeatable. TYPE: "
    + ", ".join(SCENARIO_KINDS)
    + ". SEGMENTS: segment ids of any dimensions (campaign_id=cmp-0042, country=US, "
    "ad_format=banner,app_id=com.adwatch.app0003; ';' between ids of several dimensions) or cells "
    "US|banner,DE/native, US|* (default US|banner). START: offset from the run start "
    "(90s, 5m, -10m) or ISO time (default 0). DURATION: default 5m. MAGNITUDE: default per type. "
    "Example: --scenario 'ctr_drop:US|banner:2m:3m:0.4'"
)

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


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap", help="Kafka bootstrap servers (env ADWATCH_KAFKA_BOOTSTRAP)")
    common.add_argument("--truth-topic", help="ground truth topic (default ad-events.truth)")
    common.add_argument("--truth-file", help="also append ground truth records to this JSONL file")
    common.add_argument("--log-level", help="DEBUG, INFO, WARNING (env ADWATCH_LOG_LEVEL)")
    return common


def _traffic_options() -> argparse.ArgumentParser:
    gen = argparse.ArgumentParser(add_help=False, parents=[_common_options()])
    gen.add_argument("--rate", type=float, help="mean events/s over a day, all segments (default 80)")
    gen.add_argument("--rate-scale", type=float, help="multiply the rate (tests: more volume)")
    gen.add_argument("--seed", type=int, help="random seed; same seed, same events (default 42)")
    gen.add_argument("--output", "-o", help="kafka (default), - for stdout, or a path.jsonl")
    gen.add_argument("--topic", help="events topic (default ad-events)")
    gen.add_argument("--scenario", action="append", default=[], metavar="SPEC", help=SCENARIO_HELP)
    gen.add_argument("--trace-sample", type=float, help="fraction of events with a traceparent (default 0.001)")
    gen.add_argument("--progress-interval", type=float, help="seconds between progress lines (default 5)")
    gen.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    return gen


def live_parser() -> argparse.ArgumentParser:
    live = argparse.ArgumentParser(
        prog=f"{PROG} live", parents=[_traffic_options()], description="Real-time stream (the default command)."
    )
    live.add_argument("--warmup-minutes", type=float, help="first backfill this many minutes before now")
    live.add_argument("--duration", help="stop after this long (e.g. 30s, 10m); default: run until stopped")
    live.add_argument(
        "--clock",
        help="event time at start (ISO, e.g. 2026-12-01T20:00Z): the stream then runs at real speed from that "
        "instant, to replay a time of day (tests, demos); drills assume the real clock; default now",
    )
    return live


def backfill_parser() -> argparse.ArgumentParser:
    back = argparse.ArgumentParser(
        prog=f"{PROG} backfill",
        parents=[_traffic_options()],
        description="A range of event-time history, as fast as possible.",
    )
    back.add_argument("--start", help="ISO time or offset from now (e.g. -24h); default: --hours before --end")
    back.add_argument("--end", help="ISO time or offset from now; default now")
    back.add_argument("--hours", type=float, help="length of the range when --start is not given (default 24)")
    return back


def drill_parser() -> argparse.ArgumentParser:
    drill = argparse.ArgumentParser(
        prog=f"{PROG} drill",
        parents=[_common_options()],
        description="Inject a scenario into the running live generators.",
    )
    drill.add_argument("--scenario", action="append", default=[], metavar="SPEC", help=SCENARIO_HELP)
    drill.add_argument("--choice", help="non-interactive menu choice: 1-7 or a scenario type")
    drill.add_argument("--segments", help="with --choice: segment ids or US|banner cells (default US|banner)")
    drill.add_argument("--duration", help="with --choice: duration (default 5m)")
    drill.add_argument("--magnitude", type=float, help="with --choice: magnitude (default per type)")
    return drill


def segments_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} segments",
        parents=[_traffic_options()],
        description="List the cells (country x format) with their share, CTR and eCPM, or with --top the "
        "biggest values of a dimension (segment ids to target).",
    )
    parser.add_argument("--top", metavar="DIMENSION", help="app_id, campaign_id, placement_id, exchange, device_os")
    parser.add_argument("--country", help="with --top: within this country's cells")
    parser.add_argument("--ad-format", help="with --top: within this format's cells")
    parser.add_argument("-n", type=int, default=10, help="with --top: how many (default 10)")
    return parser


def flag_overrides(ns: argparse.Namespace) -> dict[str, object]:
    """The settings given as flags; the rest come from ``ADWATCH_GENERATOR_*`` or defaults."""
    return {field: getattr(ns, flag) for flag, field in FLAG_FIELDS.items() if getattr(ns, flag, None) is not None}


def parse_scenarios(parser: argparse.ArgumentParser, specs: Sequence[str], run_start_ms: int) -> list[Scenario]:
    try:
        return [parse_scenario(spec, run_start_ms) for spec in specs]
    except ScenarioError as exc:
        parser.error(f"--scenario: {exc}")


def live(argv: list[str]) -> int:
    """``live``: the real-time stream, until stopped or ``--duration``."""
    parser = live_parser()
    return _serve(parser, parser.parse_args(argv), _run_live)


def backfill(argv: list[str]) -> int:
    """``backfill``: a range of history as fast as the output takes it."""
    parser = backfill_parser()
    return _serve(parser, parser.parse_args(argv), _run_backfill)


def drill(argv: list[str]) -> int:
    """``drill``: publish scenarios the running live generators pick up."""
    parser = drill_parser()
    return _serve(parser, parser.parse_args(argv), _run_drill)


def segments(argv: list[str]) -> int:
    """``segments``: print the traffic model's segments (no service started)."""
    parser = segments_parser()
    ns = parser.parse_args(argv)
    settings = load_or_exit(GeneratorSettings, **flag_overrides(ns))
    if ns.top:
        try:
            top = top_values(ns.top, ns.n, country=ns.country, ad_format=ns.ad_format)
        except ValueError as exc:
            parser.error(f"--top: {exc}")
        print(f"{'segment id':<48} {'share':>7} {'events/min':>11}")
        for value, share in top:
            scope = {k: v for k, v in (("country", ns.country), ("ad_format", ns.ad_format)) if v}
            print(f"{segment_id({ns.top: value}):<48} {share:7.2%} {settings.effective_rate * share * 60:11,.1f}")
        if scope:
            print(f"(shares within {segment_id(scope)}; add those dimensions to an id to scope it)")
        return 0
    return _print_segments(settings)


COMMANDS = {"live": live, "backfill": backfill, "drill": drill, "segments": segments}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch(PROG, argv, COMMANDS, default="live")


class _Run:
    """What one command run is handed: its parser (for flag errors), options, service and metrics."""

    def __init__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, svc: Service[GeneratorSettings]
    ) -> None:
        self.parser, self.ns, self.svc = parser, ns, svc
        self.settings = svc.settings
        self.metrics = svc.metrics(GeneratorMetrics)  # on the registry the ops server's /metrics shows
        self.bootstrap: str = ns.bootstrap or svc.common.kafka_bootstrap
        self.now_ms = int(time.time() * 1000)


_Body = Callable[[_Run], int]


def _serve(parser: argparse.ArgumentParser, ns: argparse.Namespace, body: _Body) -> int:
    common_overrides = {"log_level": ns.log_level} if ns.log_level else {}
    with service(
        "generator", GeneratorSettings, overrides=flag_overrides(ns), common_overrides=common_overrides
    ) as svc:
        return body(_Run(parser, ns, svc))


def _run_drill(run: _Run) -> int:
    ns, parser, now_ms = run.ns, run.parser, run.now_ms
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
    return run_drill(run.settings, run.bootstrap, scenarios, run.svc.stop, run.metrics)


def _run_backfill(run: _Run) -> int:
    start_ms, end_ms = _backfill_range(run.parser, run.ns, run.now_ms)
    scenarios = parse_scenarios(run.parser, run.ns.scenario, start_ms)
    with _outputs(run) as outputs:
        if outputs is None:
            return 1
        run_backfill(run.settings, outputs, start_ms, end_ms, scenarios, run.svc.stop, run.metrics, _progress(run))
    return 0


def _run_live(run: _Run) -> int:
    settings, stop, metrics = run.settings, run.svc.stop, run.metrics
    run_start = _live_start_ms(run.parser, run.ns.clock, run.now_ms)
    duration_s = _duration_s(run.parser, run.ns.duration)
    scenarios = parse_scenarios(run.parser, run.ns.scenario, run_start)
    with contextlib.ExitStack() as stack:
        outputs = stack.enter_context(_outputs(run))
        if outputs is None:
            return 1
        watcher = None
        if settings.output == "kafka":
            group_id = f"adwatch-generator-{uuid.uuid4().hex[:8]}"
            watcher = TruthWatcher(run.bootstrap, settings.truth_topic, group_id, metrics)
            stack.callback(watcher.close)
        shift_s = (run_start - run.now_ms) / 1000.0
        run_live(
            settings,
            outputs,
            run_start,
            scenarios,
            stop,
            metrics,
            _progress(run),
            duration_s=duration_s,
            watcher=watcher,
            clock=lambda: time.time() + shift_s,
        )
    return 0


def _outputs(run: _Run) -> contextlib.AbstractContextManager[Outputs | None]:
    """The events and truth outputs (None if stopped before Kafka answered); ready once they are open."""
    ready = threading.Event()
    run.svc.ready_when(ready.is_set)
    return open_outputs(run.settings, run.bootstrap, run.svc.stop, run.metrics, ready)


def _progress(run: _Run) -> TextIO | None:
    return None if run.ns.quiet else sys.stderr


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


def _print_segments(settings: GeneratorSettings) -> int:
    model = TrafficModel(seed=settings.seed, rate=settings.effective_rate)
    print(f"{'segment':<36} {'share':>7} {'events/min':>11} {'CTR':>7} {'eCPM $':>8}")
    for seg in sorted(model.segments, key=lambda s: -s.share):
        per_min = settings.effective_rate * seg.share * 60
        print(f"{seg.key:<36} {seg.share:7.2%} {per_min:11,.1f} {seg.ctr:7.2%} {seg.ecpm_usd:8.2f}")
    return 0
