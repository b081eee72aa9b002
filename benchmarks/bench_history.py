"""History-write benchmark: the detector's ClickHouse inserts with the per-batch deduplication
token (exactly once) beside the same inserts without it, and a replayed batch (dropped by its
token), on the embedded engine (chdb) in one run.

Run: ``.venv/bin/python benchmarks/bench_history.py [--batches 300 --segments 64]``.
Each "batch" is what one micro-batch writes: one window per segment into ``ad_metrics``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import cast

from adwatch.contracts import AdFormat, SegmentWindow
from adwatch.storage import make_clickhouse
from adwatch_detector.migrations import Tables, metrics_ddl, migrate
from adwatch_detector.sinks import window_row

COUNTRIES = ("US", "DE", "FR", "GB", "BR", "IN", "JP", "ES", "IT", "MX", "CA", "AU", "KR", "NL", "SE", "PL")
FORMATS = ("banner", "interstitial", "rewarded_video", "native")


def batch(i: int, segments: int) -> list[dict[str, object]]:
    rows = []
    for s in range(segments):
        country, fmt = COUNTRIES[s % len(COUNTRIES)], FORMATS[(s // len(COUNTRIES)) % len(FORMATS)]
        w = SegmentWindow(
            window_start_ms=i * 60_000,
            window_end_ms=(i + 1) * 60_000,
            country=country,
            ad_format=cast(AdFormat, fmt),
            impressions=1000 + s,
            clicks=20,
            revenue_usd=2.0,
        )
        rows.append(window_row(f"{country}|{fmt}|{s}", w, written_at_ms=i))
    return rows


def run(folder: Path, batches: int, segments: int, token: bool, replay: bool) -> tuple[float, int]:
    ch = make_clickhouse(f"chdb://{folder}")
    if token:
        migrate(ch, Tables("ad_metrics", "ad_alerts"))
    else:
        ch.command(metrics_ddl("ad_metrics"))  # round 1: no deduplication window
    started = time.perf_counter()
    for i in range(batches):
        rows = batch(i, segments)
        dedup = f"bench:{i}:ad_metrics" if token else None
        ch.insert_json_rows("ad_metrics", rows, dedup_token=dedup)
        if replay:
            ch.insert_json_rows("ad_metrics", rows, dedup_token=dedup)  # the batch written again by its replay
    elapsed = time.perf_counter() - started
    ((count,),) = ch.query("SELECT count() FROM ad_metrics")
    ch.close()
    return elapsed, int(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--segments", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cases = {
        "no token (round 1, at-least-once)": (False, False),
        "token (exactly once)": (True, False),
        "token, every batch replayed once": (True, True),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="adwatch-bench-history-") as tmp:
        for r in range(args.rounds):  # alternate the cases: the machine's load hits each alike
            for k, (name, (token, replay)) in enumerate(cases.items()):
                seconds, counts[name] = run(Path(tmp) / f"{r}-{k}", args.batches, args.segments, token, replay)
                results[name].append(seconds)
    reference = statistics.median(results["no token (round 1, at-least-once)"])
    print(f"{args.batches} batches x {args.segments} windows, median of {args.rounds} rounds")
    print(f"{'case':40} {'batches/s':>10} {'ratio':>6} {'rows':>7}")
    for name, seconds in results.items():
        med = statistics.median(seconds)
        print(f"{name:40} {args.batches / med:10.1f} {reference / med:6.2f} {counts[name]:7d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
