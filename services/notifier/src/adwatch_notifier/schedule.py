"""The retry schedule: records that wait (a retry, a rate limit, Redis down) held off the poll path.

Pure bookkeeping, no broker: the run loop asks it what is due, what may be committed and
whether consumption must pause.

- **Order per key.** Records with one Kafka key (the alert's fingerprint) are decided in
  offset order: a record whose key has a record waiting queues behind it. Other keys flow.
- **Commit watermark per partition.** The committable offset is the lowest undecided one
  (or one past the last decided): a waiting record is never committed past, so a crash
  redelivers it and what came after (already sent: suppressed as duplicates).
- **Bounded.** Past ``limit`` undecided records the loop pauses consumption until some are decided.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from adwatch_notifier.stages import Envelope

Key = tuple[int, bytes | None]


def key_of(env: Envelope) -> Key | None:
    """Order is kept per (partition, record key); a record without a key needs no order."""
    return (env.partition, env.key) if env.key else None


@dataclass
class RetrySchedule:
    limit: int = 1000
    _queues: dict[Key, deque[Envelope]] = field(default_factory=dict)  # head = the record being retried
    _due: list[tuple[float, int, Envelope]] = field(default_factory=list)  # heap of (due, seq, env)
    _seq: int = 0
    _undecided: dict[int, set[int]] = field(default_factory=dict)  # partition -> offsets not yet decided
    _next: dict[int, int] = field(default_factory=dict)  # partition -> one past the highest offset seen
    _committed: dict[int, int] = field(default_factory=dict)

    # --- records in ------------------------------------------------------------------------
    def admit(self, env: Envelope) -> bool:
        """Track a consumed record; True when it may run now, False when it queued behind its key."""
        self._undecided.setdefault(env.partition, set()).add(env.offset)
        self._next[env.partition] = max(self._next.get(env.partition, 0), env.offset + 1)
        key = key_of(env)
        if key is None:
            return True
        queue = self._queues.setdefault(key, deque())
        queue.append(env)
        return len(queue) == 1

    def hold(self, env: Envelope, due: float) -> None:
        """``env`` (admitted, at the head of its key) runs again at monotonic time ``due``."""
        self._seq += 1
        heapq.heappush(self._due, (due, self._seq, env))

    def pop_due(self, now: float) -> Envelope | None:
        if self._due and self._due[0][0] <= now:
            return heapq.heappop(self._due)[2]
        return None

    def next_due(self) -> float | None:
        return self._due[0][0] if self._due else None

    # --- records out -----------------------------------------------------------------------
    def decide(self, env: Envelope) -> Envelope | None:
        """``env`` is decided (sent, suppressed, parked): the next record of its key, if one waits."""
        self._undecided.get(env.partition, set()).discard(env.offset)
        key = key_of(env)
        if key is None or key not in self._queues:
            return None
        queue = self._queues[key]
        if queue and queue[0] is env:
            queue.popleft()
        if not queue:
            del self._queues[key]
            return None
        return queue[0]

    def commit_position(self, partition: int) -> int | None:
        """The offset to commit for ``partition`` when it moved since the last commit, else None."""
        undecided = self._undecided.get(partition)
        position = min(undecided) if undecided else self._next.get(partition)
        if position is None or position <= self._committed.get(partition, -1):
            return None
        return position

    def committed(self, partition: int, position: int) -> None:
        self._committed[partition] = position

    def drop(self, partitions: set[int] | None = None) -> list[Envelope]:
        """Forget the records of ``partitions`` (all when None): revoked, or the run ends.

        Returns what was forgotten (its claims are to be released); their offsets stay
        uncommitted, so the group redelivers them to whoever owns the partition next.
        """
        gone = [e for _, _, e in self._due if partitions is None or e.partition in partitions]
        for queue in self._queues.values():
            gone += [e for e in queue if (partitions is None or e.partition in partitions) and e not in gone]
        self._due = [item for item in self._due if not (partitions is None or item[2].partition in partitions)]
        heapq.heapify(self._due)
        self._queues = {k: q for k, q in self._queues.items() if not (partitions is None or k[0] in partitions)}
        for p in list(self._undecided) if partitions is None else partitions:
            self._undecided.pop(p, None)
            self._next.pop(p, None)
            self._committed.pop(p, None)
        return gone

    @property
    def undecided(self) -> int:
        return sum(len(v) for v in self._undecided.values())

    @property
    def full(self) -> bool:
        return self.undecided >= self.limit

    def partitions(self) -> list[int]:
        return sorted(set(self._undecided) | set(self._next))
