"""The `adwatch` command: run the whole pipeline locally, query ClickHouse, export schemas.

``adwatch run`` is what ``make run`` calls: embedded infrastructure, then the generator,
the detector and the notifier as separate processes (the way they run in a cluster),
stopped together on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
import threading
from pathlib import Path

import msgspec

from adwatch.contracts import json_schemas
from adwatch.lifecycle import install_stop_handlers
from adwatch_dev.infra import EmbeddedInfra
from adwatch_dev.pipeline import LocalPipeline

RUN_DIR = Path(".adwatch/run")
CLICKHOUSE_DIR = Path(".adwatch/clickhouse")


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
    """Start infra + services, print where to look, wait for Ctrl-C, stop everything."""
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)
    RUN_DIR.mkdir(parents=True)
    stopping = threading.Event()
    install_stop_handlers(stopping)  # first: Ctrl-C during start-up still stops what was started
    infra = _start_infra()
    CLICKHOUSE_DIR.mkdir(parents=True, exist_ok=True)
    pipeline = LocalPipeline(infra, RUN_DIR, env={"ADWATCH_CLICKHOUSE_URL": f"chdb://{CLICKHOUSE_DIR.resolve()}"})
    try:
        checkpoint = str((RUN_DIR / "checkpoint").resolve())
        pipeline.start("detector", ["adwatch-detector", "run"], ADWATCH_DETECTOR_CHECKPOINT_DIR=checkpoint)
        for channel in _notifier_channels(pipeline.base_env()):
            argv = ["adwatch-notifier", "--channel", channel]
            pipeline.start(f"notifier-{channel}", argv, to_terminal=channel == "console")
        generator = ["adwatch-generator", "live", "--warmup-minutes", str(args.warmup_minutes)]
        generator += ["--rate", str(args.rate)]
        if args.scenario != "none":
            generator += [
                "--scenario",
                f"{args.scenario}:{args.segment}:{args.scenario_start}:{args.scenario_duration}",
            ]
            generator += ["--truth-file", str(RUN_DIR / "truth.jsonl")]
        pipeline.start("generator", generator)

        print(_where_to_look(pipeline), flush=True)
        while not stopping.is_set():
            dead = pipeline.dead()
            if dead:
                print(f"adwatch: {dead[0].name} exited ({dead[0].popen.returncode}); see {RUN_DIR}", flush=True)
                break
            stopping.wait(1.0)
    finally:
        print("\nadwatch: stopping ...", flush=True)
        pipeline.stop()
        infra.stop()
    return 0


def _where_to_look(pipeline: LocalPipeline) -> str:
    infra = pipeline.infra
    lines = [
        "",
        "adwatch is running. Alerts appear below (console channel) within a few minutes.",
        f"  Kafka bootstrap : {infra.kafka_bootstrap}",
        f"  Redis           : {infra.redis_url}   (latest metrics: HGETALL adwatch:segment:US|banner)",
        f"  ClickHouse data : {CLICKHOUSE_DIR.resolve()}  (query: make query SQL='SELECT * FROM ad_alerts')",
        f"  Logs            : {RUN_DIR.resolve()}/*.log",
        f"  Fire a drill    : ADWATCH_KAFKA_BOOTSTRAP={infra.kafka_bootstrap} .venv/bin/adwatch-generator drill",
    ]
    lines += [
        f"  {name:<16}: http://127.0.0.1:{port}/metrics  /healthz  /readyz" for name, port in pipeline.ports.items()
    ]
    lines += ["Press Ctrl-C to stop everything.", ""]
    return "\n".join(lines)


def query(args: argparse.Namespace) -> int:
    """Run SQL against the ClickHouse that `make run` fills (or ADWATCH_CLICKHOUSE_URL).

    chdb lets one process own a data directory, and while `make run` runs that is the
    detector: so an embedded store is queried through a snapshot copy of its directory.
    """
    import tempfile

    from adwatch.storage import make_clickhouse

    url = os.environ.get("ADWATCH_CLICKHOUSE_URL") or f"chdb://{CLICKHOUSE_DIR.resolve()}"
    with tempfile.TemporaryDirectory(prefix="adwatch-query-") as tmp:
        if url.startswith("chdb://"):
            snapshot = Path(tmp) / "clickhouse"
            shutil.copytree(
                url.removeprefix("chdb://"), snapshot, symlinks=True, ignore=shutil.ignore_patterns("status")
            )
            url = f"chdb://{snapshot}"
        for row in make_clickhouse(url).query(args.sql):
            print("\t".join(str(v) for v in row))
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
    run.add_argument("--scenario", default=os.environ.get("SCENARIO", "traffic_spike"),
                     help="scenario to inject, or 'none' (env SCENARIO)")  # fmt: skip
    run.add_argument("--segment", default=os.environ.get("SEGMENT", "US/banner"))
    run.add_argument("--scenario-start", default=os.environ.get("SCENARIO_START", "30s"))
    run.add_argument("--scenario-duration", default=os.environ.get("SCENARIO_DURATION", "4m"))
    run.add_argument("--warmup-minutes", type=int, default=int(os.environ.get("WARMUP_MINUTES", "90")))
    run.add_argument("--rate", type=float, default=float(os.environ.get("RATE", "80")))
    run.set_defaults(func=run_pipeline)
    q = sub.add_parser("query", help="run SQL against the local ClickHouse (chdb)")
    q.add_argument("sql")
    q.set_defaults(func=query)
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
