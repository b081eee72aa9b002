"""The per-target rate limit (Slack: 1 message/s per channel) is shared by replicas through Redis."""

from __future__ import annotations

import time

from adwatch.storage import make_redis
from adwatch_dev.testing import unique
from adwatch_notifier.ledger import RedisLedger


def test_two_replicas_share_one_slot_per_interval(redis_url: str) -> None:
    prefix = unique("adwatch:notifier")
    replica_a = RedisLedger(make_redis(redis_url), prefix, "slack")
    replica_b = RedisLedger(make_redis(redis_url), prefix, "slack")
    assert replica_a.acquire_slot("#alerts", 1000) == 0.0
    wait = replica_b.acquire_slot("#alerts", 1000)
    assert 0.0 < wait <= 1.0, "the other replica must wait for the rest of the interval"
    assert replica_b.acquire_slot("#other-channel", 1000) == 0.0, "each target has its own slot"
    time.sleep(wait + 0.05)
    assert replica_b.acquire_slot("#alerts", 1000) == 0.0
    assert replica_a.acquire_slot("#alerts", 0) == 0.0, "an interval of 0 disables the limit"
