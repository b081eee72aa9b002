"""Speed and footprint of the pure detection step (adwatch_detector.rules.detect_windows).

    python benchmarks/bench_detection.py [--windows 200000] [--segments 100000]

1. segment-windows/s of detect_windows alone (state decoded from and encoded to bytes per call,
   as the Spark job does), on a mix of big and small segments;
2. SegmentState bytes per segment and process RSS growth for --segments warmed-up segment states.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from adwatch_detector.rules import RuleSettings, SegmentState, detect_windows
from adwatch_dev.measure import rss_mb
from adwatch_dev.simulate import sample_counts, to_windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=200_000)
    parser.add_argument("--segments", type=int, default=100_000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    minutes = 1000
    sizes = [620.0, 150.0, 25.0, 3.0]
    streams = []
    for i, imps in enumerate(sizes):
        n, c, r, o = sample_counts(rng, np.full(minutes, imps), np.full(minutes, 0.01), np.full(minutes, 2.0))
        streams.append(list(to_windows("US", ("banner", "native", "interstitial", "rewarded_video")[i], 0, n, c, r, o)))
    for rules in (RuleSettings(), RuleSettings(rule_set="classic")):
        done, started = 0, time.perf_counter()
        while done < args.windows:
            for windows in streams:
                data: bytes | None = None
                for start in range(0, len(windows), 5):  # micro-batches of 5 windows per segment
                    state, _ = detect_windows(SegmentState.from_bytes(data), windows[start : start + 5], rules, 0)
                    data = state.to_bytes()
                done += len(windows)
        elapsed = time.perf_counter() - started
        print(
            f"[{rules.rule_set}] detect_windows: {done / elapsed:,.0f} segment-windows/s "
            f"({1e6 * elapsed / done:.1f} us/window, bytes round trip included)"
        )

    # footprint: one warmed-up state per segment, kept as bytes (what Spark's state store holds)
    rules = RuleSettings()
    warm, _ = detect_windows(None, streams[0][:120], rules, 0)
    template = warm.to_bytes()
    before = rss_mb()
    states = [SegmentState.from_bytes(template) for _ in range(args.segments)]
    as_objects = rss_mb() - before
    blobs = [s.to_bytes() for s in states]
    del states
    print(
        f"SegmentState: {len(template)} bytes encoded per segment; {args.segments:,} segments: "
        f"{sum(map(len, blobs)) / 1e6:.1f} MB as bytes, +{as_objects:.0f} MB RSS as decoded objects "
        f"(process RSS {rss_mb():.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
