"""Hour-of-day profiles, weekday and weekend: what share of its daily mean a segment sees at a time.

And dark quarter-hours: an hour profile cannot show a campaign's schedule that stops at 23:30 sharp,
so each quarter-hour of the day remembers whether it was silent the last time it was seen (a
96-bit map); a silent window in a quarter that was dark before, at an hour the profile already
calls low, is expected rather than an outage.

A profile is 24 multiplicative factors, one per UTC hour, in units of 1/10,000 (ints: msgpack stores
one in 1-3 bytes, a float in 9, and the profile is per segment), read with linear interpolation
between hour centres so the expectation has no step on the hour. It is learnt online as the ratio of
a window's count to a slow (about a day) deseasonalized mean: a fast level would absorb the daily
cycle and leave the profile flat. Weekend days (Saturday, Sunday UTC) have their own profile, copied
from the weekday one on the first weekend window. Nightly troughs and dark nights become
expectations near zero instead of "drops", and the morning return an expected ramp.
"""

from __future__ import annotations

QUARTER_MS = 900_000
QUARTERS = 96
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
UNIT = 10_000.0
FLAT: tuple[int, ...] = (10_000,) * 24
MAX_RATIO = 6.0  # a window at more than 6x its daily mean teaches the profile no more than 6x
FLOOR = 0.02  # the least factor a deseasonalized count is divided by


def is_weekend(ms: int) -> bool:
    """Saturday or Sunday in UTC (1970-01-01 was a Thursday)."""
    return (ms // DAY_MS + 3) % 7 >= 5


def position(ms: int) -> tuple[int, float]:
    """The hour slot before ``ms`` (between hour centres) and the weight of the next one."""
    u = ((ms % DAY_MS) / HOUR_MS - 0.5) % 24.0
    slot = int(u)
    return slot, u - slot


def factor(profile: list[int], ms: int) -> float:
    """The profile's factor at ``ms`` (1.0 for an empty profile: nothing learnt yet)."""
    if not profile:
        return 1.0
    slot, w = position(ms)
    return ((1.0 - w) * profile[slot] + w * profile[(slot + 1) % 24]) / UNIT


def learn(profile: list[int], ratio: float, ms: int, rate: float, cap: float | None = None) -> None:
    """Move the two slots around ``ms`` towards ``ratio`` (count / daily mean) by ``rate``, in place;
    with ``cap``, a ratio above cap times the profile's own factor there (plus 0.1) teaches only
    that much (a flood is not a daily shape)."""
    slot, w = position(ms)
    nxt = (slot + 1) % 24
    target = min(max(ratio, 0.0), MAX_RATIO)
    if cap is not None:
        target = min(target, cap * ((1.0 - w) * profile[slot] + w * profile[nxt]) / UNIT + 0.1)
    target *= UNIT
    profile[slot] = round(profile[slot] + rate * (1.0 - w) * (target - profile[slot]))
    profile[nxt] = round(profile[nxt] + rate * w * (target - profile[nxt]))


def normalize(profile: list[int], others: list[int]) -> float:
    """Scale ``profile`` to a mean of 1 (``others`` by the same factor); return the old mean, by
    which the caller multiplies its levels so that level x factor is unchanged."""
    mean = sum(profile) / (24.0 * UNIT)
    if mean <= 0.0:
        return 1.0
    for p in (profile, others):
        for i, v in enumerate(p):
            p[i] = round(v / mean)
    return mean


def quarter_of(ms: int) -> int:
    """The quarter-hour of the day of ``ms`` (0..95)."""
    return int(ms % DAY_MS) // QUARTER_MS


def is_dark(dark: bytes, ms: int, ahead: int = 0) -> bool:
    """Whether the quarter-hour of ``ms`` (or one of the ``ahead`` after it) was silent the last
    time it was seen."""
    if len(dark) != QUARTERS // 8:
        return False
    q0 = quarter_of(ms)
    for q in range(q0, q0 + ahead + 1):
        q %= QUARTERS
        if dark[q >> 3] >> (q & 7) & 1:
            return True
    return False


def mark(dark: bytes, quarter: int, silent: bool) -> bytes:
    """``dark`` with the bit of ``quarter`` (0..95) set to ``silent``."""
    bits = bytearray(dark) if len(dark) == QUARTERS // 8 else bytearray(QUARTERS // 8)
    if silent:
        bits[quarter >> 3] |= 1 << (quarter & 7)
    else:
        bits[quarter >> 3] &= ~(1 << (quarter & 7)) & 0xFF
    return bytes(bits)
