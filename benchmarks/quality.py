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

    python benchmarks/quality.py --segments [--days 7] [--apps 32] [--rate 2000] [--window-minutes 5] [--workers 2]

Segment-set mode (issue #13): the model's 64 country x format segments split over ``--apps`` apps
(Zipf popularity, a CTR and price level per app) as leaves ``country,ad_format,app_id``, plus every
parent of ``*;country;app_id;country,ad_format`` as the sum of its leaves: 2,161 tracked segments at
32 apps. Anomalies at five levels (a top app, a mid app, a country x format, a whole country, an app
in every country), every type. The rules run per segment (2 processes) with the alert budget over
the live segment count, then the alerts are folded per window as the job folds them (drill-down).
Reports published alerts not explained by an injected anomaly per day, recall (an anomaly counts as
caught by an alert of its type on its segment, or on an ancestor listing it as a contributor),
precision, by level and type; then the plain mode's 64-segment default-rules figure from the same run.
Windows of 5 minutes by default keep 7 days x 2,161 segments at ~4.4M segment-windows (a few
minutes on 2 cores); ``--window-minutes 1`` is the job's window and five times the work.

    python benchmarks/quality.py --segments --world b [--days 7] [--rate 2000] [--no-reference]

World b (issue #14, :mod:`adwatch_dev.world_b`): the same segment sets over a second traffic model
that differs from the generator's as real traffic does (13 other markets, two-peak days with deep
nights by time zone, weekend effects by format, wandering levels, single-minute bursts, apps and
cells dark at night, a holiday surge, an orphan-click trickle, CTR drift, whale bids): 52 cells x
40 apps = 2,080 leaves, 2,186 tracked segments. Anomalies at five levels (the top app of the top
country x format, a mid app, the top country x format, a whole country, an app in every country)
plus the issue's outage (traffic to 10 % for 30 min on the top country x format at 15:00 local).
Reports by alert type false alerts/day, recall (within 3 windows, before the anomaly ends),
precision, time to detect (median, p90) and to resolve, the outage lines, and the false alerts by
the world feature behind them (bursts, dark nights, ramps, weekend, holiday, whales...); then the
generator's world in the same run as the reference (unless ``--no-reference``), and one summary
line per world: ``world=b segments=<n> false_per_day=<x> recall=<x> precision=<x> ...``.
``--world b`` without ``--segments``: the plain mode on world b's 52 country x format cells (apps
summed, 80 events/s, 1-minute windows, both rule sets; false alerts from a clean run). A negative
time to resolve means the alert resolved before the anomaly ended.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from adwatch.contracts import Alert, SegmentWindow, segment_id
from adwatch_detector.backtest import fold_alerts
from adwatch_detector.evidence import BandPoint, band_point
from adwatch_detector.hierarchy import Hierarchy
from adwatch_detector.rules import RuleEngine, RuleSettings, detect_windows, load_rules
from adwatch_detector.rules.base import Check
from adwatch_detector.rules.engine import budget_tests
from adwatch_dev.measure import ExpectedVolumes, expected_volumes
from adwatch_dev.simulate import sample_counts, to_windows
from adwatch_dev.world_b import WorldB
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
    plan = [(kind, m, seg) for kind, ms in MAGNITUDES.items() for m in ms for seg in picks]
    rng.shuffle(plan)  # type: ignore[arg-type]
    usable = days * DAY - 8 * 3_600_000
    plan = plan[: max(1, usable // (90 * MIN))]  # keep anomalies 90+ minutes apart
    gap = usable // max(len(plan), 1) // MIN * MIN
    # named the scenario way (US|banner), then keyed by the model's segment id (the generator's
    # resolve_segments still splits ids on '|', and the model's keys are schema-2 segment ids now)
    return [
        dataclasses.replace(
            make_scenario(
                kind,
                segments=[f"{seg.country}|{seg.ad_format}"],
                start_ms=START_MS + 6 * 3_600_000 + i * gap + int(rng.integers(0, 60)) * MIN,
                duration_ms=30 * MIN,
                magnitude=m,
                universe=[f"{seg.country}|{seg.ad_format}"],
            ),
            segments=(seg.key,),
        )
        for i, (kind, m, seg) in enumerate(plan)
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
    return carriable_at(sc.kind, sc.magnitude, n, p, rules)


def carriable_at(kind: str, m: float, n: float, p: float, rules: RuleSettings) -> bool:
    """Whether ``n`` impressions a window at CTR ``p`` can show a ``kind`` x ``m`` within 3 windows."""
    z, h = rules.z_threshold, rules.cusum_h
    if kind in ("traffic_spike", "traffic_drop"):
        phi = 0.0064
        return n >= rules.rules["traffic"].min_expected_count and n * abs(m - 1) / math.sqrt(n * (1 + phi * n)) >= z + 1
    if kind in ("ctr_drop", "ctr_spike"):
        kl = n * p * (m * math.log(m) - m + 1)  # expected log-likelihood ratio per window
        return 3 * kl >= 1.5 * h
    if kind == "ecpm_drop":
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
        by_segment[a.segment_id].append(a)
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


# --- segment-set mode: >= 2,000 tracked segments in a hierarchy, drill-down folding ---------

SEGMENT_SETS = "*;country;app_id;country,ad_format;country,ad_format,app_id"
LEAF_SET = ("country", "ad_format", "app_id")
SEG_MAGNITUDES: dict[str, tuple[float, ...]] = MAGNITUDES  # the plain mode's types and magnitudes
EXPECTED_TYPE = {
    "ctr_drop": "ctr_drop",
    "ctr_spike": "ctr_spike",
    "traffic_spike": "traffic_spike",
    "traffic_drop": "traffic_drop",
    "ecpm_drop": "ecpm_drop",
    "click_flood_without_impressions": "click_without_impression",
}


@dataclass(frozen=True)
class Injected:
    """One anomaly on one segment of any set (its dimensions), over [start_ms, end_ms)."""

    kind: str
    magnitude: float
    level: str
    target: dict[str, str]
    start_ms: int
    end_ms: int

    @property
    def expected_type(self) -> str:
        return EXPECTED_TYPE[self.kind]

    @property
    def target_id(self) -> str:
        return segment_id(self.target)


@dataclass
class SegmentSim:
    """Sampled windows of every segment (rows: leaves first, then every parent), as arrays."""

    dims: list[dict[str, str]]
    ids: list[str]
    imps: np.ndarray  # rows x minutes, int32
    clicks: np.ndarray  # orphan clicks included, as the job counts them
    revenue: np.ndarray
    orphans: np.ndarray
    expected_imps: np.ndarray  # rows x minutes, noise-free (anomalies included)
    expected_clicks: np.ndarray
    window_ms: int = MIN
    features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # world b: rows x windows


def _consistent(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Whether two segments share traffic (no dimension with two different values)."""
    return all(b.get(k, v) == v for k, v in a.items())


def simulate_segments(
    model: TrafficModel,
    days: int,
    apps: int,
    injected: list[Injected],
    seed: int,
    window_minutes: int = 1,
    zipf: float = 1.1,
) -> SegmentSim:
    """Leaves country x format x app: each of the model's 64 segments split over ``apps`` apps
    (global Zipf popularity, per-segment jitter, an own CTR and price level per app), sampled per
    leaf-minute, summed to windows of ``window_minutes``; every parent of :data:`SEGMENT_SETS` is the
    sum of its leaves (a roll-up)."""
    rng = np.random.default_rng(seed)
    base = expected_volumes(model, START_MS, START_MS + days * DAY, [])
    minutes = base.impressions.shape[1]
    k = window_minutes
    n_win = minutes // k
    popularity = (np.arange(apps) + 1.0) ** -zipf
    app_ctr = rng.lognormal(0.0, 0.25, apps)
    app_ecpm = rng.lognormal(0.0, 0.2, apps)
    leaves: list[dict[str, str]] = []
    rows: list[tuple[int, int, float]] = []  # (model row, app, share)
    for r, seg in enumerate(model.segments):
        share = popularity * rng.lognormal(0.0, 0.5, apps)
        share /= share.sum()
        for a in range(apps):
            leaves.append({"country": seg.country, "ad_format": seg.ad_format, "app_id": f"app{a:03d}"})
            rows.append((r, a, float(share[a])))
    n_leaves = len(leaves)
    imps = np.zeros((n_leaves, n_win), dtype=np.int32)
    clicks = np.zeros_like(imps)
    orphans = np.zeros_like(imps)
    revenue = np.zeros((n_leaves, n_win), dtype=np.float64)
    exp_imps = np.zeros((n_leaves, n_win), dtype=np.float32)
    exp_clicks = np.zeros_like(exp_imps)
    sigma_of = [s.ecpm_sigma for s in model.segments]
    for r in range(len(model.segments)):
        sl = slice(r * apps, (r + 1) * apps)
        share = np.array([rows[i][2] for i in range(sl.start, sl.stop)])[:, None]
        n = base.impressions[r][None, :] * share
        ctr = np.broadcast_to(base.ctr[r][None, :] * app_ctr[:, None], n.shape).copy()
        ecpm = np.broadcast_to(base.ecpm[r][None, :] * app_ecpm[:, None], n.shape).copy()
        orph = np.zeros_like(n)
        for sc in injected:
            hit = [i - sl.start for i in range(sl.start, sl.stop) if _consistent(sc.target, leaves[i])]
            if not hit:
                continue
            h, c0, c1 = np.array(hit), *_minutes(sc)
            if not _scale_rates(sc, h, c0, c1, n, ctr, ecpm):
                # orphan clicks = magnitude x the target's normal clicks (at least 6 a minute)
                normal = _target_clicks(sc, base, model, rows, leaves, app_ctr)
                orph[h, c0:c1] += max(6.0, sc.magnitude * normal) * share[h] / _target_share(sc, rows, leaves)
        i, c, v, o = sample_counts(
            rng,
            n,
            np.clip(ctr, 0.0, 1.0),
            ecpm,
            orph,
            traffic_cv=model.traffic_cv,
            ctr_cv=model.ctr_cv,
            ecpm_cv=model.ecpm_cv,
            price_sigma=sigma_of[r],
        )
        imps[sl], clicks[sl], revenue[sl], orphans[sl] = (_per_window(x, n_win, k) for x in (i, c + o, v, o))
        exp_imps[sl] = _per_window(n, n_win, k)
        exp_clicks[sl] = _per_window(n * np.clip(ctr, 0.0, 1.0), n_win, k)
    dims, ids, stack = _roll_up(leaves)
    return SegmentSim(
        dims=dims,
        ids=ids,
        imps=stack(imps),
        clicks=stack(clicks),
        revenue=stack(revenue),
        orphans=stack(orphans),
        expected_imps=stack(exp_imps),
        expected_clicks=stack(exp_clicks),
        window_ms=k * MIN,
    )


def _roll_up(
    leaves: list[dict[str, str]],
) -> tuple[list[dict[str, str]], list[str], Callable[[np.ndarray], np.ndarray]]:
    """Every segment of :data:`SEGMENT_SETS` over the leaves: (dims, ids, stack), leaves first then
    the parents (fewest dimensions first); ``stack`` appends each parent's row as the sum of its leaves'."""
    hierarchy = Hierarchy.parse(SEGMENT_SETS)
    groups: dict[str, list[int]] = defaultdict(list)
    parent_dims: dict[str, dict[str, str]] = {}
    for i, leaf in enumerate(leaves):
        for names in hierarchy.sets:
            if set(names) == set(LEAF_SET):
                continue
            d = {k: leaf[k] for k in names}
            sid = segment_id(d)
            groups[sid].append(i)
            parent_dims[sid] = d
    order = sorted(groups, key=lambda sid: (len(parent_dims[sid]), sid))

    def stack(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.stack([a[groups[sid]].sum(axis=0) for sid in order])])

    return leaves + [parent_dims[sid] for sid in order], [segment_id(d) for d in leaves] + order, stack


def _per_window(a: np.ndarray, n_win: int, k: int) -> np.ndarray:
    summed: np.ndarray = a[:, : n_win * k].reshape(a.shape[0], n_win, k).sum(axis=2)
    return summed


def _target_share(sc: Injected, rows: list[tuple[int, int, float]], leaves: list[dict[str, str]]) -> float:
    return sum(rows[i][2] for i in range(len(leaves)) if _consistent(sc.target, leaves[i])) or 1.0


def _minutes(sc: Scenario) -> tuple[int, int]:
    """The scenario's [start, end) as minutes of the run."""
    return (sc.start_ms - START_MS) // MIN, (sc.end_ms - START_MS) // MIN


def _scale_rates(
    sc: Scenario, h: np.ndarray, c0: int, c1: int, n: np.ndarray, ctr: np.ndarray, ecpm: np.ndarray
) -> bool:
    """Apply a rate anomaly (CTR, traffic, eCPM) to rows ``h`` over minutes [c0, c1), in place;
    False for an orphan-click flood, which each world spreads its own way."""
    target = {"ctr_drop": ctr, "ctr_spike": ctr, "traffic_spike": n, "traffic_drop": n, "ecpm_drop": ecpm}.get(sc.kind)
    if target is None:
        return False
    target[h, c0:c1] *= sc.magnitude
    return True


def _target_clicks(sc, base, model, rows, leaves, app_ctr) -> float:  # type: ignore[no-untyped-def]
    col = (sc.start_ms - START_MS) // MIN
    return float(
        sum(
            base.impressions[r, col] * share * base.ctr[r, col] * app_ctr[a]
            for i, (r, a, share) in enumerate(rows)
            if _consistent(sc.target, leaves[i])
        )
    )


def plan_injected(model: TrafficModel, days: int, apps: int, rng: np.random.Generator) -> list[Injected]:
    """Every type x magnitude at five levels: a top app and a mid app of a top country x format,
    one country x format, one whole country, one app across all countries; 30 minutes each, 90+ apart."""
    ranked = sorted(model.segments, key=lambda s: -s.share)
    top, mid = ranked[0], ranked[5]
    targets = [
        (
            "app (top app of a top country x format)",
            {"country": top.country, "ad_format": top.ad_format, "app_id": "app000"},
        ),
        (
            "app (mid app of a mid country x format)",
            {"country": mid.country, "ad_format": mid.ad_format, "app_id": f"app{apps // 4:03d}"},
        ),
        ("country x format", {"country": ranked[2].country, "ad_format": ranked[2].ad_format}),
        ("country", {"country": ranked[9].country}),
        ("app across countries", {"app_id": "app001"}),
    ]
    return _plan(targets, days, rng)


def _plan(targets: list[tuple[str, dict[str, str]]], days: int, rng: np.random.Generator) -> list[Injected]:
    plan = [(kind, m, level, t) for kind, ms in SEG_MAGNITUDES.items() for m in ms for level, t in targets]
    order = rng.permutation(len(plan))
    plan = [plan[i] for i in order]
    usable = days * DAY - 8 * 3_600_000
    plan = plan[: max(1, usable // (90 * MIN))]
    gap = usable // max(len(plan), 1) // MIN * MIN
    out = []
    for i, (kind, m, level, target) in enumerate(plan):
        start = START_MS + 6 * 3_600_000 + i * gap + int(rng.integers(0, 60)) * MIN
        out.append(Injected(kind, m, level, target, start, start + 30 * MIN))
    return out


# --- world b (adwatch_dev.world_b): the same segment sets on a second traffic model -------------


def plan_injected_b(world: WorldB, days: int, rng: np.random.Generator) -> list[Injected]:
    """Every type x magnitude at five levels of world b: the top app of the top country x format,
    a mid app of a mid one, the top country x format itself (the outage's "top segment"), a
    mid-sized whole country, one app in every country."""
    ranked = world.ranked()
    top, mid = ranked[0], ranked[len(ranked) // 4]
    top_app = int(np.argmax(world.app_share[top]))
    mid_app = int(np.argsort(-world.app_share[mid])[world.apps // 4])
    country = next(world.cells[r].country for r in ranked[8:] if world.cells[r].country != world.cells[top].country)
    cell = world.cells
    targets = [
        (
            "app (top app of the top country x format)",
            {"country": cell[top].country, "ad_format": cell[top].ad_format, "app_id": f"app{top_app:03d}"},
        ),
        (
            "app (mid app of a mid country x format)",
            {"country": cell[mid].country, "ad_format": cell[mid].ad_format, "app_id": f"app{mid_app:03d}"},
        ),
        ("country x format (the top one)", {"country": cell[top].country, "ad_format": cell[top].ad_format}),
        ("country", {"country": country}),
        ("app across countries", {"app_id": "app001"}),
    ]
    return _with_outage(_plan(targets, days, rng), world, days)


def _with_outage(plan: list[Injected], world: WorldB, days: int) -> list[Injected]:
    """The issue's outage on the top segment at a busy hour (local 15:00 of the third day) added, the
    plan's anomalies sharing its traffic within 90 minutes of it dropped."""
    top = world.cells[world.ranked()[0]]
    target = {"country": top.country, "ad_format": top.ad_format}
    day = min(2, days - 1)
    start = START_MS + day * DAY + int((15.0 - top.market.utc_offset_h) % 24 * 3_600_000)
    outage = Injected(
        "traffic_drop", 0.1, "outage (the top country x format, local 15:00)", target, start, start + 30 * MIN
    )
    margin = 90 * MIN
    kept = [
        sc
        for sc in plan
        if not (
            sc.start_ms < outage.end_ms + margin
            and outage.start_ms < sc.end_ms + margin
            and _consistent(sc.target, target)
        )
    ]
    return sorted([*kept, outage], key=lambda sc: sc.start_ms)


WORLD_B_FEATURES = ("smooth", "burst", "whale", "exp_revenue", "dark_edge", "holiday", "weekend_edge")


def _near_after(change: np.ndarray, before: int, after: int) -> np.ndarray:
    """Bool per minute: within ``after`` minutes after, or ``before`` minutes before, a True of ``change``."""
    c = np.cumsum(change, axis=-1)
    pad = np.concatenate(
        [np.zeros((*change.shape[:-1], after + 1)), c, np.repeat(c[..., -1:], before, axis=-1)], axis=-1
    )
    n = change.shape[-1]
    hi = pad[..., after + 1 + before : after + 1 + before + n]
    lo = pad[..., :n]
    out: np.ndarray = (hi - lo) > 0
    return out


def simulate_segments_b(
    world: WorldB, injected: list[Injected], seed: int, window_minutes: int = 1, cells_only: bool = False
) -> SegmentSim:
    """World b's leaves (country x format x app) with the anomalies applied to their expectation,
    sampled per leaf-minute, summed to windows, rolled up to every parent; plus, per segment and
    window, how much of its traffic a world feature touches (bursts, whales, dark edges...).
    ``cells_only``: the country x format cells alone (their apps summed), as the plain mode tracks."""
    rng = np.random.default_rng(seed)
    k, apps = window_minutes, world.apps
    n_win = world.minutes // k
    leaves = world.leaves
    n_leaves = len(leaves)
    n_cells = len(world.cells)
    # a flood's orphan clicks: magnitude x the target's normal clicks at its start (at least 6 a minute)
    flood_clicks: dict[int, float] = defaultdict(float)
    floods = [j for j, sc in enumerate(injected) if sc.kind == "click_flood_without_impressions"]
    for r in range(n_cells):
        hit_any = [j for j in floods if any(_consistent(injected[j].target, leaves[r * apps + a]) for a in range(apps))]
        if not hit_any:
            continue
        e = world.cell(r)
        for j in hit_any:
            sc = injected[j]
            col = (sc.start_ms - START_MS) // MIN
            h = [a for a in range(apps) if _consistent(sc.target, leaves[r * apps + a])]
            flood_clicks[j] += float((e.impressions[h, col] * e.ctr[h, col]).sum())
    shape = (n_cells if cells_only else n_leaves, n_win)
    out = {name: np.zeros(shape, dtype=np.int32) for name in ("imps", "clicks", "orphans")}
    revenue = np.zeros(shape)
    exp_imps = np.zeros(shape, dtype=np.float32)
    exp_clicks = np.zeros_like(exp_imps)
    feats = {name: np.zeros(shape, dtype=np.float32) for name in WORLD_B_FEATURES}
    for r in range(n_cells):
        sl = slice(r, r + 1) if cells_only else slice(r * apps, (r + 1) * apps)
        e = world.cell(r)
        n, ctr, ecpm, orph = e.impressions.copy(), e.ctr.copy(), e.ecpm.copy(), e.orphans.copy()
        for j, sc in enumerate(injected):
            hit = [a for a in range(apps) if _consistent(sc.target, leaves[r * apps + a])]
            if not hit:
                continue
            h, c0, c1 = np.array(hit), *_minutes(sc)
            if not _scale_rates(sc, h, c0, c1, n, ctr, ecpm):
                # spread over the target's leaves by their clicks at the start
                normal = max(flood_clicks[j], 1e-9)
                mine = e.impressions[h, c0] * e.ctr[h, c0]
                orph[h, c0:c1] += (max(6.0, sc.magnitude * normal) * mine / normal)[:, None]
        ctr = np.clip(ctr, 0.0, 1.0)
        i, c, v, o, whale = world.sample(rng, r, n, ctr, ecpm, orph)

        def win(a: np.ndarray, shape: tuple[int, ...] = e.smooth.shape) -> np.ndarray:
            w = _per_window(np.broadcast_to(a, shape), n_win, k)
            return w.sum(axis=0, keepdims=True) if cells_only else w

        out["imps"][sl], out["clicks"][sl], out["orphans"][sl] = (win(x) for x in (i, c + o, o))
        revenue[sl] = win(v)
        exp_imps[sl] = win(n)
        exp_clicks[sl] = win(n * ctr)
        lit = e.smooth  # (0 while dark)
        switch = np.zeros_like(e.dark)
        switch[:, 1:] = e.dark[:, 1:] != e.dark[:, :-1]
        # near a switch, weigh a dayparted app by half its mean lit level (it is 0 on the dark side)
        lit_mean = lit.sum(axis=1, keepdims=True) / np.maximum((~e.dark).sum(axis=1, keepdims=True), 1)
        wk = np.zeros_like(e.weekend)
        wk[:, 1:] = e.weekend[:, 1:] != e.weekend[:, :-1]
        per_min = {
            "smooth": e.smooth,
            "burst": e.impressions - e.smooth,
            "whale": whale,
            "exp_revenue": e.impressions * e.ecpm / 1000.0,
            "dark_edge": np.where(_near_after(switch, 5, 30), 0.5 * lit_mean, 0.0),
            "holiday": np.where(e.holiday > 1.001, lit, 0.0),
            "weekend_edge": np.where(_near_after(wk, 0, 60), lit, 0.0),
        }
        for name, a in per_min.items():
            feats[name][sl] = win(a)
    if cells_only:
        cells = [{"country": c.country, "ad_format": c.ad_format} for c in world.cells]
        return SegmentSim(
            dims=cells,
            ids=[segment_id(d) for d in cells],
            imps=out["imps"],
            clicks=out["clicks"],
            revenue=revenue,
            orphans=out["orphans"],
            expected_imps=exp_imps,
            expected_clicks=exp_clicks,
            window_ms=k * MIN,
            features=feats,
        )
    dims, ids, stack = _roll_up(leaves)
    return SegmentSim(
        dims=dims,
        ids=ids,
        imps=stack(out["imps"]),
        clicks=stack(out["clicks"]),
        revenue=stack(revenue),
        orphans=stack(out["orphans"]),
        expected_imps=stack(exp_imps),
        expected_clicks=stack(exp_clicks),
        window_ms=k * MIN,
        features={name: stack(a) for name, a in feats.items()},
    )


def run_plain_b(args: argparse.Namespace) -> int:
    """The plain mode on world b: its 52 country x format cells (apps summed) at ``--rate`` (80)
    events/s, 1-minute windows, both rule sets; false alerts from a clean run (by the world feature
    behind them), recall/precision/time to detect and resolve by type from a run with every type x
    magnitude on a top, a mid and three smaller cells, plus the outage on the top cell."""
    global _SIM
    t0 = time.perf_counter()
    wb = WorldB(seed=args.seed, rate=args.rate, start_ms=START_MS, days=args.days)
    ranked = wb.ranked()
    targets = [
        (
            f"cell #{i + 1}{' (top)' if i == 0 else ''}",
            {"country": wb.cells[r].country, "ad_format": wb.cells[r].ad_format},
        )
        for i, r in ((i, ranked[i]) for i in (0, 3, 10, 25, 45))
    ]
    rng = np.random.default_rng(args.seed)
    injected = _with_outage(_plan(targets, args.days, rng), wb, args.days)
    clean = simulate_segments_b(wb, [], args.seed + 1, 1, cells_only=True)
    dirty = simulate_segments_b(wb, injected, args.seed + 2, 1, cells_only=True)
    n_windows = int(((clean.imps > 0) | (clean.clicks > 0)).sum())
    print(
        f"[plain world=b] simulated {args.days} days x {len(clean.ids)} country x format cells of world b at "
        f"{args.rate:g} events/s: {n_windows:,} non-empty clean windows, {len(injected)} injected anomalies "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    index = {sid: i for i, sid in enumerate(clean.ids)}
    summary: dict[str, str] = {}
    for rules in (RuleSettings(), RuleSettings(rule_set="classic")):
        tag = f"[plain world=b {rules.rule_set}]"
        runs = []
        for sim in (clean, dirty):
            _SIM = sim
            alerts: list[Alert] = []
            for row in range(len(sim.ids)):
                _, new = detect_windows(None, _windows_of(row), rules, 0)
                alerts += new
            alerts.sort(key=lambda a: (a.window_start_ms, a.fingerprint, a.status))
            runs.append(alerts)
        false_clean = [a for a in runs[0] if a.status == "firing"]
        _PUBLISHED[:] = runs[1]
        q = score_segments(runs[1], [], injected, dirty, index, args.days, len(dirty.ids), n_windows, runs[1])
        q.false_alerts = false_clean
        caught_c = [k for k, v in q.carriable.items() if v and q.caught[k]]
        n_c = sum(q.carriable.values())
        print(
            f"{tag} clean run: {len(false_clean)} false alerts = {len(false_clean) / args.days:.2f}/day over "
            f"{len(clean.ids)} cells; injected: recall {sum(q.caught.values()) / len(q.caught):.0%} of {len(q.caught)}, "
            f"carriable {n_c}: {len(caught_c) / max(n_c, 1):.0%}; precision {q.precision:.0%}"
        )
        by_type = _report_by_type(tag, q, injected, runs[1], dirty, args.days)
        _SIM = clean
        _diagnose(tag, q, [], clean, index, args.days)
        if rules.rule_set == "default":
            summary = {
                "world": "b",
                "mode": "plain",
                "segments": str(len(clean.ids)),
                "false_per_day": f"{len(false_clean) / args.days:.2f}",
                "recall": f"{len(caught_c) / max(n_c, 1):.3f}",
                "precision": f"{q.precision:.3f}",
                **by_type,
            }
    print(" ".join(f"{k}={v}" for k, v in summary.items()) + f" seconds={time.perf_counter() - t0:.0f}")
    return 0


_PUBLISHED: list[Alert] = []  # the last segment run's published alerts (for the per-type precision)
_SIM: SegmentSim | None = None  # set before the pool forks: the workers read it
_RULES_FILE: str | None = None  # --rules of the segment mode (window_ms is the mode's)


def _seg_rules(window_ms: int) -> RuleSettings:
    return load_rules(_RULES_FILE).model_copy(update={"window_ms": window_ms})


def _windows_of(row: int) -> list[SegmentWindow]:
    sim = _SIM
    assert sim is not None
    size = sim.window_ms
    dims, sid = sim.dims[row], sim.ids[row]
    imps, clicks, rev, orph = sim.imps[row], sim.clicks[row], sim.revenue[row], sim.orphans[row]
    cols = np.flatnonzero((imps > 0) | (clicks > 0))
    out = []
    for c, n, k, r, o in zip(
        cols.tolist(), imps[cols].tolist(), clicks[cols].tolist(), rev[cols].tolist(), orph[cols].tolist(), strict=True
    ):
        t = START_MS + c * size
        out.append(
            SegmentWindow(
                window_start_ms=t,
                window_end_ms=t + size,
                dimensions=dims,
                segment_id=sid,
                impressions=n,
                clicks=k,
                revenue_usd=r,
                orphan_clicks=o,
                event_counts={"impression": n, "click": k},
            )
        )
    return out


def _detect_rows(task: tuple[list[int], dict[int, set[tuple[int, str]]], int]) -> tuple[list[Alert], list[BandPoint]]:
    """Rules over whole segments (one state each, as the job's), the evidence kept only at the
    windows where a parent of the segment fired (what the drill-down reads)."""
    rows, wanted, live = task
    assert _SIM is not None
    engine = RuleEngine.build(_seg_rules(_SIM.window_ms)).for_live_segments(live)
    alerts: list[Alert] = []
    bands: list[BandPoint] = []
    for row in rows:
        windows = _windows_of(row)
        want = wanted.get(row, set())
        starts = {s for s, _ in want}
        sid = _SIM.ids[row]

        def record(w: SegmentWindow, check: Check, sid: str = sid, want: set[tuple[int, str]] = want) -> None:
            if (w.window_start_ms, check.alert_type) in want:
                bands.append(band_point(sid, w, check))

        state = None
        i = 0
        while i < len(windows):  # runs of windows with and without wanted evidence
            keep = windows[i].window_start_ms in starts
            j = i
            while j < len(windows) and (windows[j].window_start_ms in starts) == keep:
                j += 1
            state, new = engine.detect(state, windows[i:j], 0, record if keep else None)
            alerts.extend(new)
            i = j
    return alerts, bands


@dataclass
class SegQuality:
    tracked: int
    windows: int
    raw_firing: int
    published_firing: int
    folded_firing: int
    false_alerts: list[Alert]
    caught: dict[str, bool]
    caught_folded: dict[str, bool]
    carriable: dict[str, bool]
    ttd: dict[str, int]
    precision: float
    explained: set[str] = dataclasses.field(default_factory=set)  # alert ids of firing alerts an anomaly explains
    first_hit: dict[str, Alert] = dataclasses.field(default_factory=dict)  # each caught anomaly's first alert


def run_segment_mode(args: argparse.Namespace) -> int:
    """The generator's world (and the 64-segment anchor), or world b and then the generator's as the reference."""
    if args.world == "generator":
        _segment_world(args, "generator")
        return 0
    b = _segment_world(args, "b", anchor=False)
    ref = _segment_world(args, "generator") if args.reference else {}
    for summary in (b, ref):
        if summary:
            print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


def _segment_world(args: argparse.Namespace, world: str, anchor: bool = True) -> dict[str, str]:
    global _SIM, _RULES_FILE
    _RULES_FILE = args.rules
    import multiprocessing

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    tag = "[segments]" if world == "generator" else "[segments world=b]"
    if world == "b":
        wb = WorldB(seed=args.seed, rate=args.rate, start_ms=START_MS, days=args.days)
        injected = plan_injected_b(wb, args.days, rng)
        sim = simulate_segments_b(wb, injected, args.seed + 3, args.window_minutes)
        what = (
            f"{len(wb.leaves):,} leaves country x format x app of world b ({len(wb.cells) // 4} markets x 4 formats x "
            f"{wb.apps} apps: two-peak days, deep nights, weekend by format, bursts, dark nights, holiday, whales)"
        )
    else:
        model = TrafficModel(seed=args.seed, rate=args.rate)
        injected = plan_injected(model, args.days, args.apps, rng)
        sim = simulate_segments(model, args.days, args.apps, injected, args.seed + 3, args.window_minutes)
        what = f"{sum(len(d) == 3 for d in sim.dims):,} leaves country x format x app, {args.apps} apps Zipf"
    hierarchy = Hierarchy.parse(SEGMENT_SETS)
    tracked = len(sim.ids)
    sim_s = time.perf_counter() - t0
    print(
        f"{tag} simulated {args.days} days x {tracked:,} segments in sets {SEGMENT_SETS!r} "
        f"({what}) at {args.rate:g} events/s, windows of {args.window_minutes} min; "
        f"{len(injected)} injected anomalies ({sim_s:.0f}s)"
    )
    _SIM = sim
    index = {sid: i for i, sid in enumerate(sim.ids)}
    by_depth: dict[int, list[int]] = defaultdict(list)
    for i, d in enumerate(sim.dims):
        by_depth[len(d)].append(i)
    fired_at: dict[str, set[tuple[int, str]]] = defaultdict(set)
    alerts: list[Alert] = []
    bands: list[BandPoint] = []
    t1 = time.perf_counter()
    n_windows = int(((sim.imps > 0) | (sim.clicks > 0)).sum())
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for depth in sorted(by_depth):  # parents first: children keep evidence where a parent fired
            rows = by_depth[depth]
            wanted = {}
            for row in rows:
                want: set[tuple[int, str]] = set()
                for parent in hierarchy.parents(sim.dims[row]):
                    want |= fired_at.get(segment_id(parent), set())
                if want:
                    wanted[row] = want
            n_chunks = max(1, min(len(rows), 8 * args.workers))
            chunks = [rows[k::n_chunks] for k in range(n_chunks)]
            tasks = [(c, {r: wanted[r] for r in c if r in wanted}, tracked) for c in chunks]
            for new_alerts, new_bands in pool.imap_unordered(_detect_rows, tasks):
                alerts += new_alerts
                bands += new_bands
                for a in new_alerts:
                    if a.status == "firing":
                        fired_at[a.segment_id].add((a.window_start_ms, a.alert_type))
    detect_s = time.perf_counter() - t1
    alerts.sort(key=lambda a: (a.window_start_ms, a.fingerprint, a.status))
    dims = {sid: sim.dims[i] for sid, i in index.items()}
    published, folded = fold_alerts(alerts, bands, hierarchy, dims)
    _PUBLISHED[:] = published
    q = score_segments(published, folded, injected, sim, index, args.days, tracked, n_windows, alerts)
    print(
        f"{tag} rules over {n_windows:,} segment-windows on {args.workers} workers: {detect_s:.0f}s "
        f"({n_windows / detect_s:,.0f} windows/s); alert budget over {tracked:,} live segments "
        f"(z threshold {_seg_rules(sim.window_ms).with_expected_segments(budget_tests(tracked, 4)).z_threshold:.2f})"
    )
    print(
        f"{tag} firing alerts: {q.raw_firing} raised, {q.published_firing} published after folding, "
        f"{q.folded_firing} folded into a parent's"
    )
    n_false = len(q.false_alerts)
    carriable = [k for k, v in q.carriable.items() if v]
    print(
        f"{tag} false alerts (published, not explained by an injected anomaly): {n_false} = "
        f"{n_false / args.days:.2f}/day over {tracked:,} tracked segments; precision {q.precision:.0%}"
    )
    rec = sum(q.caught.values()) / len(q.caught)
    rec_c = sum(q.caught[k] for k in carriable) / len(carriable) if carriable else float("nan")
    rec_f = sum(q.caught_folded.values()) / len(q.caught_folded)
    ttds = [q.ttd[k] for k in q.ttd]
    print(
        f"{tag} recall {rec:.0%} of {len(q.caught)} (on the segment or an ancestor listing it as a "
        f"contributor); carriable {len(carriable)}: {rec_c:.0%}; counting the child's own alert folded into an "
        f"ancestor's: {rec_f:.0%}; median time to detect {statistics.median(ttds) if ttds else float('nan')} windows"
    )
    by_level: dict[str, list[bool]] = defaultdict(list)
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for sc in injected:
        key = _sc_key(sc)
        by_level[sc.level].append(q.caught[key])
        by_kind[sc.expected_type].append(q.caught[key])
    print(f"{tag} recall by level: " + "; ".join(f"{k} {sum(v)}/{len(v)}" for k, v in by_level.items()))
    print(f"{tag} recall by alert type: " + "; ".join(f"{k} {sum(v)}/{len(v)}" for k, v in sorted(by_kind.items())))
    false_by_type: dict[str, int] = defaultdict(int)
    for a in q.false_alerts:
        false_by_type[a.alert_type] += 1
    print(
        f"{tag} false alerts by type: "
        + (", ".join(f"{k} {v}" for k, v in sorted(false_by_type.items())) or "none")
        + "; by set: "
        + ", ".join(
            f"{k} {v}" for k, v in sorted(_count(",".join(sorted(a.dimensions)) or "*" for a in q.false_alerts).items())
        )
    )
    echoes = [a for a in q.false_alerts if _echo(a, injected)]
    print(
        f"{tag} of the false alerts, {len(echoes)} come within {ECHO_HOURS} h after an injected anomaly on a "
        f"segment sharing traffic with theirs (echoes: the baseline learnt the anomaly); "
        f"{n_false - len(echoes)} = {(n_false - len(echoes)) / args.days:.2f}/day are far from any"
    )
    per_day = _count(str((a.window_start_ms - START_MS) // DAY + 1) for a in q.false_alerts)
    print(
        f"{tag} false alerts by simulated day: "
        + ", ".join(f"day {d}: {per_day.get(str(d), 0)}" for d in range(1, args.days + 1))
    )
    for a in q.false_alerts[: args.show_false]:
        print(
            f"{tag}   false: minute {(a.window_start_ms - START_MS) // MIN:,} {a.alert_type} {a.where} "
            f"z={a.z_score:.1f} {a.message}"
        )
    missed = [k for k in carriable if not q.caught[k]]
    if missed:
        print(f"{tag} missed carriable: {', '.join(missed[:12])}")
    by_type = _report_by_type(tag, q, injected, alerts, sim, args.days)
    if world == "b":
        _diagnose(tag, q, injected, sim, index, args.days)
    ref = reference(args) if args.reference and anchor else {}
    total = time.perf_counter() - t0
    extra = "".join(f" reference_{k}={v}" for k, v in ref.items())
    print(
        f"RESULT quality_segments world={world} tracked={tracked} days={args.days} window_minutes={args.window_minutes} "
        f"false_per_day={n_false / args.days:.2f} false_per_day_far={(n_false - len(echoes)) / args.days:.2f} "
        f"recall={rec:.3f} recall_carriable={rec_c:.3f} precision={q.precision:.3f} seconds={total:.0f}{extra}"
    )
    return {
        "world": world,
        "segments": str(tracked),
        "false_per_day": f"{n_false / args.days:.2f}",
        "recall": f"{rec_c:.3f}",
        "precision": f"{q.precision:.3f}",
        **by_type,
    }


ALERT_TYPES = tuple(dict.fromkeys(EXPECTED_TYPE.values()))


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def _firing_at(alerts: list[Alert], sid: str, alert_type: str, t_ms: int) -> Alert | None:
    """The alert of this segment and type already firing when a window starting at ``t_ms`` comes
    (its last event before then is a firing one), if any: no new alert of it can fire then."""
    before = [a for a in alerts if a.segment_id == sid and a.alert_type == alert_type and a.window_start_ms < t_ms]
    return before[-1] if before and before[-1].status == "firing" else None


def _report_by_type(
    tag: str, q: SegQuality, injected: list[Injected], alerts: list[Alert], sim: SegmentSim, days: int
) -> dict[str, str]:
    """Per alert type: false alerts/day, recall (carriable: within 3 windows, before the anomaly
    ends), precision, time to detect (median, p90) and to resolve after the anomaly ends; then the
    outage line (traffic to 10 % for 30 min on a top segment, target: detected within 2 windows)."""
    size = sim.window_ms
    resolved: dict[str, list[int]] = defaultdict(list)
    for a in alerts:
        if a.status == "resolved":
            resolved[a.fingerprint].append(a.window_start_ms)
    firing_of: dict[str, list[Alert]] = defaultdict(list)
    for a in q.false_alerts:
        firing_of[a.alert_type].append(a)
    explained_of: dict[str, int] = defaultdict(int)
    published_of: dict[str, int] = defaultdict(int)
    for a in _PUBLISHED:
        if a.status == "firing":
            published_of[a.alert_type] += 1
            explained_of[a.alert_type] += a.alert_id in q.explained
    print(
        f"{tag} by alert type (windows of {size // MIN} min; recall over carriable anomalies; "
        "time to resolve = windows from the anomaly's end to the resolve):"
    )
    print(
        f"{tag}   {'type':<26} {'false/day':>9} {'recall':>12} {'in 3 win':>8} {'by end':>7} {'precision':>10} "
        f"{'ttd med':>7} {'ttd p90':>7} {'ttr med':>7}  missed (masked: an alert of the type already firing)"
    )
    out: dict[str, str] = {}
    for t in ALERT_TYPES:
        mine = [sc for sc in injected if sc.expected_type == t]
        keys = [_sc_key(sc) for sc in mine if q.carriable[_sc_key(sc)]]
        caught = [k for k in keys if q.caught[k]]
        ttd = [float(q.ttd[k]) for k in caught]
        in3 = sum(q.ttd[k] <= 3 for k in caught)
        by_end = sum(q.ttd[k] <= (sc.end_ms - sc.start_ms) // size for sc in mine if (k := _sc_key(sc)) in caught)
        ttr: list[float] = []
        for sc in mine:
            hit = q.first_hit.get(_sc_key(sc))
            if hit is None:
                continue
            after = [w for w in resolved.get(hit.fingerprint, []) if w >= hit.window_start_ms]
            if after:
                ttr.append((min(after) - sc.end_ms) / size)
        prec = explained_of[t] / published_of[t] if published_of[t] else float("nan")
        rec = len(caught) / len(keys) if keys else float("nan")
        missed = [sc for sc in mine if q.carriable[_sc_key(sc)] and not q.caught[_sc_key(sc)]]
        masked = sum(_firing_at(alerts, sc.target_id, t, sc.start_ms // size * size) is not None for sc in missed)
        print(
            f"{tag}   {t:<26} {len(firing_of[t]) / days:>9.2f} {f'{rec:.0%} ({len(caught)}/{len(keys)})':>12} "
            f"{f'{in3}/{len(keys)}':>8} {f'{by_end}/{len(keys)}':>7} "
            f"{f'{prec:.0%} of {published_of[t]}' if published_of[t] else '-':>10} {_pct(ttd, 50):>7.1f} "
            f"{_pct(ttd, 90):>7.1f} {_pct(ttr, 50):>7.1f}  {len(missed)} ({masked})"
        )
        out[f"{t}_false_per_day"] = f"{len(firing_of[t]) / days:.2f}"
        out[f"{t}_recall"] = f"{rec:.3f}"
        out[f"{t}_precision"] = f"{prec:.3f}"
    outages: list[str] = []
    for sc in injected:
        if sc.kind == "traffic_drop" and sc.magnitude == 0.1 and "top" in sc.level:
            key = _sc_key(sc)
            got = q.ttd.get(key)
            firing = _firing_at(alerts, sc.target_id, "traffic_drop", sc.start_ms // size * size)
            print(
                f"{tag} outage (traffic to 10 % for 30 min) on {sc.target_id} [{sc.level}], minute "
                f"{(sc.start_ms - START_MS) // MIN:,}: "
                + (
                    f"detected in window {got} ({got * size // MIN} min): "
                    f"{'met' if got <= 2 else 'NOT met'} (target: within 2 windows)"
                    if got is not None
                    else "NOT detected (target: within 2 windows)"
                )
                + ("" if q.carriable[key] else " [not carriable at its volume then]")
                + (
                    f" [a traffic_drop alert on it was already firing since minute "
                    f"{(firing.window_start_ms - START_MS) // MIN:,}: no new alert can fire]"
                    if firing is not None
                    else ""
                )
            )
            outages.append("none" if got is None else str(got))
    out["outage_ttd_windows"] = ",".join(outages)
    return out


CAUSES = (
    "echo of an injected anomaly (<= 4 h after, shared traffic)",
    "single-minute burst",
    "whale bid",
    "dark-at-night segment switching (off at night / back in the morning)",
    "holiday surge",
    "weekend switch (the hour after local midnight starting Saturday or Monday)",
    "steep daily ramp (dawn rise / evening fall, > 20 % in 30 min)",
    "deep night (volume < 15 % of the segment's mean)",
    "orphan-click trickle",
    "none of the above (heavy-tailed noise, wandering level, CTR drift)",
)


def _cause(a: Alert, sim: SegmentSim, row: int, injected: list[Injected]) -> str:
    """Which world-b feature most likely raised a false alert (the first that applies, in :data:`CAUSES` order)."""
    if _echo(a, injected):
        return CAUSES[0]
    f, size = sim.features, sim.window_ms
    w = (a.window_start_ms - START_MS) // size
    sm = f["smooth"][row]
    base = max(float(sm[w]), 1.0)
    if a.alert_type != "ecpm_drop" and float(f["burst"][row, max(w - 2, 0) : w + 1].max()) > 0.1 * base:
        return CAUSES[1]
    if a.alert_type == "ecpm_drop" and float(f["whale"][row, max(w - 12, 0) : w + 1].sum()) > 0.05 * float(
        f["exp_revenue"][row, w]
    ):
        return CAUSES[2]
    if float(f["dark_edge"][row, max(w - 1, 0) : w + 1].max()) > 0.05 * base:
        return CAUSES[3]
    if float(f["holiday"][row, w]) > 0.2 * base:
        return CAUSES[4]
    if float(f["weekend_edge"][row, w]) > 0.2 * base:
        return CAUSES[5]
    prev = float(sm[max(w - 6, 0) : w].mean()) if w > 0 else float(sm[w])
    if abs(math.log((float(sm[w]) + 1) / (prev + 1))) > math.log(1.2):
        return CAUSES[6]
    if float(sm[w]) < 0.15 * float(sm.mean()):
        return CAUSES[7]
    if a.alert_type == "click_without_impression":
        return CAUSES[8]
    return CAUSES[9]


def _diagnose(
    tag: str, q: SegQuality, injected: list[Injected], sim: SegmentSim, index: dict[str, int], days: int
) -> None:
    """False alerts of world b by the world feature behind them (by cause, then type and set)."""
    by: dict[str, list[Alert]] = defaultdict(list)
    for a in q.false_alerts:
        by[_cause(a, sim, index[a.segment_id], injected)].append(a)
    print(f"{tag} false alerts by world feature (first that applies, in this order):")
    for cause in CAUSES:
        mine = by.get(cause, [])
        if not mine:
            continue
        types = ", ".join(f"{k} {v}" for k, v in sorted(_count(a.alert_type for a in mine).items()))
        sets = ", ".join(
            f"{k} {v}" for k, v in sorted(_count(",".join(sorted(a.dimensions)) or "*" for a in mine).items())
        )
        print(f"{tag}   {len(mine):>4} ({len(mine) / days:.2f}/day) {cause}: {types}; by set: {sets}")
        for a in mine[:2]:
            print(
                f"{tag}        e.g. minute {(a.window_start_ms - START_MS) // MIN:,} {a.alert_type} {a.where} "
                f"z={a.z_score:.1f} {a.message}"
            )


ECHO_HOURS = 4


def _echo(a: Alert, injected: list[Injected]) -> bool:
    return any(
        sc.end_ms <= a.window_start_ms < sc.end_ms + ECHO_HOURS * 3_600_000 and _consistent(a.dimensions, sc.target)
        for sc in injected
    )


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for i in items:
        out[i] += 1
    return out


def _sc_key(sc: Injected) -> str:
    return f"{sc.kind} x{sc.magnitude:g} {sc.target_id} @{(sc.start_ms - START_MS) // MIN}"


def score_segments(
    published: list[Alert],
    folded: list[Alert],
    injected: list[Injected],
    sim: SegmentSim,
    index: dict[str, int],
    days: int,
    tracked: int,
    n_windows: int,
    raw: list[Alert],
) -> SegQuality:
    firing = [a for a in published if a.status == "firing"]
    size = sim.window_ms
    rules = _seg_rules(size).with_expected_segments(budget_tests(tracked, 4))
    explained: set[str] = set()
    caught: dict[str, bool] = {}
    caught_folded: dict[str, bool] = {}
    can: dict[str, bool] = {}
    ttd: dict[str, int] = {}
    first_hit: dict[str, Alert] = {}
    folded_firing = [a for a in folded if a.status == "firing"]
    for sc in injected:
        key = _sc_key(sc)
        lo, hi = sc.start_ms // size * size, sc.end_ms + GRACE_WINDOWS * size
        during = [a for a in firing if lo <= a.window_start_ms < hi and _consistent(a.dimensions, sc.target)]
        explained.update(a.alert_id for a in during)
        hits = [
            a
            for a in during
            if a.alert_type == sc.expected_type
            and (
                a.segment_id == sc.target_id
                or (
                    set(a.dimensions.items()) < set(sc.target.items())
                    and any(c.segment_id == sc.target_id for c in a.contributors)
                )
            )
        ]
        child_folded = [
            a
            for a in folded_firing
            if lo <= a.window_start_ms < hi and a.segment_id == sc.target_id and a.alert_type == sc.expected_type
        ]
        caught[key] = bool(hits)
        caught_folded[key] = bool(hits or child_folded)
        if hits:
            first_hit[key] = min(hits, key=lambda a: a.window_start_ms)
            ttd[key] = (first_hit[key].window_start_ms - lo) // size + 1
        row = index[sc.target_id]
        col = max((sc.start_ms - START_MS) // size - 1, 0)
        n = float(sim.expected_imps[row, col])
        p = float(sim.expected_clicks[row, col]) / max(n, 1e-12)
        can[key] = carriable_at(sc.kind, sc.magnitude, n, p, rules)
    false_alerts = [a for a in firing if a.alert_id not in explained]
    return SegQuality(
        tracked=tracked,
        windows=n_windows,
        raw_firing=sum(a.status == "firing" for a in raw),
        published_firing=len(firing),
        folded_firing=len(folded_firing),
        false_alerts=false_alerts,
        caught=caught,
        caught_folded=caught_folded,
        carriable=can,
        ttd=ttd,
        precision=len(explained) / len(firing) if firing else 1.0,
        explained=explained,
        first_hit=first_hit,
    )


_REF: dict[str, dict[str, list[SegmentWindow]]] = {}


def _detect_ref(task: tuple[str, list[str]]) -> list[Alert]:
    which, keys = task
    out: list[Alert] = []
    for key in keys:
        _, new = detect_windows(None, _REF[which][key], RuleSettings(), 0)
        out += new
    return out


def reference(args: argparse.Namespace) -> dict[str, str]:
    """The 64-segment figure of the plain mode (default rules), in the same run, as the anchor."""
    import multiprocessing

    t0 = time.perf_counter()
    model = TrafficModel(seed=args.seed, rate=80.0)
    rng = np.random.default_rng(args.seed)
    scenarios = make_scenarios(args.days, rng)
    clean, _ = simulate(model, args.days, [], args.seed + 1)
    dirty, expected = simulate(model, args.days, scenarios, args.seed + 2)
    _REF.update(clean=clean, dirty=dirty)
    keys = sorted(clean)
    tasks = [(w, keys[k :: 2 * args.workers]) for w in ("clean", "dirty") for k in range(2 * args.workers)]
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        results = pool.map(_detect_ref, tasks)
    half = len(tasks) // 2
    false_alerts = [a for r in results[:half] for a in r if a.status == "firing"]
    q = score([a for r in results[half:] for a in r], scenarios, expected, RuleSettings())
    print(
        f"[reference, 64 segments at 80 events/s, default rules, same run] clean run: {len(false_alerts)} false alerts "
        f"= {len(false_alerts) / args.days:.2f}/day; recall {q.recall_all:.0%} of {q.n_truth}, carriable "
        f"{q.n_carriable}: {q.recall_carriable:.0%}; precision {q.precision:.0%} ({time.perf_counter() - t0:.0f}s)"
    )
    return {
        "segments": str(len(keys)),
        "false_per_day": f"{len(false_alerts) / args.days:.2f}",
        "recall_carriable": f"{q.recall_carriable:.3f}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--rate", type=float, default=None, help="events/s of the whole generator (80; 2000 with --segments)"
    )
    parser.add_argument("--segments", action="store_true", help="segment-set mode: >= 2,000 segments in a hierarchy")
    parser.add_argument("--apps", type=int, default=32, help="apps per country x format (--segments)")
    parser.add_argument("--show-false", type=int, default=5, help="false alerts printed (--segments)")
    parser.add_argument("--window-minutes", type=int, default=5, help="window size (--segments; the job's is 1)")
    parser.add_argument(
        "--world",
        choices=("generator", "b"),
        default="generator",
        help="traffic model: the generator's, or world b (adwatch_dev.world_b; then the generator's as reference)",
    )
    parser.add_argument("--rules", default=None, help="rules YAML for the segment mode (default: built-in)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the rules (--segments)")
    parser.add_argument("--no-reference", dest="reference", action="store_false", help="skip the 64-segment anchor")
    args = parser.parse_args(argv)
    if args.segments:
        args.rate = args.rate or 2000.0
        return run_segment_mode(args)
    args.rate = args.rate or 80.0
    if args.world == "b":
        return run_plain_b(args)
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
