"""The `adwatch` command: run the whole pipeline locally, query ClickHouse, export schemas.

``adwatch run`` is what ``make run`` calls: embedded infrastructure, then the generator,
the detector and the notifier as separate processes (the way they run in a cluster),
stopped together on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from adwatch.contracts import json_schemas
from adwatch.lifecycle import install_stop_handlers
from adwatch_dev.infra import EmbeddedInfra, ManagedProcess, spawn
from adwatch_dev.pipeline import LocalPipeline

RUN_DIR = Path(".adwatch/run")
CLICKHOUSE_DIR = Path(".adwatch/clickhouse")
REPORT_DIR = RUN_DIR / "report"


def export_schemas(folder: Path) -> list[Path]:
    """Write one JSON Schema file per contract (for non-Python consumers)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = folder / f"{name}.json"
        path.write_bytes(msgspec.json.format(msgspec.json.encode(schema), indent=2) + b"\n")
        written.append(path)
    return written


def _notifier_channels(env: dict[str, str]) -> list[str]:
    """Console always; Slack, email, PagerDuty too when their settings are present."""
    channels = ["console"]
    if env.get("ADWATCH_NOTIFIER_SLACK_WEBHOOK_URL") or env.get("ADWATCH_NOTIFIER_SLACK_BOT_TOKEN"):
        channels.append("slack")
    if env.get("ADWATCH_NOTIFIER_SMTP_HOST"):
        channels.append("email")
    if env.get("ADWATCH_NOTIFIER_PAGERDUTY_ROUTING_KEY"):
        channels.append("pagerduty")
    return channels


def run_pipeline(args: argparse.Namespace) -> int:
    """Start infra + services, show the live status, wait for Ctrl-C, stop everything."""
    from adwatch_dev.status import StatusBoard

    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)
    RUN_DIR.mkdir(parents=True)
    stopping = threading.Event()
    install_stop_handlers(stopping)  # first: Ctrl-C during start-up still stops what was started
    infra = _start_infra()
    CLICKHOUSE_DIR.mkdir(parents=True, exist_ok=True)
    env = {"ADWATCH_CLICKHOUSE_URL": f"chdb://{CLICKHOUSE_DIR.resolve()}", "ADWATCH_GRAFANA_URL": report_link()}
    pipeline = LocalPipeline(infra, RUN_DIR, env=env)
    board = StatusBoard(lambda: dict(pipeline.ports))
    reports = ReportRefresher(board)
    board.listeners.append(reports.on_status)
    try:
        with board:
            checkpoint = str((RUN_DIR / "checkpoint").resolve())
            pipeline.start("detector", ["adwatch-detector", "run"], ADWATCH_DETECTOR_CHECKPOINT_DIR=checkpoint)
            for channel in _notifier_channels(pipeline.base_env()):
                argv = ["adwatch-notifier", "--channel", channel]
                pipeline.start(f"notifier-{channel}", argv, on_output=board.print if channel == "console" else None)
            generator = ["adwatch-generator", "live", "--warmup-minutes", str(args.warmup_minutes)]
            generator += ["--rate", str(args.rate)]
            if args.scenario != "none":
                generator += [
                    "--scenario",
                    f"{args.scenario}:{args.segment}:{args.scenario_start}:{args.scenario_duration}",
                ]
                generator += ["--truth-file", str(RUN_DIR / "truth.jsonl")]
            pipeline.start("generator", generator)
            board.print(_where_to_look(pipeline))

            def still_running() -> bool:
                dead = pipeline.dead()
                if dead:
                    board.print(f"adwatch: {dead[0].name} exited ({dead[0].popen.returncode}); see {RUN_DIR}")
                return not dead

            board.run(stopping, tick=still_running)
    finally:
        print("\nadwatch: stopping ...", flush=True)
        reports.stop()
        pipeline.stop()
        infra.stop()
    return 0


def report_link() -> str:
    """Where a local run's notifications link: the run's report, at the alert's anchor."""
    return f"file://{(REPORT_DIR / 'report.html').resolve()}#{{alert_id}}"


class ReportRefresher:
    """Rewrites the run's report (``adwatch report``, a child process) whenever the alert count changes."""

    def __init__(self, board: Any) -> None:
        self.board = board
        self.alerts_seen = 0.0
        self.proc: ManagedProcess | None = None
        self.pending = False
        self.announced = False

    def on_status(self, status: Any) -> None:
        count = (status.alerts_firing or 0) + (status.alerts_resolved or 0)
        if count > self.alerts_seen:
            self.alerts_seen, self.pending = count, True
        if self.proc is not None and not self.proc.alive():
            if self.proc.popen.returncode == 0 and not self.announced:
                self.announced = True
                self.board.print(
                    f"adwatch: report of this run's alerts: file://{(REPORT_DIR / 'report.html').resolve()}"
                )
            self.proc = None
        if self.pending and self.proc is None:
            self.pending = False
            argv = [str(Path(sys.executable).parent / "adwatch"), "report", "--out", str(REPORT_DIR)]
            self.proc = spawn("report", argv, RUN_DIR / "report.log")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def _where_to_look(pipeline: LocalPipeline) -> str:
    infra = pipeline.infra
    lines = [
        "",
        "adwatch is running. Alerts appear below (console channel) within a few minutes.",
        f"  Kafka bootstrap : {infra.kafka_bootstrap}",
        f"  Redis           : {infra.redis_url}   (latest metrics: HGETALL 'adwatch:segment:ad_format=banner,country=US')",
        f"  ClickHouse data : {CLICKHOUSE_DIR.resolve()}  (query: make query SQL='SELECT * FROM ad_alerts')",
        f"  Logs            : {RUN_DIR.resolve()}/*.log",
        f"  Fire a drill    : ADWATCH_KAFKA_BOOTSTRAP={infra.kafka_bootstrap} .venv/bin/adwatch-generator drill",
    ]
    lines += [
        f"  {name:<16}: http://127.0.0.1:{port}/metrics  /healthz  /readyz" for name, port in pipeline.ports.items()
    ]
    lines += ["Press Ctrl-C to stop everything.", ""]
    return "\n".join(lines)


@contextlib.contextmanager
def clickhouse_snapshot(url: str | None = None) -> Iterator[str]:
    """The ClickHouse URL to read: that of `make run` (or ADWATCH_CLICKHOUSE_URL).

    chdb lets one process own a data directory, and while `make run` runs that is the
    detector: so an embedded store is read through a snapshot copy of its directory.
    """
    url = url or os.environ.get("ADWATCH_CLICKHOUSE_URL") or f"chdb://{CLICKHOUSE_DIR.resolve()}"
    with tempfile.TemporaryDirectory(prefix="adwatch-query-") as tmp:
        if url.startswith("chdb://"):
            snapshot = Path(tmp) / "clickhouse"
            shutil.copytree(
                url.removeprefix("chdb://"), snapshot, symlinks=True, ignore=shutil.ignore_patterns("status")
            )
            url = f"chdb://{snapshot}"
        yield url


def query(args: argparse.Namespace) -> int:
    """Run SQL against the ClickHouse that `make run` fills (or ADWATCH_CLICKHOUSE_URL)."""
    from adwatch.storage import make_clickhouse

    with clickhouse_snapshot() as url:
        for row in make_clickhouse(url).query(args.sql):
            print("\t".join(str(v) for v in row))
    return 0


def report(args: argparse.Namespace) -> int:
    """Write the HTML report of the current (or last) `make run`: its alerts, each metric against its band.

    The alerts are those the detector stored (``ad_alerts``); the bands come from replaying
    the stored windows (``ad_metrics``) through the rules, as ``adwatch-detector backtest``
    does: alert ids are deterministic, so the replay's evidence matches the live alerts.
    """
    from adwatch.storage import make_clickhouse
    from adwatch_detector.backtest import clickhouse_windows, run_backtest
    from adwatch_detector.evidence import BandPoint
    from adwatch_detector.migrations import Tables, migrate
    from adwatch_detector.report import ReportError, write_report
    from adwatch_detector.rules import load_rules
    from adwatch_detector.sinks import ALERT_COLUMNS, alert_from_row

    rules = load_rules(os.environ.get("ADWATCH_DETECTOR_RULES_FILE") or None)
    with clickhouse_snapshot(args.clickhouse) as url:
        store = make_clickhouse(url)
        # the snapshot gets today's schema (a store of an older detector lacks columns; none yet: empty tables)
        migrate(store, Tables("ad_metrics", "ad_alerts"))
        windows = clickhouse_windows(url, "ad_metrics", None)
        rows = store.query(f"SELECT {', '.join(ALERT_COLUMNS)} FROM ad_alerts FINAL")
        stored = [alert_from_row(row) for row in rows]
    points: list[BandPoint] = []
    replayed = run_backtest(windows, rules, points)
    alerts = list({a.alert_id: a for a in stored}.values()) or replayed
    try:
        path = write_report(
            args.out, alerts, points, title="make run", window_ms=rules.window_ms, windows=[w for _, w in windows]
        )
    except ReportError as exc:
        print(f"adwatch report: {exc}", file=sys.stderr)
        return 2
    print(f"adwatch report: {len(alerts)} alerts -> file://{path.resolve()}")
    return 0


def _start_infra() -> EmbeddedInfra:
    """The embedded broker and Redis under .adwatch/run, with the contract's topics."""
    from adwatch.kafka import ensure_topics

    print("adwatch: starting the embedded broker and Redis ...", flush=True)
    infra = EmbeddedInfra(RUN_DIR / "infra").start()
    ensure_topics(infra.kafka_bootstrap)
    return infra


def infra_only(args: argparse.Namespace) -> int:
    """Start only the embedded infrastructure, print its environment, stop on Ctrl-C/SIGTERM."""
    stopping = threading.Event()
    install_stop_handlers(stopping)  # before anything is printed: a caller may signal as soon as it reads
    infra = _start_infra()
    for key, value in infra.env().items():
        print(f"export {key}={value}", flush=True)
    try:
        stopping.wait()
    finally:
        infra.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adwatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline locally on embedded infrastructure")
    run.add_argument(
        "--scenario",
        default=os.environ.get("SCENARIO", "traffic_spike"),
        help="scenario to inject, or 'none' (env SCENARIO)",
    )
    run.add_argument("--segment", default=os.environ.get("SEGMENT", "US/banner"))
    run.add_argument("--scenario-start", default=os.environ.get("SCENARIO_START", "30s"))
    run.add_argument("--scenario-duration", default=os.environ.get("SCENARIO_DURATION", "4m"))
    run.add_argument("--warmup-minutes", type=int, default=int(os.environ.get("WARMUP_MINUTES", "90")))
    run.add_argument("--rate", type=float, default=float(os.environ.get("RATE", "80")))
    run.set_defaults(func=run_pipeline)
    q = sub.add_parser("query", help="run SQL against the local ClickHouse (chdb)")
    q.add_argument("sql")
    q.set_defaults(func=query)
    r = sub.add_parser("report", help="write the HTML report of the current make run's alerts")
    r.add_argument("--out", type=Path, default=REPORT_DIR, help=f"folder of report.html (default {REPORT_DIR})")
    r.add_argument("--clickhouse", default=None, help="ClickHouse URL (default: the make run store)")
    r.set_defaults(func=report)
    s = sub.add_parser("schemas", help="export JSON Schema files of the contracts")
    s.add_argument("folder", type=Path, nargs="?", default=Path("schemas"))
    s.set_defaults(func=lambda a: print("\n".join(str(p) for p in export_schemas(a.folder))) or 0)
    i = sub.add_parser("infra", help="start only the embedded broker and Redis")
    i.set_defaults(func=infra_only)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
