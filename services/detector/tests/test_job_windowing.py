"""Window arithmetic of the stateful step (pure, no Spark)."""

from __future__ import annotations

import numpy as np

from adwatch.contracts import segment_key
from adwatch_detector.windowing import (
    OpenWindows,
    close_windows,
    fold_events,
    next_close_ms,
    open_silent_windows,
    to_segment_window,
)

W = 60_000


def _fold(ow: OpenWindows, times: list[int], types: list[int], tps: list[str | None] | None = None) -> int:
    n = len(times)
    return fold_events(
        ow,
        np.array(times),
        np.array(types),
        np.full(n, 0.5),
        np.array([1 if t == 1 else 0 for t in types]),
        tps or [None] * n,
        W,
        2,
    )


def test_windows_fold_close_in_order_and_late_events_are_counted() -> None:
    ow = OpenWindows()
    assert _fold(ow, [5, 61_000, 10, 130_000], [0, 0, 1, 0], ["a", "b", "c", None]) == 0
    assert next_close_ms(ow, W) == W
    assert close_windows(ow, 119_999, W)[0][0] == 0  # only window 0 has ended
    assert sorted(ow.windows) == [60_000, 120_000]
    assert _fold(ow, [30_000, 70_000], [0, 0]) == 1  # window 0 already closed: late
    closed = close_windows(ow, 10**9, W)
    assert [s for s, _ in closed] == [60_000, 120_000]
    assert closed[0][1].counts[0] == 2 and closed[0][1].traceparents == ["b"]
    assert OpenWindows.from_bytes(ow.to_bytes()) == ow


def test_segment_window_from_partial() -> None:
    ow = OpenWindows()
    _fold(ow, [1, 2, 3, 4], [0, 0, 1, 1], ["t1", "t2", "t3", "t4"])
    ((start, part),) = close_windows(ow, W, W)
    w = to_segment_window(start, W, {"country": "US", "ad_format": "banner"}, segment_key("US", "banner"), part)
    assert (w.impressions, w.clicks, w.orphan_clicks, w.revenue_usd, w.window_end_ms) == (2, 2, 2, 2.0, W)
    assert part.traceparents == ["t1", "t2"]  # bounded sample


def test_a_tracked_segment_that_goes_dark_gets_empty_windows_up_to_the_bound() -> None:
    ow = OpenWindows()
    assert open_silent_windows(ow, 10 * W, W, max_silent=60) == 0, "never closed a window: not tracked yet"
    _fold(ow, [5, 61_000], [0, 0])
    close_windows(ow, 2 * W, W)
    assert next_close_ms(ow, W, max_silent=60) == 3 * W, "no window open: call again at the next one's end"
    assert open_silent_windows(ow, 5 * W + 100, W, max_silent=60) == 3
    assert [s for s, part in close_windows(ow, 5 * W + 100, W) if sum(part.counts) == 0] == [2 * W, 3 * W, 4 * W]
    assert open_silent_windows(ow, 100 * W, W, max_silent=5) == 2, "five dark windows in a row, then gone"
    close_windows(ow, 100 * W, W)
    assert next_close_ms(ow, W, max_silent=5) is None
    _fold(ow, [100 * W + 5], [0])
    assert ow.silent_windows == 0, "an event makes it tracked again"
    assert next_close_ms(ow, W, max_silent=0) == 101 * W
    assert OpenWindows.from_bytes(OpenWindows(closed_until_ms=W).to_bytes()).silent_windows == 0
