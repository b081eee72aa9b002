"""Tumbling event-time windows per segment: plain functions over ints and arrays (no Spark).

The Spark job folds each micro-batch's events of one segment into open windows kept in
state, and closes a window once the watermark has passed its end; closed windows go to
the rules in start order, exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

from adwatch.contracts import EVENT_TYPES, SegmentWindow

IMPRESSION, CLICK, REQUEST, CONVERSION = (
    EVENT_TYPES.index(t) for t in ("impression", "click", "request", "conversion")
)


class PartialWindow(msgspec.Struct, array_like=True):
    """Running totals of one open window (serialised in Spark state)."""

    counts: list[int] = msgspec.field(default_factory=lambda: [0] * len(EVENT_TYPES))
    revenue_usd: float = 0.0
    orphan_clicks: int = 0
    traceparents: list[str] = []


class OpenWindows(msgspec.Struct):
    """A segment's open windows by start, the end of the last window it closed, how many
    windows in a row it has gone without any event (opened by :func:`open_silent_windows`), and
    its tracking (see :mod:`adwatch_detector.tracking`): last event time, smoothed volume, windows
    closed, whether the rules track it. Encoded as a map: a field added with a default reads old state."""

    windows: dict[int, PartialWindow] = {}
    closed_until_ms: int = 0
    silent_windows: int = 0
    last_event_ms: int = 0
    volume: float = 0.0
    windows_closed: int = 0
    tracked: bool = False

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes | None) -> OpenWindows:
        return msgspec.msgpack.decode(data, type=cls) if data else cls()


def window_start(time_ms: int, size_ms: int) -> int:
    return time_ms - time_ms % size_ms


def fold_events(
    open_windows: OpenWindows,
    event_time_ms: np.ndarray,
    event_type: np.ndarray,
    revenue_usd: np.ndarray,
    orphan: np.ndarray,
    traceparents: Sequence[str | None],
    size_ms: int,
    max_samples: int,
) -> int:
    """Add events to their windows; return how many were late (their window already closed)."""
    if len(event_time_ms) == 0:
        return 0
    open_windows.silent_windows = 0
    times = np.asarray(event_time_ms, dtype=np.int64)
    open_windows.last_event_ms = max(open_windows.last_event_ms, int(times.max()))
    starts = times - times % size_ms
    on_time = starts >= open_windows.closed_until_ms
    late = int((~on_time).sum())
    types = np.asarray(event_type, dtype=np.int64)
    revenue = np.asarray(revenue_usd, dtype=np.float64)
    orphans = np.asarray(orphan, dtype=np.int64)
    if late:
        starts, types, revenue, orphans = starts[on_time], types[on_time], revenue[on_time], orphans[on_time]
        traceparents = [tp for tp, keep in zip(traceparents, on_time, strict=True) if keep]
    uniq, inverse = np.unique(starts, return_inverse=True)
    n_types = len(EVENT_TYPES)
    counts = np.bincount(inverse * n_types + types, minlength=len(uniq) * n_types).reshape(len(uniq), n_types)
    rev = np.bincount(inverse, weights=revenue, minlength=len(uniq))
    orph = np.bincount(inverse, weights=orphans, minlength=len(uniq))
    for i, start in enumerate(uniq.tolist()):
        part = open_windows.windows.get(start)
        if part is None:
            part = open_windows.windows[start] = PartialWindow()
        part.counts = [a + int(b) for a, b in zip(part.counts, counts[i], strict=True)]
        part.revenue_usd += float(rev[i])
        part.orphan_clicks += int(orph[i])
    if max_samples > 0:
        for idx, tp in enumerate(traceparents):
            if tp:
                part = open_windows.windows[int(uniq[inverse[idx]])]
                if len(part.traceparents) < max_samples:
                    part.traceparents.append(tp)
    return late


def close_windows(open_windows: OpenWindows, watermark_ms: int, size_ms: int) -> list[tuple[int, PartialWindow]]:
    """Remove and return, by start, the windows whose end the watermark has reached."""
    closing = sorted(s for s in open_windows.windows if s + size_ms <= watermark_ms)
    out = [(s, open_windows.windows.pop(s)) for s in closing]
    if closing:
        open_windows.closed_until_ms = max(open_windows.closed_until_ms, closing[-1] + size_ms)
    return out


def open_silent_windows(open_windows: OpenWindows, watermark_ms: int, size_ms: int, max_silent: int) -> int:
    """Open an empty window for each minute a tracked segment had no event, up to the watermark.

    A segment that goes dark sends nothing, so without these its outage would be judged only
    when traffic comes back. Tracked: it has closed a window before. At most ``max_silent``
    windows in a row (the rules' ``max_gap_fill``): a segment dark for longer is gone, and its
    history is aged in bulk when it returns. Returns how many windows were opened.
    """
    if open_windows.closed_until_ms <= 0:
        return 0
    opened = 0
    start = open_windows.closed_until_ms
    while start + size_ms <= watermark_ms and open_windows.silent_windows < max_silent:
        if start not in open_windows.windows:
            open_windows.windows[start] = PartialWindow()
            open_windows.silent_windows += 1
            opened += 1
        start += size_ms
    return opened


def next_close_ms(open_windows: OpenWindows, size_ms: int, max_silent: int = 0) -> int | None:
    """Event time at which the earliest open window can close, or, for a tracked segment with
    none open, the end of its next (silent) window: when to call the segment again (a state timeout)."""
    if open_windows.windows:
        return min(open_windows.windows) + size_ms
    if open_windows.closed_until_ms > 0 and open_windows.silent_windows < max_silent:
        return open_windows.closed_until_ms + size_ms
    return None


def to_segment_window(
    start_ms: int, size_ms: int, dimensions: dict[str, str], segment: str, part: PartialWindow
) -> SegmentWindow:
    return SegmentWindow(
        window_start_ms=start_ms,
        window_end_ms=start_ms + size_ms,
        dimensions=dimensions,
        segment_id=segment,
        impressions=part.counts[IMPRESSION],
        clicks=part.counts[CLICK],
        revenue_usd=round(part.revenue_usd, 9),
        orphan_clicks=part.orphan_clicks,
        event_counts={t: part.counts[i] for i, t in enumerate(EVENT_TYPES)},
    )
