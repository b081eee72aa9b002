"""adwatch notifier: Kafka ``alerts`` -> Slack, email, PagerDuty, webhook, console; exactly once in effect."""

from adwatch_notifier.delivery import CHANNELS, Channel, Delivery, DeliveryError, classify_status
from adwatch_notifier.routing import Route, RoutingTable, load_routes, parse_routes, route
from adwatch_notifier.service import Hooks, RunStats, run
from adwatch_notifier.settings import NotifierSettings, check_channel_settings

__all__ = [
    "CHANNELS",
    "Channel",
    "Delivery",
    "DeliveryError",
    "Hooks",
    "NotifierSettings",
    "Route",
    "RoutingTable",
    "RunStats",
    "check_channel_settings",
    "classify_status",
    "load_routes",
    "parse_routes",
    "route",
    "run",
]
