"""The Ledger protocol's contract, run on the in-memory fake and on real Redis: the fake must not lie."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adwatch.storage import make_redis
from adwatch_dev.testing import unique
from adwatch_notifier.ledger import Ledger, RedisLedger

from .fakes import MemoryLedger


@pytest.fixture(params=["memory", "redis"])
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger()
    else:  # integration: starts the embedded Redis
        yield RedisLedger(make_redis(request.getfixturevalue("redis_url")), unique("adwatch:notifier"), "slack")


def test_swap_is_compare_and_set(ledger: Ledger) -> None:
    assert ledger.get("idem", "a1") is None
    assert ledger.swap("idem", "a1", None, "claimed|me|1", 60), "create when absent"
    assert not ledger.swap("idem", "a1", None, "claimed|other|1", 60), "create only once"
    assert not ledger.swap("idem", "a1", "claimed|other|1", "inflight|other|1", 60), "wrong expectation"
    assert ledger.swap("idem", "a1", "claimed|me|1", "inflight|me|1", 60)
    assert ledger.get("idem", "a1") == "inflight|me|1"


def test_delete_if_only_our_value(ledger: Ledger) -> None:
    ledger.put("cooldown", "fp", "a1|9", 60)
    assert not ledger.delete_if("cooldown", "fp", "a2|9")
    assert ledger.get("cooldown", "fp") == "a1|9"
    assert ledger.delete_if("cooldown", "fp", "a1|9")
    assert ledger.get("cooldown", "fp") is None


def test_kinds_are_separate_and_delete(ledger: Ledger) -> None:
    ledger.put("ref", "fp", "C1|1.2", 60)
    assert ledger.get("cooldown", "fp") is None
    ledger.delete("ref", "fp")
    assert ledger.get("ref", "fp") is None


def test_rate_slot(ledger: Ledger) -> None:
    assert ledger.acquire_slot("#a", 1000) == 0.0
    assert 0.0 < ledger.acquire_slot("#a", 1000) <= 1.0
    assert ledger.acquire_slot("#b", 1000) == 0.0
    assert ledger.acquire_slot("#a", 0) == 0.0
