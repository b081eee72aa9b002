"""Orphan clicks (``click_without_impression``) against each segment's own baseline, default rule set.

    python benchmarks/bench_orphans.py [--days N]

Per segment-day of steady traffic (600 impressions/min, CTR 2%) with an orphan-click trickle:
false alerts of the rule (wandering 3-8/min; bursty gamma-Poisson, mean 5, rate CV 0.7; none at
all), then floods: minutes to detect and the severity of the first firing. The engine as the
service runs it (the budget of 256 tests per window, state through its checkpoint bytes).
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from adwatch.contracts import Alert, SegmentWindow
from adwatch_detector.rules import RuleSettings, SegmentState, detect_windows
from adwatch_dev.simulate import orphan_trickle, orphan_windows

MIN = 60_000
RULES = RuleSettings()


def firing(ws: list[SegmentWindow], batch: int = 30) -> list[Alert]:
    state: SegmentState | None = None
    out: list[Alert] = []
    for i in range(0, len(ws), batch):
        state, new = detect_windows(state, ws[i : i + batch], RULES, 0)
        state = SegmentState.from_bytes(state.to_bytes())
        out += [a for a in new if a.alert_type == "click_without_impression" and a.status == "firing"]
    return out


def trickles(rng: np.random.Generator, minutes: int) -> dict[str, np.ndarray]:
    return {
        "wandering 3-8/min": orphan_trickle(rng, minutes),
        "bursty mean 5/min (CV 0.7)": rng.poisson(rng.gamma(2.0, 2.5, minutes)),
        "none": np.zeros(minutes, dtype=int),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="segment-days per trickle")
    args = parser.parse_args()
    false: Counter[str] = Counter()
    for day in range(args.days):
        rng = np.random.default_rng(1000 + day)
        for name, orphans in trickles(rng, 1440).items():
            false[name] += len(firing(orphan_windows(orphans, rng)))
    print(f"false alerts over {args.days} segment-days each:")
    for name, count in false.items():
        print(f"  {name:28s} {count:4d}  ({count / args.days:.3f}/segment-day)")
    floods = [("300/min on a trickle of 3", 3, 300), ("25/min on a trickle of 3", 3, 25), ("6/min on none", 0, 6)]
    for name, base, flood in floods:
        delays, severities = [], Counter()
        for run in range(args.days):
            rng = np.random.default_rng(5000 + run)
            orphans = np.concatenate([rng.poisson(base, 240), rng.poisson(flood, 30), rng.poisson(base, 30)])
            alerts = firing(orphan_windows(orphans, rng), batch=1)
            if alerts:
                delays.append(alerts[0].window_start_ms // MIN - 240)
                severities[alerts[0].severity] += 1
        print(
            f"{name:28s} detected {len(delays)}/{args.days}, minutes to detect max {max(delays, default=-1)}, "
            f"severity {dict(severities)}"
        )


if __name__ == "__main__":
    main()
