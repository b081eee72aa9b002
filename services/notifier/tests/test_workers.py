"""Delivery off the poll thread: a provider that hangs on one alert holds one worker, not the loop.

The loop here runs on the real clock with a fake consumer (no broker); the same on the real broker
and a hanging fake Slack is ``test_hanging_provider_delays_no_other_alert`` in test_delivery.
"""

from __future__ import annotations

import itertools
import threading
import time

from confluent_kafka import TopicPartition
from prometheus_client import CollectorRegistry

from adwatch.contracts import Alert, encode
from adwatch.service import Heartbeat
from adwatch_notifier.delivery import Delivery
from adwatch_notifier.loop import RecordProcessor, RunStats, consume
from adwatch_notifier.metrics import NotifierMetrics
from adwatch_notifier.outcomes import Delivered, Outcome
from adwatch_notifier.routing import load_routes
from adwatch_notifier.settings import NotifierSettings
from adwatch_notifier.stages import Envelope, Lease, build_stages
from adwatch_notifier.workers import DeliveryWorkers

from .conftest import T0, make_alert
from .fakes import FuncChannel, ListDeadLetters, MemoryLedger
from .test_loop import FakeMessage


class RealTimeConsumer:
    """``consume``'s consumer side on the real clock: records arrive when published, commits are recorded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: list[FakeMessage] = []
        self.offsets: dict[int, int] = {0: 0, 1: 0}
        self.commits: list[tuple[float, int, int]] = []
        self.polls: list[float] = []

    def publish(self, alert: Alert, partition: int) -> None:
        with self.lock:
            offset = self.offsets[partition]
            self.offsets[partition] += 1
            self.pending.append(FakeMessage(encode(alert), alert.fingerprint.encode(), partition, offset))

    def subscribe(self, topics: list[str], on_revoke: object = None) -> None:
        return None

    def poll(self, timeout: float) -> FakeMessage | None:
        self.polls.append(time.monotonic())
        with self.lock:
            if self.pending:
                return self.pending.pop(0)
        time.sleep(timeout)
        return None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits += [(time.monotonic(), tp.partition, tp.offset) for tp in offsets]

    def assignment(self) -> list[TopicPartition]:
        return []

    def pause(self, partitions: list[TopicPartition]) -> None:
        raise AssertionError("never paused")

    def resume(self, partitions: list[TopicPartition]) -> None:
        return None

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return 0, self.offsets[tp.partition]


def test_a_hanging_send_holds_one_worker_while_others_are_sent_committed_and_the_loop_turns() -> None:
    """US's send hangs until released: four other alerts are sent and committed meanwhile, each well
    under a second after it arrives; US's next window (same fingerprint) waits behind it, in order;
    the loop polls and beats the heartbeat the whole time; partition 0 commits past US only once it is sent."""
    release = threading.Event()
    sent: list[tuple[str, int, float]] = []  # (country, window_start_ms, when)

    def send(alert: Alert, target: str, ref: str | None) -> Delivery:
        if alert.country == "US" and alert.window_start_ms == T0:
            assert release.wait(30), "never released"
        sent.append((alert.country, alert.window_start_ms, time.monotonic()))
        return Delivery("console", target)

    ledger, channel = MemoryLedger(time.time), FuncChannel(send, name="console")
    settings = NotifierSettings(channel="console", max_alert_age_seconds=0, cooldown_seconds=0)
    stages = build_stages(settings, channel, load_routes(), ledger, Lease("me", 30), threading.Event())
    process = RecordProcessor(stages, "console", ledger, ListDeadLetters(), NotifierMetrics(CollectorRegistry()))
    consumer, stop, stats = RealTimeConsumer(), threading.Event(), RunStats()
    beats: list[float] = []

    class RecordedHeartbeat(Heartbeat):
        def beat(self) -> None:
            beats.append(time.monotonic())
            super().beat()

    loop = threading.Thread(
        target=consume,
        args=(consumer, process),
        kwargs={
            "topic": "alerts",
            "group": "g",
            "stop": stop,
            "max_messages": None,
            "stats": stats,
            "heartbeat": RecordedHeartbeat(),
            "workers": 4,
            "drain_s": 5.0,
        },
        daemon=True,
    )
    loop.start()
    try:
        consumer.publish(make_alert(country="US"), 0)  # hangs
        consumer.publish(make_alert(country="US", window_start_ms=T0 + 60_000), 0)  # its next window: behind it
        time.sleep(0.3)
        arrived: dict[str, float] = {}
        for i, country in enumerate(("DE", "FR", "GB", "IT")):
            arrived[country] = time.monotonic()
            consumer.publish(make_alert(country=country), i % 2)
            time.sleep(0.2)
        deadline = time.monotonic() + 10
        while len(sent) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        hung_for = time.monotonic()
        time.sleep(0.5)  # the hung one is still hanging: the loop keeps turning
        assert sorted(c for c, _, _ in sent) == ["DE", "FR", "GB", "IT"]  # while US hangs
        assert max(at - arrived[c] for c, _, at in sent) < 1.0, sent
        # partition 1 (FR, IT) is committed to its end; partition 0 stays before US (offset 0)
        assert max(pos for _, p, pos in consumer.commits if p == 1) == 2
        assert all(pos == 0 for _, p, pos in consumer.commits if p == 0)
        release.set()
        deadline = time.monotonic() + 10
        while len(sent) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        release.set()
        stop.set()
        loop.join(10)
    assert not loop.is_alive()
    us = [(w, at) for c, w, at in sent if c == "US"]
    assert [w for w, _ in us] == [T0, T0 + 60_000]  # one fingerprint: in offset order
    assert all(at > hung_for for _, at in us)
    assert max(b - a for a, b in itertools.pairwise(beats)) < 1.0  # /healthz saw the loop turn throughout
    assert max(b - a for a, b in itertools.pairwise(consumer.polls)) < 1.0
    assert stats.outcomes == {Delivered(): 6}
    assert max(pos for _, p, pos in consumer.commits if p == 0) == 4  # caught up once US was sent


def test_disowned_records_are_not_handed_back_as_ours() -> None:
    """A record whose partition was revoked while it ran comes back as stale, never to be decided."""
    gate = threading.Event()

    def run() -> Outcome:
        gate.wait(5)
        return Delivered()

    workers = DeliveryWorkers(2)
    mine, theirs = Envelope(b"", b"a", 0, 0), Envelope(b"", b"b", 1, 0)
    workers.submit(mine, run)
    workers.submit(theirs, run)
    assert workers.inflight == 2
    assert workers.disown({1}) == [theirs] and workers.inflight == 1
    gate.set()
    finished = workers.drain(5)
    assert finished == [(mine, Delivered())]
    workers.done(0.2)
    assert [env for env, _ in workers.stale] == [theirs]
    workers.close()
