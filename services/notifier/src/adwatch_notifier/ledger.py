"""The notifier's shared state: idempotency claims, cooldowns, provider refs and rate-limit slots.

The stages depend on the :class:`Ledger` protocol only, so each can be tested with an
in-memory ledger; :class:`RedisLedger` is the real one, shared by every replica of a
channel and surviving restarts. Writes are atomic: first claims with ``SET NX EX``, later
transitions with a compare-and-set script, so two replicas never both believe they own
one (alert, channel).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, ParamSpec, Protocol, TypeVar

import redis

from adwatch.errors import AdwatchError

KeyKind = Literal["idem", "cooldown", "ref", "episode", "resolved"]
"""``idem``: per alert id; ``cooldown``, ``ref``, ``episode``, ``resolved``: per fingerprint (see the README)."""


class LedgerUnavailableError(AdwatchError):
    """The ledger did not answer (Redis down or timing out): try the record again later, never park it."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Redis connection and timeout errors become :class:`LedgerUnavailableError` (no URL in the text)."""

    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            raise LedgerUnavailableError(f"redis unavailable: {type(exc).__name__}") from None

    return call


class Ledger(Protocol):
    """Keyed strings with expiry and compare-and-set, per channel (the channel is bound in)."""

    def get(self, kind: KeyKind, name: str) -> str | None:
        """The current value, None when absent or expired."""
        ...

    def swap(self, kind: KeyKind, name: str, expected: str | None, value: str, ttl_s: int) -> bool:
        """Replace ``expected`` by ``value`` atomically (``expected=None``: create only); True on success."""
        ...

    def delete_if(self, kind: KeyKind, name: str, expected: str) -> bool:
        """Delete the key only while it still holds ``expected`` (give up our own claim)."""
        ...

    def put(self, kind: KeyKind, name: str, value: str, ttl_s: int) -> None:
        """Overwrite unconditionally."""
        ...

    def delete(self, kind: KeyKind, name: str) -> None: ...

    def acquire_slot(self, target: str, interval_ms: int) -> float:
        """Rate limit shared by replicas: 0 when we may send to ``target`` now, else seconds to wait."""
        ...


_CAS = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
  return 1
end
return 0
"""


class RedisLedger:
    """Key layout: ``<prefix>:{idem,cooldown,ref,rate}:<channel>:<name>``."""

    def __init__(self, client: redis.Redis, prefix: str, channel: str) -> None:
        self.r = client
        self.base = f"{prefix}:{{kind}}:{channel}:"
        self._cas = client.register_script(_CAS)

    def key(self, kind: str, name: str) -> str:
        return self.base.format(kind=kind) + name

    @_guarded
    def get(self, kind: KeyKind, name: str) -> str | None:
        value = self.r.get(self.key(kind, name))
        return value.decode() if isinstance(value, bytes) else value

    @_guarded
    def swap(self, kind: KeyKind, name: str, expected: str | None, value: str, ttl_s: int) -> bool:
        key = self.key(kind, name)
        if expected is None:
            return bool(self.r.set(key, value, nx=True, ex=max(1, ttl_s)))
        return bool(self._cas(keys=[key], args=[expected, value, max(1, ttl_s)]))

    @_guarded
    def delete_if(self, kind: KeyKind, name: str, expected: str) -> bool:
        return bool(self._cas(keys=[self.key(kind, name)], args=[expected, "", 1]))

    @_guarded
    def put(self, kind: KeyKind, name: str, value: str, ttl_s: int) -> None:
        self.r.set(self.key(kind, name), value, ex=max(1, ttl_s))

    @_guarded
    def delete(self, kind: KeyKind, name: str) -> None:
        self.r.delete(self.key(kind, name))

    @_guarded
    def acquire_slot(self, target: str, interval_ms: int) -> float:
        if interval_ms <= 0:
            return 0.0
        key = self.key("rate", target)
        if self.r.set(key, b"1", nx=True, px=interval_ms):
            return 0.0
        pttl = int(self.r.pttl(key))
        return max(pttl, 1) / 1000.0
