"""Detection quality on simulated traffic with known ground truth (no Kafka, no Spark).

    python benchmarks/quality.py [--days 7] [--seed 42] [--rate 80]

Traffic: the generator's TrafficModel (adwatch_generator) gives the expected impressions, clicks,
revenue and orphan clicks per segment and minute, scenarios included (adwatch_dev.measure); each segment-minute is then
sampled at the window level (gamma noise with the model's CVs, Poisson impressions, binomial clicks,
log-normal prices, Poisson orphans: adwatch_dev.simulate) -- generating every single event
for 7 days would take far longer and give the same window counts. Both rule sets run over the same
windows. Reports: false alerts/day on a clean run; recall, precision and median time to detect (in
windows) on a run with injected anomalies of every type and a few magnitudes. An anomaly is
"carriable" when its segment's volume can show it within 3 windows at the rules' thresholds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from adwatch.contracts import Alert, SegmentWindow
from adwatch_detector.rules import RuleSettings, detect_windows
from adwatch_dev.measure import ExpectedVolumes, expected_volumes
from adwatch_dev.simulate import sample_counts, to_windows
from adwatch_generator.catalog import SEGMENTS
from adwatch_generator.scenarios import Scenario, make_scenario
from adwatch_generator.traffic import TrafficModel

MIN = 60_000
DAY = 86_400_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z
GRACE_WINDOWS = 3
MAGNITUDES = {
    "ctr_drop": (0.4, 0.6),
    "ctr_spike": (3.0, 2.0),
    "traffic_spike": (3.0, 2.0),
    "ecpm_drop": (0.5, 0.7),
    "click_flood_without_impressions": (1.0,),
    "traffic_drop": (0.1, 0.0),
}


def make_scenarios(days: int, rng: np.random.Generator) -> list[Scenario]:
    """Every type x magnitude on a top, a mid and a tail segment; 30-minute anomalies, well apart."""
    ranked = sorted(SEGMENTS, key=lambda s: -s.share)
    picks = [ranked[0], ranked[3], ranked[10], ranked[25], ranked[45]]
    plan = [(kind, m, seg.key) for kind, ms in MAGNITUDES.items() for m in ms for seg in picks]
    rng.shuffle(plan)  # type: ignore[arg-type]
    usable = days * DAY - 8 * 3_600_000
    plan = plan[: max(1, usable // (90 * MIN))]  # keep anomalies 90+ minutes apart
    gap = usable // max(len(plan), 1) // MIN * MIN
    return [
        make_scenario(
            kind,
            segments=[key],
            start_ms=START_MS + 6 * 3_600_000 + i * gap + int(rng.integers(0, 60)) * MIN,
            duration_ms=30 * MIN,
            magnitude=m,
        )
        for i, (kind, m, key) in enumerate(plan)
    ]


def simulate(
    model: TrafficModel, days: int, scenarios: list[Scenario], seed: int
) -> tuple[dict[str, list[SegmentWindow]], ExpectedVolumes]:
    """Windows per segment key, sampled from the model's expected volumes."""
    expected = expected_volumes(model, START_MS, START_MS + days * DAY, scenarios)
    rng = np.random.default_rng(seed)
    sigma = np.array([s.ecpm_sigma for s in model.segments])[:, None]
    imps, clicks, revenue, orphans = sample_counts(
        rng,
        expected.impressions,
        expected.ctr,
        expected.ecpm,
        expected.orphan_clicks,
        traffic_cv=model.traffic_cv,
        ctr_cv=model.ctr_cv,
        ecpm_cv=model.ecpm_cv,
        price_sigma=sigma,
    )
    out: dict[str, list[SegmentWindow]] = {}
    for row, seg in enumerate(model.segments):
        counts = (imps[row], clicks[row], revenue[row], orphans[row])
        out[seg.key] = list(to_windows(seg.country, seg.ad_format, START_MS, *counts))
    return out, expected


def detect(windows: dict[str, list[SegmentWindow]], rules: RuleSettings) -> tuple[list[Alert], float]:
    alerts: list[Alert] = []
    started = time.perf_counter()
    for segment_windows in windows.values():
        _, new = detect_windows(None, segment_windows, rules, 0)
        alerts += new
    return alerts, time.perf_counter() - started


def carriable(sc: Scenario, expected, rules: RuleSettings) -> bool:  # type: ignore[no-untyped-def]
    """Can the segment's volume show this anomaly within 3 windows at the rules' thresholds?"""
    row = expected.row(sc.segments[0])
    col = int((sc.start_ms - START_MS) // MIN)
    n = float(expected.impressions[row, max(col - 1, 0)])
    p = float(expected.ctr[row, max(col - 1, 0)])
    z, h, m = rules.z_threshold, rules.cusum_h, sc.magnitude
    if sc.kind in ("traffic_spike", "traffic_drop"):
        phi = 0.0064
        return n >= rules.rules["traffic"].min_expected_count and n * abs(m - 1) / math.sqrt(n * (1 + phi * n)) >= z + 1
    if sc.kind in ("ctr_drop", "ctr_spike"):
        kl = n * p * (m * math.log(m) - m + 1)  # expected log-likelihood ratio per window
        return 3 * kl >= 1.5 * h
    if sc.kind == "ecpm_drop":
        sd = math.sqrt(0.25 / max(n, 1) + 0.03**2)
        return n >= rules.rules["ecpm_drop"].min_impressions and abs(math.log(m)) / sd >= z + 1
    return True


@dataclass
class Quality:
    recall_all: float
    recall_carriable: float
    caught_in_3: float
    precision: float
    median_ttd: float
    n_truth: int
    n_carriable: int
    n_alerts: int
    missed: list[str]


def score(alerts: list[Alert], scenarios: list[Scenario], expected, rules: RuleSettings) -> Quality:  # type: ignore[no-untyped-def]
    firing = [a for a in alerts if a.status == "firing"]
    by_segment: dict[str, list[Alert]] = defaultdict(list)
    for a in firing:
        by_segment[f"{a.country}|{a.ad_format}"].append(a)
    related: set[str] = set()
    hits, ttds, carried, carried_hits, fast, missed = 0, [], 0, 0, 0, []
    for sc in scenarios:
        seg = sc.segments[0]
        lo, hi = sc.start_ms // MIN * MIN, sc.end_ms + GRACE_WINDOWS * MIN  # the window holding the start counts
        during = [a for a in by_segment[seg] if lo <= a.window_start_ms < hi]
        related.update(a.alert_id for a in during)
        match = [a for a in during if a.alert_type == sc.expected_alert_type]
        can = carriable(sc, expected, rules)
        carried += can
        if match:
            hits += 1
            ttd = (min(a.window_start_ms for a in match) - lo) // MIN + 1
            ttds.append(ttd)
            carried_hits += can
            fast += can and ttd <= 3
        elif can:
            missed.append(f"{sc.kind} x{sc.magnitude} {seg}")
    n = len(scenarios)
    return Quality(
        recall_all=hits / n if n else 0.0,
        recall_carriable=carried_hits / carried if carried else 0.0,
        caught_in_3=fast / carried if carried else 0.0,
        precision=len(related) / len(firing) if firing else 1.0,
        median_ttd=statistics.median(ttds) if ttds else float("nan"),
        n_truth=n,
        n_carriable=carried,
        n_alerts=len(firing),
        missed=missed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate", type=float, default=80.0, help="events/s of the whole generator")
    args = parser.parse_args(argv)
    model = TrafficModel(seed=args.seed, rate=args.rate)
    rng = np.random.default_rng(args.seed)
    scenarios = make_scenarios(args.days, rng)
    t0 = time.perf_counter()
    clean, _ = simulate(model, args.days, [], args.seed + 1)
    dirty, expected = simulate(model, args.days, scenarios, args.seed + 2)
    n_windows = sum(len(v) for v in clean.values())
    print(
        f"simulated {args.days} days x {len(model.segments)} segments at {args.rate:g} events/s: "
        f"{n_windows} non-empty clean windows, {len(scenarios)} injected anomalies ({time.perf_counter() - t0:.1f}s)"
    )
    for rules in (RuleSettings(), RuleSettings(rule_set="classic")):
        false_alerts, elapsed = detect(clean, rules)
        n_false = len([a for a in false_alerts if a.status == "firing"])
        alerts, _ = detect(dirty, rules)
        q = score(alerts, scenarios, expected, rules)
        print(
            f"\n[{rules.rule_set}] clean run: {n_false} false alerts = {n_false / args.days:.2f}/day "
            f"across all segments ({n_windows / elapsed:,.0f} windows/s)"
        )
        print(
            f"[{rules.rule_set}] injected: recall {q.recall_all:.0%} of {q.n_truth}; carriable {q.n_carriable}: "
            f"recall {q.recall_carriable:.0%}, caught within 3 windows {q.caught_in_3:.0%}; "
            f"precision {q.precision:.0%} of {q.n_alerts} alerts; median time to detect {q.median_ttd} windows"
        )
        if q.missed:
            print(f"[{rules.rule_set}] missed carriable: {', '.join(q.missed[:12])}")
        by_type: dict[str, list[str]] = defaultdict(list)
        for a in false_alerts:
            if a.status == "firing":
                by_type[a.alert_type].append(f"{a.country}|{a.ad_format}")
        if by_type:
            print(
                f"[{rules.rule_set}] false alerts by type: "
                + ", ".join(f"{k} {len(v)}" for k, v in sorted(by_type.items()))
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
