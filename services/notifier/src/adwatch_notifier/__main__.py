"""``adwatch-notifier --channel slack|email|pagerduty|webhook|console``: one channel per process."""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from adwatch.config import CommonSettings, load_or_exit
from adwatch.errors import AdwatchError
from adwatch.lifecycle import install_stop_handlers
from adwatch.telemetry import setup_logging, setup_tracing
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
    settings = load_or_exit(NotifierSettings, **overrides)
    common = load_or_exit(CommonSettings)
    setup_logging(common.log_level, secrets=settings.secret_values())
    try:
        check_channel_settings(settings)
        load_routes(settings.routes_file)
    except AdwatchError as exc:
        print(f"adwatch-notifier: {exc}", file=sys.stderr)
        return 2
    setup_tracing(f"notifier-{settings.channel}")
    stop = threading.Event()
    install_stop_handlers(stop)
    run(settings, stop, args.max_messages, common=common, serve_ops=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
