"""State and rules time per segment at 10k, 100k and 1M tracked segments (no Spark).

    python benchmarks/bench_segments.py [--sizes 1000,10000,100000,1000000] [--seed 1]

What one executor holds and does per simulated minute for N tracked segments of the
``country,ad_format,app_id`` set:

1. state: each segment's two state values as the job stores them (``SegmentState.to_bytes()``
   of warmed-up rules, ``OpenWindows.to_bytes()`` with the next minute's window open and its
   trace samples), their sizes, and the process RSS growth of holding N of them in a dict
   keyed by segment id (a stand-in for the state store's in-memory map; tracemalloc's count of
   the bytes allocated beside it, which RSS at small N hides in the allocator's free pages);
2. rules time per simulated minute: for each of the N segments, one closed window through
   ``RuleEngine.detect`` with the alert budget over N live segments (``for_live_segments``),
   and the same with the state decoded from and encoded back to bytes (as the job's state step).

The anchor is the 1,000-segment row of the same run (time per segment should not grow with N).
The last line is machine-readable: ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc

import numpy as np

from adwatch.contracts import SegmentWindow, segment_id
from adwatch_detector.rules import RuleEngine, RuleSettings, SegmentState
from adwatch_detector.windowing import OpenWindows, PartialWindow
from adwatch_dev.measure import rss_mb
from adwatch_dev.simulate import sample_counts, to_windows

MIN = 60_000
FORMATS = ("banner", "interstitial", "rewarded_video", "native")


def dims_of(i: int) -> dict[str, str]:
    """Segment i of country x ad_format x app_id (distinct for every i)."""
    return {"country": f"C{i % 97:02d}"[:3], "ad_format": FORMATS[i % 4], "app_id": f"com.example.app{i:07d}"}


def warm_state(engine: RuleEngine, rng: np.random.Generator, minutes: int = 240) -> tuple[SegmentState, int]:
    """A segment's rule state after ``minutes`` of mid-size traffic (past warm-up), and its last window."""
    n, c, r, o = sample_counts(rng, np.full(minutes, 120.0), np.full(minutes, 0.02), np.full(minutes, 2.0))
    windows = list(to_windows("US", "banner", 0, n, c, r, o))
    state, _ = engine.detect(None, windows, 0)
    return state, windows[-1].window_start_ms


def open_windows_of(last_window_ms: int) -> OpenWindows:
    """The windowing state of a tracked segment mid-minute: the next window open, 4 trace samples."""
    part = PartialWindow(
        counts=[118, 2, 0, 0],
        revenue_usd=0.24,
        orphan_clicks=0,
        traceparents=[f"00-{'%032x' % (k + 1)}-{'%016x' % (k + 7)}-01" for k in range(4)],
    )
    return OpenWindows(
        windows={last_window_ms + MIN: part},
        closed_until_ms=last_window_ms + MIN,
        last_event_ms=last_window_ms + MIN + 30_000,
        volume=120.0,
        windows_closed=240,
        tracked=True,
    )


def measure(n: int, engine0: RuleEngine, template: bytes, last_ms: int, windows_blob: bytes) -> dict[str, float]:
    engine = engine0.for_live_segments(n)
    ids = [segment_id(dims_of(i)) for i in range(n)]
    gc.collect()
    before = rss_mb()
    tracemalloc.start()
    store: dict[str, tuple[bytes, bytes]] = {}
    for sid in ids:  # distinct objects per segment, as a store would hold them
        store[sid] = (bytes(bytearray(template)), bytes(bytearray(windows_blob)))
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held = rss_mb() - before
    sample = min(n, 10_000)
    mark = rss_mb()
    states = [SegmentState.from_bytes(store[sid][0]) for sid in ids[:sample]]
    decoded_mb = rss_mb() - mark
    del states
    rng = np.random.default_rng(n)
    imps = rng.poisson(120.0, n).tolist()
    clicks = rng.binomial(imps, 0.02).tolist()
    start = last_ms + MIN
    windows = [
        SegmentWindow(
            window_start_ms=start,
            window_end_ms=start + MIN,
            dimensions=dims_of(i),
            segment_id=ids[i],
            impressions=imps[i],
            clicks=clicks[i],
            revenue_usd=imps[i] * 0.002,
            event_counts={"impression": imps[i], "click": clicks[i]},
        )
        for i in range(n)
    ]
    # rules only: decoded states in, alerts out (decoding measured below)
    decoded = [SegmentState.from_bytes(store[sid][0]) for sid in ids]
    alerts = 0
    t0 = time.perf_counter()
    for state, window in zip(decoded, windows, strict=True):
        _, new = engine.detect(state, [window], 0)
        alerts += len(new)
    rules_s = time.perf_counter() - t0
    del decoded
    gc.collect()
    # the job's state step: both values decoded, the window closed through the rules, both encoded back
    t0 = time.perf_counter()
    for sid, window in zip(ids, windows, strict=True):
        rules_bytes, open_bytes = store[sid]
        state = SegmentState.from_bytes(rules_bytes)
        open_windows = OpenWindows.from_bytes(open_bytes)
        open_windows.windows.pop(window.window_start_ms, None)
        state, new = engine.detect(state, [window], 0)
        store[sid] = (state.to_bytes(), open_windows.to_bytes())
    step_s = time.perf_counter() - t0
    out = {
        "segments": n,
        "python_bytes_per_segment": round(traced / n, 0),
        "rss_held_mb": round(held, 1),
        "rss_per_segment_b": round(held * 1024 * 1024 / n, 0),
        "decoded_rss_per_segment_b": round(decoded_mb * 1024 * 1024 / sample, 0),
        "rules_s_per_minute": round(rules_s, 3),
        "rules_us_per_segment": round(1e6 * rules_s / n, 1),
        "step_s_per_minute": round(step_s, 3),
        "step_us_per_segment": round(1e6 * step_s / n, 1),
        "alerts": alerts,
        "rss_mb": round(rss_mb(), 0),
    }
    del store, windows
    gc.collect()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="segment counts, the first is the anchor")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-rss-mb", type=float, default=12_000, help="skip a size expected to pass this RSS")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    engine = RuleEngine.build(RuleSettings())
    state, last_ms = warm_state(engine, np.random.default_rng(args.seed))
    template = state.to_bytes()
    windows_blob = open_windows_of(last_ms).to_bytes()
    bare = OpenWindows(
        closed_until_ms=last_ms + MIN, last_event_ms=last_ms, volume=120.0, windows_closed=240
    ).to_bytes()
    print(
        f"state bytes per segment: SegmentState {len(template)} B (warmed up, default rules) + OpenWindows "
        f"{len(windows_blob)} B (one open window, 4 trace samples; {len(bare)} B with none open) = "
        f"{len(template) + len(windows_blob)} B"
    )
    results = []
    for n in sizes:
        per = results[-1]["rss_per_segment_b"] + results[-1]["decoded_rss_per_segment_b"] if results else 4000
        if n * per / 1e6 + rss_mb() > args.max_rss_mb:
            print(f"{n:>9,} segments: skipped (expected RSS past {args.max_rss_mb:,.0f} MB)")
            continue
        r = measure(n, engine, template, last_ms, windows_blob)
        results.append(r)
        print(
            f"{n:>9,} segments: state held {r['rss_held_mb']:,.1f} MB RSS ({r['rss_per_segment_b']:.0f} B/segment as "
            f"bytes, {r['python_bytes_per_segment']:.0f} B allocated with its key; decoded {r['decoded_rss_per_segment_b']:.0f} B/segment); rules {r['rules_s_per_minute']:.2f} s "
            f"per simulated minute ({r['rules_us_per_segment']:.1f} us/segment), with the state round trip "
            f"{r['step_s_per_minute']:.2f} s ({r['step_us_per_segment']:.1f} us/segment); process RSS {r['rss_mb']:,.0f} MB",
            flush=True,
        )
    anchor = results[0] if results else None
    summary = {
        "state_bytes": len(template),
        "open_windows_bytes": len(windows_blob),
        "anchor_segments": anchor["segments"] if anchor else None,
        "python": sys.version.split()[0],
        "sizes": results,
    }
    print("RESULT " + json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
