"""``adwatch-notifier --channel slack|email|pagerduty|webhook|console``: one channel per process."""

from __future__ import annotations

import argparse
import logging
import sys

from adwatch.errors import AdwatchError
from adwatch.service import service
from adwatch_notifier.delivery import CHANNELS
from adwatch_notifier.routing import load_routes
from adwatch_notifier.service import run
from adwatch_notifier.settings import NotifierSettings, check_channel_settings

logger = logging.getLogger("adwatch_notifier")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adwatch-notifier", description=__doc__)
    parser.add_argument("--channel", choices=CHANNELS, help="overrides ADWATCH_NOTIFIER_CHANNEL")
    parser.add_argument("--max-messages", type=int, default=None, help="stop after N records (tests, benchmarks)")
    args = parser.parse_args(argv)
    overrides = {"channel": args.channel} if args.channel else {}
    with service(lambda s: f"notifier-{s.channel}", NotifierSettings, overrides=overrides) as svc:
        try:
            check_channel_settings(svc.settings)
            load_routes(svc.settings.routes_file)
        except AdwatchError as exc:
            print(f"adwatch-notifier: {exc}", file=sys.stderr)
            return 2
        run(svc.settings, svc.stop, args.max_messages, common=svc.common, ready_when=svc.ready_when)
    return 0


if __name__ == "__main__":
    sys.exit(main())
