"""The notifier's commands: ``run`` (one channel until SIGTERM), ``replay`` (dead letters back to the
alerts topic) and ``silence add|list|expire``; each starts through :func:`adwatch.service.service`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from adwatch.config import CommonSettings
from adwatch.errors import AdwatchError
from adwatch.service import Heartbeat, dispatch, service
from adwatch_notifier.delivery import CHANNELS
from adwatch_notifier.matchers import allow_dimensions
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.routing import load_routes
from adwatch_notifier.service import run
from adwatch_notifier.settings import NotifierSettings, check_channel_settings, check_route_targets
from adwatch_notifier.silences import Silence, SilenceStore, new_silence, parse_duration

logger = logging.getLogger("adwatch_notifier")


def replay_main(argv: list[str]) -> int:
    """``replay --channel slack [--offset N ...] [--reason permanent ...]``: dead letters back to the alerts topic."""
    parser = argparse.ArgumentParser(prog="adwatch-notifier replay", description=replay_main.__doc__)
    parser.add_argument("--channel", choices=CHANNELS, required=True)
    parser.add_argument("--offset", type=int, action="append", default=[], help="DLQ offset (repeatable)")
    parser.add_argument("--reason", action="append", default=[], help="reason code, e.g. permanent (repeatable)")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    with service("notifier-replay", NotifierSettings, overrides={"channel": args.channel}, serve_ops=False) as svc:
        return _replay(svc.common, svc.settings, args)


def _replay(common: CommonSettings, settings: NotifierSettings, args: argparse.Namespace) -> int:
    from confluent_kafka import TopicPartition

    from adwatch.contracts import DeadLetter, decode
    from adwatch.kafka import make_consumer, make_producer
    from adwatch_notifier.replay import Selection, choose

    consumer = make_consumer(common.kafka_bootstrap, f"replay-{os.getpid()}", **{"enable.partition.eof": True})
    meta = consumer.list_topics(settings.dlq_topic, timeout=10).topics[settings.dlq_topic]
    consumer.assign([TopicPartition(settings.dlq_topic, p, 0) for p in meta.partitions])
    letters, ends = [], 0
    while ends < len(meta.partitions):
        msg = consumer.poll(5)
        if msg is None:
            break
        if msg.error():
            ends += 1
            continue
        letters.append((msg.offset() or 0, decode(msg.value() or b"", DeadLetter)))
    consumer.close()
    records = choose(letters, Selection(args.channel, frozenset(args.offset), frozenset(args.reason)))
    print(f"{len(records)} of {len(letters)} dead letters chosen for {args.channel}")
    if args.dry_run or not records:
        return 0
    producer = make_producer(common.kafka_bootstrap)
    for record in records:
        producer.produce(settings.alerts_topic, record.value, key=record.key, headers=record.headers)
    return 0 if producer.flush(30) == 0 else 1


def silence_main(argv: list[str]) -> int:
    """``silence add --matcher country=US [--matcher ...] --duration 1h --author a --comment c``,
    ``silence list [--all]``, ``silence expire ID``: silences shared by every channel (Redis)."""
    args = silence_parser().parse_args(argv)
    with service("notifier-silence", NotifierSettings, serve_ops=False) as svc:
        from adwatch.storage import make_redis
        from adwatch_notifier.silences import RedisSilenceStore

        redis_store = RedisSilenceStore(make_redis(svc.common.redis_url), svc.settings.redis_prefix)
        redis_store.collect(time.time())  # ended more than a day ago: gone
        store: SilenceStore = redis_store
        if svc.settings.deliveries_topic and args.verb != "list":  # journaled: a Redis flush does not lose it
            from adwatch_notifier.journal import JournaledSilenceStore, KafkaJournal

            journal = KafkaJournal(svc.common.kafka_bootstrap, svc.settings.deliveries_topic)
            store = JournaledSilenceStore(redis_store, journal, time.time)
        allow_dimensions(svc.settings.dimensions)
        return silence_command(args, store, time.time, sys.stdout)


def silence_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adwatch-notifier silence", description=silence_main.__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="mute the firings every matcher matches, from now on")
    add.add_argument("--matcher", action="append", required=True, help="name=value, !=, =~regex, !~regex")
    add.add_argument("--duration", required=True, help="e.g. 30m, 1h, 1h30m, 2d")
    add.add_argument("--author", required=True)
    add.add_argument("--comment", required=True)
    listing = verbs.add_parser("list", help="active and pending silences")
    listing.add_argument("--all", action="store_true", help="also the ended ones still kept")
    expire = verbs.add_parser("expire", help="end a silence now")
    expire.add_argument("id")
    return parser


def silence_command(args: argparse.Namespace, store: SilenceStore, now: Callable[[], float], out: TextIO) -> int:
    """One parsed ``silence`` command against ``store`` (Redis in the CLI, memory in tests)."""
    try:
        match args.verb:
            case "add":
                silence = new_silence(
                    args.matcher,
                    now_s=now(),
                    duration_s=parse_duration(args.duration),
                    created_by=args.author,
                    comment=args.comment,
                )
                store.add(silence)
                print(silence.id, file=out)
            case "list":
                t = now()
                shown = sorted((s for s in store.all() if args.all or s.ends_at > t), key=lambda s: s.starts_at)
                print("ID\tSTATE\tMATCHERS\tSTARTS\tENDS\tAUTHOR\tCOMMENT", file=out)
                for s in shown:
                    print(_silence_row(s, t), file=out)
            case "expire":
                if not store.expire(args.id, now()):
                    print(f"adwatch-notifier: no active or pending silence {args.id}", file=sys.stderr)
                    return 1
                print(f"expired {args.id}", file=out)
    except AdwatchError as exc:
        print(f"adwatch-notifier: {exc}", file=sys.stderr)
        return 2
    return 0


def _silence_row(s: Silence, now_s: float) -> str:
    state = "active" if s.active(now_s) else ("pending" if s.starts_at > now_s else "expired")

    def at(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    matchers = ",".join(map(str, s.matchers))
    return "\t".join([s.id, state, matchers, at(s.starts_at), at(s.ends_at), s.created_by, s.comment])


def run_main(argv: list[str]) -> int:
    """``run --channel C``: deliver one channel's alerts until SIGTERM."""
    parser = argparse.ArgumentParser(prog="adwatch-notifier run", description=run_main.__doc__)
    parser.add_argument("--channel", choices=CHANNELS, help="overrides ADWATCH_NOTIFIER_CHANNEL")
    parser.add_argument("--max-messages", type=int, default=None, help="stop after N records (tests, benchmarks)")
    args = parser.parse_args(argv)
    overrides = {"channel": args.channel} if args.channel else {}
    with service(lambda s: f"notifier-{s.channel}", NotifierSettings, overrides=overrides) as svc:
        try:
            check_channel_settings(svc.settings)
            allow_dimensions(svc.settings.dimensions)
            table = load_routes(svc.settings.routes_file)
            check_route_targets(svc.settings, [r.target for r in table.routes if r.channel == svc.settings.channel])
        except AdwatchError as exc:
            print(f"adwatch-notifier: {exc}", file=sys.stderr)
            return 2
        heartbeat = Heartbeat()
        svc.alive_when(heartbeat, svc.settings.liveness_stall_seconds, f"the {svc.settings.channel} poll loop")
        run(
            svc.settings,
            svc.stop,
            args.max_messages,
            common=svc.common,
            metrics=svc.metrics(NotifierMetrics),
            ready_when=svc.ready_when,
            mount=svc.mount,
            heartbeat=heartbeat,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    commands = {"run": run_main, "replay": replay_main, "silence": silence_main}
    return dispatch("adwatch-notifier", argv, commands, default="run")
