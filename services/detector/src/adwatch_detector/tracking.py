"""Which segments the rules track, and what the driver tells the executors about all of them.

Each event feeds every configured ancestor of its segment, so a segment that is not tracked
loses nothing: its traffic still counts in its parents (the long tail is rolled up). A segment is
tracked once its smoothed volume reaches ``min_volume`` events per window while fewer than
``max_tracked`` are; it stops being tracked below half of that (hysteresis), and its state is
evicted after ``idle_ms`` of event time without an event.

What one segment's state step cannot see, the driver can: after each micro-batch it counts the
live tracked segments (the alert budget divides by it) and keeps each parent segment's CTR and
eCPM (a young child borrows them as its prior). :class:`Census` computes that from the batch's
windows; :func:`encode_context` / :func:`decode_context` carry it to the next batch's tasks as a
Spark local property (set in ``foreachBatch``, on the query's thread, it reaches the tasks of
the following batches).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules import season
from adwatch_detector.rules.base import SegmentPrior
from adwatch_detector.windowing import OpenWindows, PartialWindow, close_windows, open_silent_windows

CONTEXT_PROPERTY = "adwatch.detector.context"
_VOLUME_HALFLIFE_WINDOWS = 30.0


@dataclass(frozen=True)
class DetectorContext:
    """Facts about all segments, from the driver: live tracked segments, parent priors, and the
    time the whole input was silent before this batch (``stalled``: [from, to) in epoch ms, when
    it lasted past no_data_seconds), whose empty windows say nothing about any one segment."""

    live_segments: int | None = None
    priors: Mapping[str, SegmentPrior] = field(default_factory=dict)
    stalled: tuple[int, int] | None = None

    def prior_for(self, parent_ids: Iterable[str]) -> SegmentPrior | None:
        """The prior of the first parent that has one (parents in configured order)."""
        return next((self.priors[p] for p in parent_ids if p in self.priors), None)


def encode_context(context: DetectorContext) -> str:
    priors = {sid: [p.ctr, p.ecpm, p.impressions, *p.season] for sid, p in context.priors.items()}
    data: dict[str, object] = {"live": context.live_segments, "priors": priors}
    if context.stalled is not None:
        data["stalled"] = list(context.stalled)
    return json.dumps(data, separators=(",", ":"))


_decoded: tuple[str, DetectorContext] = ("", DetectorContext())


def decode_context(text: str | None) -> DetectorContext:
    """The context of a local property value (cached: every segment of a task reads the same)."""
    global _decoded
    if not text:
        return DetectorContext()
    if _decoded[0] == text:
        return _decoded[1]
    try:
        data = json.loads(text)
        priors = {
            sid: SegmentPrior(float(v[0]), float(v[1]), float(v[2]), tuple(int(f) for f in v[3:27]))
            for sid, v in data.get("priors", {}).items()
        }
        live = data.get("live")
        stalled = data.get("stalled")
        context = DetectorContext(
            int(live) if live is not None else None,
            priors,
            (int(stalled[0]), int(stalled[1])) if stalled else None,
        )
    except (ValueError, TypeError, AttributeError):
        context = DetectorContext()
    _decoded = (text, context)
    return context


def stall_span(last_batch_ms: int | None, now_ms: int, limit_ms: int, latest_end_ms: int) -> tuple[int, int] | None:
    """The event time a stalled input left unknown, when no batch ran for longer than ``limit_ms``
    of wall clock before this one: from the end of the newest window closed before the silence
    to now (a live stream's event time; a backfill's is all behind it). None: no stall."""
    if last_batch_ms is None or limit_ms <= 0 or now_ms - last_batch_ms <= limit_ms or latest_end_ms <= 0:
        return None
    return latest_end_ms, max(now_ms, latest_end_ms)


def stalled_silence(start_ms: int, part: PartialWindow, window_ms: int, stalled: tuple[int, int]) -> bool:
    """An empty window inside the span the whole input was silent (nobody's outage)."""
    return not any(part.counts) and stalled[0] <= start_ms and start_ms + window_ms <= stalled[1]


@dataclass(frozen=True)
class TrackingPolicy:
    """When a segment is tracked by the rules, and when its state is evicted."""

    min_volume: float = 0.0
    max_tracked: int = 250_000
    idle_ms: int = 6 * 3600 * 1000

    def update(
        self, tracked: bool, volume: float, windows_seen: int, events: int, live: int | None
    ) -> tuple[bool, float]:
        """After one closed window with ``events``: (tracked now, the new smoothed volume).

        The volume is a running mean over the first windows, then an EWMA (half-life 30 windows),
        so a new segment's first window decides as much as it can. Admission waits while ``live``
        (the driver's count, one batch old) is at the cap.
        """
        weight = max(1.0 / (windows_seen + 1), 1.0 - math.pow(0.5, 1.0 / _VOLUME_HALFLIFE_WINDOWS))
        volume = volume + weight * (events - volume)
        if tracked:
            return volume >= 0.5 * self.min_volume, volume
        room = live is None or live < self.max_tracked
        return room and volume >= self.min_volume, volume

    def idle(self, last_event_ms: int, watermark_ms: int) -> bool:
        return last_event_ms > 0 and watermark_ms - last_event_ms >= self.idle_ms


def close_tracked(
    open_windows: OpenWindows,
    watermark_ms: int,
    window_ms: int,
    policy: TrackingPolicy,
    live_segments: int | None,
    max_gap_fill: int,
) -> tuple[list[tuple[int, PartialWindow]], int]:
    """Close the windows the watermark passed, moving the segment's tracking with each, then (a
    tracked segment only: the long tail gets none) open and close the silent minutes after them.
    Returns the closed windows by start and the silent-window bound that applied."""

    def close() -> list[tuple[int, PartialWindow]]:
        done = close_windows(open_windows, watermark_ms, window_ms)
        for _, part in done:
            open_windows.tracked, open_windows.volume = policy.update(
                open_windows.tracked, open_windows.volume, open_windows.windows_closed, sum(part.counts), live_segments
            )
            open_windows.windows_closed += 1
        return done

    closed = close()
    gap_fill = max_gap_fill if open_windows.tracked else 0
    if open_silent_windows(open_windows, watermark_ms, window_ms, gap_fill):
        closed += close()
    return closed, gap_fill


class ParentProfile:
    """A parent's hour-of-day profile, learnt by the driver from its closed windows as the traffic
    rule learns a segment's (the same functions: rules/season.py), one day before it is shared."""

    __slots__ = ("daily", "season", "seen", "window_ms")

    def __init__(self) -> None:
        self.daily = 0.0
        self.season: list[int] = list(season.FLAT)
        self.seen = 0
        self.window_ms = 0

    def observe(self, w: SegmentWindow) -> None:
        self.window_ms = w.window_end_ms - w.window_start_ms
        if season.is_weekend(w.window_start_ms):
            return  # the weekday shape is what a child borrows (it learns its own weekend)
        self.seen += 1
        rate = max(1.0 / self.seen, 1.0 / (24 * 60))
        self.daily += rate * (w.impressions - self.daily)
        if self.daily > 0:
            per_hour = season.HOUR_MS / max(self.window_ms, 1)
            season.learn(self.season, w.impressions / self.daily, w.window_start_ms, max(0.01, 1.0 / per_hour))

    def ready(self) -> bool:
        return self.window_ms > 0 and self.seen * self.window_ms >= season.DAY_MS


class Census:
    """The driver's view of every segment: which are tracked (by their last window) and each
    parent segment's decayed CTR/eCPM totals. Bounded: a segment unseen for ``idle_ms`` of
    window time is forgotten; at most ``max_priors`` parents (the largest) are sent."""

    def __init__(self, parent_sets: set[frozenset[str]] | None = None, idle_ms: int = 6 * 3600 * 1000) -> None:
        self.parent_sets = parent_sets  # the dimension sets whose segments are someone's parent (None: all)
        self.idle_ms = idle_ms
        self.max_priors = 5000
        self.max_seasons = 500
        self._tracked: dict[str, int] = {}  # segment id -> end of its last tracked window
        self._totals: dict[str, list[float]] = {}  # parent id -> [impressions, clicks, revenue], decayed
        self._decay = math.pow(0.5, 1.0 / 120.0)  # two hours of one-minute windows
        self._profiles: dict[str, ParentProfile] = {}  # parent id -> its hour-of-day profile, learnt here
        self.latest_end_ms = 0  # the end of the newest window closed so far (event time)

    def observe(self, windows: Iterable[tuple[SegmentWindow, bool]]) -> None:
        """Take one batch's closed windows, each with whether its segment is tracked."""
        latest = 0
        for w, tracked in windows:
            latest = max(latest, w.window_end_ms)
            if tracked:
                self._tracked[w.segment_id] = w.window_end_ms
            else:
                self._tracked.pop(w.segment_id, None)
            if self.parent_sets is None or frozenset(w.dimensions) in self.parent_sets:
                t = self._totals.setdefault(w.segment_id, [0.0, 0.0, 0.0])
                t[0] = self._decay * t[0] + w.impressions
                t[1] = self._decay * t[1] + w.clicks - w.orphan_clicks
                t[2] = self._decay * t[2] + w.revenue_usd
                profile = self._profiles.get(w.segment_id)
                if profile is None:
                    profile = self._profiles[w.segment_id] = ParentProfile()
                profile.observe(w)
        if latest:
            self.latest_end_ms = max(self.latest_end_ms, latest)
            horizon = latest - self.idle_ms
            stale = [sid for sid, end in self._tracked.items() if end < horizon]
            for sid in stale:
                del self._tracked[sid]

    def forget(self, segment: str) -> None:
        """A segment evicted from state (idle): no longer live, no longer anyone's prior."""
        self._tracked.pop(segment, None)
        self._totals.pop(segment, None)
        self._profiles.pop(segment, None)

    def _season_of(self, segment: str, rank: int) -> tuple[int, ...]:
        """The parent's learnt profile: only for the largest parents (the context goes with every task)."""
        profile = self._profiles.get(segment)
        if profile is None or rank >= self.max_seasons or not profile.ready():
            return ()
        return tuple(profile.season)

    @property
    def live_segments(self) -> int:
        return len(self._tracked)

    def context(self, stalled: tuple[int, int] | None = None) -> DetectorContext:
        ranked = sorted(self._totals.items(), key=lambda kv: -kv[1][0])[: self.max_priors]
        priors = {
            sid: SegmentPrior(
                clicks / imps, 1000.0 * rev / imps, imps * (1.0 - self._decay), self._season_of(sid, rank)
            )
            for rank, (sid, (imps, clicks, rev)) in enumerate(ranked)
            if imps > 0
        }
        return DetectorContext(self.live_segments or None, priors, stalled)
