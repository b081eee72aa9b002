"""Redis side of dedup: idempotency keys, cooldowns, provider refs and rate-limit slots.

Shared by every replica of a channel and survives restarts. Writes are atomic: first
claims with ``SET NX EX``, later transitions with a compare-and-set script, so two
replicas never both believe they own one (alert, channel).
"""

from __future__ import annotations

import redis

_CAS = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
  return 1
end
return 0
"""


class Ledger:
    """Key layout: ``<prefix>:{idem,cooldown,ref,rate}:<channel>:...``."""

    def __init__(self, client: redis.Redis, prefix: str, channel: str) -> None:
        self.r = client
        self.base = f"{prefix}:{{kind}}:{channel}:"
        self._cas = client.register_script(_CAS)

    def key(self, kind: str, name: str) -> str:
        return self.base.format(kind=kind) + name

    def get(self, key: str) -> str | None:
        value = self.r.get(key)
        return value.decode() if isinstance(value, bytes) else value  # type: ignore[return-value]

    def create(self, key: str, value: str, ttl_s: int) -> bool:
        """SET NX EX: true when we created it."""
        return bool(self.r.set(key, value, nx=True, ex=max(1, ttl_s)))

    def swap(self, key: str, expected: str | None, value: str, ttl_s: int) -> bool:
        """Replace ``expected`` by ``value`` atomically (``expected=None``: create only)."""
        if expected is None:
            return self.create(key, value, ttl_s)
        return bool(self._cas(keys=[key], args=[expected, value, max(1, ttl_s)]))

    def delete_if(self, key: str, expected: str) -> bool:
        return bool(self._cas(keys=[key], args=[expected, "", 1]))

    def put(self, key: str, value: str, ttl_s: int) -> None:
        self.r.set(key, value, ex=max(1, ttl_s))

    def delete(self, key: str) -> None:
        self.r.delete(key)

    def acquire_slot(self, name: str, interval_ms: int) -> float:
        """Rate limit shared by replicas: 0 when we may send now, else seconds to wait."""
        if interval_ms <= 0:
            return 0.0
        key = self.key("rate", name)
        if self.r.set(key, b"1", nx=True, px=interval_ms):
            return 0.0
        pttl = int(self.r.pttl(key))  # type: ignore[arg-type]
        return max(pttl, 1) / 1000.0
