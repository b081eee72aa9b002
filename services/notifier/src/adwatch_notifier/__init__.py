"""adwatch notifier: Kafka ``alerts`` -> Slack, email, PagerDuty, webhook, console; exactly once in effect."""

from adwatch_notifier.delivery import CHANNELS, Channel, Delivery, DeliveryError, classify_status
from adwatch_notifier.ledger import Ledger, RedisLedger
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.outcomes import Continue, DeadLetter, Delivered, Outcome, StageResult, Stop, Suppressed
from adwatch_notifier.routing import Route, RoutesFile, RoutingTable, load_routes, parse_routes, route
from adwatch_notifier.service import RunStats, run
from adwatch_notifier.settings import NotifierSettings, check_channel_settings

__all__ = [
    "CHANNELS",
    "Channel",
    "Continue",
    "DeadLetter",
    "Delivered",
    "Delivery",
    "DeliveryError",
    "Ledger",
    "NotifierMetrics",
    "NotifierSettings",
    "Outcome",
    "RedisLedger",
    "Route",
    "RoutesFile",
    "RoutingTable",
    "RunStats",
    "StageResult",
    "Stop",
    "Suppressed",
    "check_channel_settings",
    "classify_status",
    "load_routes",
    "parse_routes",
    "route",
    "run",
]
