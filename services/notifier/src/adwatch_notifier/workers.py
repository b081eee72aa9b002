"""Delivery workers: a record's send runs on a small pool, never on the poll thread.

A provider that accepts the connection and answers only after seconds (up to
``REQUEST_TIMEOUT_SECONDS``) holds one worker, not the loop: the loop keeps polling,
beating ``/healthz``, preparing other records and committing. Only the loop thread touches
the consumer, the :class:`~adwatch_notifier.schedule.RetrySchedule` and the offsets; it runs
the stages before ``deliver`` itself, in offset order (so an inhibiting source is recorded
before the alerts behind it are checked), and a worker runs the rest of one record's chain
and hands ``(record, outcome)`` back through a queue. The schedule starts a record only when
it heads its key's queue, so two records of one fingerprint never run at once and are
decided in offset order.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from adwatch_notifier.outcomes import Outcome
from adwatch_notifier.stages import Envelope

Work = Callable[[], Outcome]


class DeliveryWorkers:
    """``size`` threads running the work submitted with each record; :meth:`done` returns what finished.

    A record is *in flight* from :meth:`submit` until :meth:`done` returns it. :meth:`disown`
    forgets in-flight records of revoked partitions: their results, when they come, are
    returned by :meth:`stale` instead (the loop must not decide or commit them).
    """

    def __init__(self, size: int, name: str = "deliver") -> None:
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)
        self._results: queue.SimpleQueue[tuple[Envelope, Outcome | BaseException]] = queue.SimpleQueue()
        self._inflight: dict[int, Envelope] = {}  # id(env) -> env, touched by the loop thread only
        self._disowned: set[int] = set()
        self._finished = threading.Event()
        self.stale: list[tuple[Envelope, Outcome | BaseException]] = []
        """Results of disowned records, collected by :meth:`done` for the loop to clean up after."""

    def submit(self, env: Envelope, work: Work) -> None:
        self._inflight[id(env)] = env
        self._pool.submit(self._work, env, work)

    def _work(self, env: Envelope, work: Work) -> None:
        try:
            result: Outcome | BaseException = work()
        except BaseException as exc:  # the chain classifies; this is a bug, handed back, never lost
            result = exc
        self._results.put((env, result))
        self._finished.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def is_inflight(self, env: Envelope) -> bool:
        return id(env) in self._inflight or id(env) in self._disowned

    def done(self, wait_s: float = 0.0) -> list[tuple[Envelope, Outcome | BaseException]]:
        """The records finished since the last call (waiting up to ``wait_s`` for a first one), ours only."""
        if wait_s > 0 and self._results.empty():
            self._finished.wait(wait_s)
        self._finished.clear()
        finished: list[tuple[Envelope, Outcome | BaseException]] = []
        while True:
            try:
                env, result = self._results.get_nowait()
            except queue.Empty:
                return finished
            key = id(env)
            if key in self._disowned:
                self._disowned.discard(key)
                self.stale.append((env, result))
            elif self._inflight.pop(key, None) is not None:
                finished.append((env, result))

    def disown(self, partitions: set[int] | None) -> list[Envelope]:
        """Forget the in-flight records of ``partitions`` (all when None); returns them."""
        gone = [e for e in self._inflight.values() if partitions is None or e.partition in partitions]
        for env in gone:
            del self._inflight[id(env)]
            self._disowned.add(id(env))
        return gone

    def drain(
        self, timeout_s: float, monotonic: Callable[[], float] = time.monotonic
    ) -> list[tuple[Envelope, Outcome | BaseException]]:
        """At the end of a run: what finishes within ``timeout_s`` (a send under way is let finish)."""
        deadline = monotonic() + timeout_s
        finished = self.done()
        while self._inflight and (left := deadline - monotonic()) > 0:
            finished += self.done(min(left, 0.1))
        return finished

    def close(self) -> None:
        """No new work; a send still under way finishes on its own (its claim says ``inflight``)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
