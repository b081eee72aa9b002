"""``adwatch-notifier replay``: send chosen dead letters through the live chain again.

A dead letter is re-published to the alerts topic with its original bytes, key and headers
(``traceparent`` kept) plus ``adwatch-replay-channel: <channel>``: only that channel's
notifier takes it (the others skip it as ``other_channel``), through the same stages as live
traffic, so the same order and age checks apply (a firing older than its fingerprint's last
recovery stays unsent, an already sent alert is a duplicate).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from adwatch.contracts import DeadLetter
from adwatch.kafka import header_bytes
from adwatch_notifier.stages import REPLAY_HEADER


@dataclass(frozen=True)
class Selection:
    """Which dead letters to replay: one channel's, optionally only some DLQ offsets or reasons."""

    channel: str
    dlq_offsets: frozenset[int] = frozenset()
    reasons: frozenset[str] = frozenset()

    def matches(self, letter: DeadLetter, dlq_offset: int) -> bool:
        return (
            letter.channel == self.channel
            and (not self.dlq_offsets or dlq_offset in self.dlq_offsets)
            and (not self.reasons or letter.reason_code in self.reasons)
        )


@dataclass(frozen=True)
class ReplayRecord:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


def replay_record(letter: DeadLetter, channel: str) -> ReplayRecord:
    """The original record, as it was consumed, addressed to ``channel``."""
    value = base64.b64decode(letter.payload_b64) if letter.payload_b64 else letter.payload.encode()
    key = base64.b64decode(letter.key_b64) if letter.key_b64 else None
    headers = [(k, header_bytes(v)) for k, v in letter.headers.items() if k != REPLAY_HEADER]
    return ReplayRecord(key, value, [*headers, (REPLAY_HEADER, channel.encode())])


def choose(letters: Iterable[tuple[int, DeadLetter]], selection: Selection) -> Sequence[ReplayRecord]:
    """``(dlq_offset, letter)`` pairs -> the records to re-publish, in DLQ order."""
    return [replay_record(letter, selection.channel) for offset, letter in letters if selection.matches(letter, offset)]
