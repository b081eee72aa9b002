"""NAB benchmark: run adwatch's univariate detector causally over a NAB corpus and score it.

    python benchmarks/nab.py [--data DIR] [--labels FILE] [--profiles FILE] [--out DIR]

Writes one CSV per data file (timestamp,value,anomaly_score) under --out and prints the three
normalised scores (standard, reward_low_FP_rate, reward_low_FN_rate) after NAB's threshold sweep,
implemented as ../shared/nab/SCORING.md says (adwatch_dev.nab).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from adwatch_dev.nab import PROFILES, Profile, file_rows, file_score, sweep
from adwatch_dev.univariate import score_series

SHARED = Path(__file__).resolve().parents[2] / "shared" / "nab"


def load_profiles(path: Path | None) -> tuple[Profile, ...]:
    if path is None or not path.exists():
        return PROFILES
    data = json.loads(path.read_text())
    return tuple(
        Profile(
            name,
            float(c["CostMatrix"]["tpWeight"]),
            float(c["CostMatrix"]["fpWeight"]),
            float(c["CostMatrix"]["fnWeight"]),
        )
        for name, c in data.items()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--labels", type=Path, default=SHARED / "labels" / "combined_windows.json")
    parser.add_argument("--profiles", type=Path, default=SHARED / "config" / "profiles.json")
    parser.add_argument("--out", type=Path, default=None, help="write per-file score CSVs here")
    args = parser.parse_args(argv)

    labels: dict[str, list[list[str]]] = json.loads(args.labels.read_text())
    profiles = load_profiles(args.profiles)
    started = time.perf_counter()
    rows, per_file_windows, offset, n_rows = [], [], 0, 0
    for name in sorted(labels):
        path = args.data / name
        if not path.exists():
            print(f"missing data file {name}", file=sys.stderr)
            continue
        frame = pd.read_csv(path)
        stamps = pd.to_datetime(frame["timestamp"])
        scores = score_series(frame["value"].to_numpy(dtype=float))
        index = {ts: i for i, ts in enumerate(stamps)}
        windows = []
        for start, end in labels[name]:
            lo, hi = pd.Timestamp(start), pd.Timestamp(end)
            if lo not in index or hi not in index:
                raise SystemExit(f"{name}: window {start}..{end} does not match row timestamps")
            windows.append((index[lo], index[hi]))
        rows.append(file_rows(scores, windows, offset))
        per_file_windows.append((name, list(range(offset, offset + len(windows)))))
        offset += len(windows)
        n_rows += len(scores)
        if args.out:
            target = args.out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"timestamp": frame["timestamp"], "value": frame["value"], "anomaly_score": scores}).to_csv(
                target, index=False
            )
    elapsed = time.perf_counter() - started
    print(f"files {len(rows)}  rows {n_rows}  windows {offset}  detector+IO {elapsed:.1f}s")
    print(f"{'profile':<22}{'threshold':>10}{'raw':>10}{'score':>8}")
    for profile in profiles:
        result = sweep(rows, offset, profile)
        check = sum(
            file_score(r, w, result.threshold, profile) for r, (_, w) in zip(rows, per_file_windows, strict=True)
        )
        assert abs(check - result.raw) < 1e-6, (check, result.raw)
        print(f"{profile.name:<22}{result.threshold:>10.4f}{result.raw:>10.2f}{result.normalized:>8.1f}")
    _ = np  # numpy is used through the scorer
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
