"""``adwatch-notifier --channel slack|email|pagerduty|webhook|console``: one channel per process."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from adwatch.errors import AdwatchError
from adwatch.service import service
from adwatch_notifier.delivery import CHANNELS
from adwatch_notifier.routing import load_routes
from adwatch_notifier.service import run
from adwatch_notifier.settings import NotifierSettings, check_channel_settings, check_route_targets

logger = logging.getLogger("adwatch_notifier")


def replay_main(argv: list[str]) -> int:
    """``replay --channel slack [--offset N ...] [--reason permanent ...]``: dead letters back to the alerts topic."""
    from confluent_kafka import TopicPartition

    from adwatch.config import CommonSettings, load_settings
    from adwatch.contracts import DeadLetter, decode
    from adwatch.kafka import make_consumer, make_producer
    from adwatch_notifier.replay import Selection, choose

    parser = argparse.ArgumentParser(prog="adwatch-notifier replay", description=replay_main.__doc__)
    parser.add_argument("--channel", choices=CHANNELS, required=True)
    parser.add_argument("--offset", type=int, action="append", default=[], help="DLQ offset (repeatable)")
    parser.add_argument("--reason", action="append", default=[], help="reason code, e.g. permanent (repeatable)")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    common = load_settings(CommonSettings)
    settings = load_settings(NotifierSettings, channel=args.channel)
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["replay"]:
        return replay_main(argv[1:])
    parser = argparse.ArgumentParser(prog="adwatch-notifier", description=__doc__)
    parser.add_argument("--channel", choices=CHANNELS, help="overrides ADWATCH_NOTIFIER_CHANNEL")
    parser.add_argument("--max-messages", type=int, default=None, help="stop after N records (tests, benchmarks)")
    args = parser.parse_args(argv)
    overrides = {"channel": args.channel} if args.channel else {}
    with service(lambda s: f"notifier-{s.channel}", NotifierSettings, overrides=overrides) as svc:
        try:
            check_channel_settings(svc.settings)
            table = load_routes(svc.settings.routes_file)
            check_route_targets(svc.settings, [r.target for r in table.routes if r.channel == svc.settings.channel])
        except AdwatchError as exc:
            print(f"adwatch-notifier: {exc}", file=sys.stderr)
            return 2
        run(svc.settings, svc.stop, args.max_messages, common=svc.common, ready_when=svc.ready_when)
    return 0


if __name__ == "__main__":
    sys.exit(main())
