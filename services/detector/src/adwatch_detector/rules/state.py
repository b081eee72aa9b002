"""Per-segment rule state: a mapping keyed by rule id, versioned, stored as msgpack bytes in Spark state.

Encoded as ``[state_version, last_window_ms, {rule_id: [rule state, {alert_type: lifecycle}]}]``.
Keys, not positions, tie a state to its rule: adding or removing a rule never shifts another's
state, and the state of a rule that is not registered (another rule set's, or one removed) is kept
byte for byte. Bytes that cannot be read raise :class:`StateError` with what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import msgspec

from adwatch.errors import AdwatchError
from adwatch_detector.rules.lifecycle import Lifecycle
from adwatch_detector.rules.registry import RENAMED_RULES, RULES

STATE_VERSION = 2  # 1: positional msgpack array (lifecycles by index in ALERT_ORDER), not readable
T = TypeVar("T")


class StateError(AdwatchError):
    """Checkpointed rule state this detector cannot read."""


class RuleSlot(msgspec.Struct, Generic[T], array_like=True):
    """One rule's state for one segment, and its lifecycles keyed by alert type."""

    state: T
    lives: dict[str, Lifecycle]


class _Envelope(msgspec.Struct, array_like=True):
    state_version: int
    last_window_ms: int
    rules: dict[str, msgspec.Raw]


_ENVELOPE = msgspec.msgpack.Decoder(_Envelope)


def _slot_decoder(state_type: type[msgspec.Struct]) -> msgspec.msgpack.Decoder[RuleSlot[Any]]:
    """A decoder of ``RuleSlot[state_type]``: the slot type is built from a value at run time, which a
    static checker cannot follow, so it is typed as the ``RuleSlot[Any]`` it decodes to."""
    generic: Any = RuleSlot
    return msgspec.msgpack.Decoder(cast("type[RuleSlot[Any]]", generic[state_type]))


_SLOTS = {rule_id: _slot_decoder(rule.state_type) for rule_id, rule in RULES.items()}
_ENCODER = msgspec.msgpack.Encoder()


@dataclass
class SegmentState:
    """The rules' memory of one segment: the last window processed and each rule's slot."""

    last_window_ms: int = -1
    rules: dict[str, RuleSlot[Any]] = field(default_factory=dict)
    others: dict[str, msgspec.Raw] = field(default_factory=dict)  # unregistered rules' slots, as read

    def to_bytes(self) -> bytes:
        slots: dict[str, Any] = {**self.others, **self.rules}
        return _ENCODER.encode((STATE_VERSION, self.last_window_ms, slots))

    @classmethod
    def from_bytes(cls, data: bytes | None) -> SegmentState:
        """Decode state bytes; None/empty -> a fresh state."""
        if not data:
            return cls()
        try:
            env = _ENVELOPE.decode(data)
        except msgspec.DecodeError as exc:
            raise StateError(_unreadable(data, str(exc))) from None
        if env.state_version != STATE_VERSION:
            raise StateError(_unreadable(data, f"state_version {env.state_version}"))
        state = cls(last_window_ms=env.last_window_ms)
        for stored_id, raw in env.rules.items():
            rule_id = RENAMED_RULES.get(stored_id, stored_id)
            decoder = _SLOTS.get(rule_id)
            if decoder is None:
                state.others[rule_id] = raw
                continue
            try:
                state.rules[rule_id] = decoder.decode(raw)
            except msgspec.DecodeError as exc:
                raise StateError(f"segment state of rule {rule_id!r} does not match its state type: {exc}") from None
        return state


def _unreadable(data: bytes, why: str) -> str:
    version: Any = None
    try:
        head = msgspec.msgpack.decode(data)
        version = head[0] if isinstance(head, list) and head else None
    except msgspec.DecodeError:
        pass
    found = f"state_version {version}" if isinstance(version, int) else "unknown bytes"
    return (
        f"checkpointed segment state is {found}, this detector reads state_version {STATE_VERSION} ({why}). " + UPGRADE
    )


UPGRADE = (
    "To upgrade: stop the detector, point ADWATCH_DETECTOR_CHECKPOINT_DIR at a new, empty directory "
    "(keep the old one to roll back) and start it; the query then reads from "
    "ADWATCH_DETECTOR_STARTING_OFFSETS (default earliest: the retained topic replays, alert ids are "
    "deterministic so the notifier drops repeats) and the baselines warm up again. "
    "Or run the detector version that wrote the checkpoint."
)
"""What to do with a checkpoint this detector cannot read (its state bytes, or Spark's state schema)."""
