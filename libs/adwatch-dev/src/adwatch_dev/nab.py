"""The NAB scorer, as ../shared/nab/SCORING.md specifies it (pure: arrays in, numbers out).

Per row a weighted score (scaled sigmoid of the position relative to the windows), one threshold per
profile swept over every distinct anomaly score of the corpus (plus 1.1 = detect nothing), and the
normalised score 100 (raw - raw_null) / (raw_perfect - raw_null). :func:`value_windows` and
:func:`rule_scores` feed a series through the detector's production rules (the ``value`` rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules import Check, RuleEngine, SegmentState, detect_windows
from adwatch_detector.rules.lifecycle import Lifecycle
from adwatch_detector.rules.value import Value
from adwatch_detector.stats import Z_CAP

TANH_25 = math.tanh(2.5)


@dataclass(frozen=True)
class Profile:
    name: str
    tp: float
    fp: float
    fn: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


@dataclass(frozen=True)
class FileRows:
    """One file's scorable rows: anomaly score, row weight (before profile weights), window id or -1."""

    scores: np.ndarray
    in_window: np.ndarray  # window id (global) or -1
    tp_part: np.ndarray  # tanh(2.5 (r - i + 1) / W) / tanh(2.5) inside windows, else 0
    fp_part: np.ndarray  # S(x) in [-1, 0] outside windows (multiplied by fpWeight later)


def probation(n: int) -> int:
    return min(math.floor(0.15 * n), int(0.15 * 5000))


def file_rows(scores: Sequence[float] | np.ndarray, windows: Sequence[tuple[int, int]], window_offset: int) -> FileRows:
    """Row weights of one file; ``windows`` are inclusive row-index ranges, ids start at ``window_offset``."""
    a = np.asarray(scores, dtype=float)
    n = len(a)
    win_id = np.full(n, -1, dtype=np.int64)
    tp_part = np.zeros(n)
    fp_part = np.zeros(n)
    prev: tuple[int, int] | None = None
    ordered = sorted(windows)
    k = 0
    for i in range(n):
        while k < len(ordered) and ordered[k][1] < i:
            prev = ordered[k]
            k += 1
        if k < len(ordered) and ordered[k][0] <= i <= ordered[k][1]:
            left, right = ordered[k]
            width = right - left + 1
            win_id[i] = window_offset + k
            tp_part[i] = math.tanh(2.5 * (right - i + 1) / width) / TANH_25
        elif prev is not None:
            width = prev[1] - prev[0] + 1
            x = (i - prev[1]) / max(width - 1, 1)
            fp_part[i] = -1.0 if x > 3 else -math.tanh(2.5 * x)
        else:
            fp_part[i] = -1.0
    p = probation(n)
    return FileRows(a[p:], win_id[p:], tp_part[p:], fp_part[p:])


@dataclass(frozen=True)
class SweepResult:
    profile: str
    threshold: float
    raw: float
    normalized: float


def sweep(files: Sequence[FileRows], n_windows: int, profile: Profile) -> SweepResult:
    """Best threshold (highest raw; ties -> highest threshold) over all distinct scores plus 1.1."""
    scores = np.concatenate([f.scores for f in files]) if files else np.zeros(0)
    win = np.concatenate([f.in_window for f in files]) if files else np.zeros(0, np.int64)
    tp = np.concatenate([f.tp_part for f in files]) * profile.tp if files else np.zeros(0)
    fp = np.concatenate([f.fp_part for f in files]) * profile.fp if files else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    best_v = np.full(n_windows, -profile.fn)
    total = -profile.fn * n_windows
    best = (total, 1.1)
    s_sorted, w_sorted, tp_sorted, fp_sorted = scores[order], win[order], tp[order], fp[order]
    i, n = 0, len(order)
    while i < n:
        value = s_sorted[i]
        j = i
        while j < n and s_sorted[j] == value:
            w = int(w_sorted[j])
            if w >= 0:
                if tp_sorted[j] > best_v[w]:
                    total += tp_sorted[j] - best_v[w]
                    best_v[w] = tp_sorted[j]
            else:
                total += fp_sorted[j]
            j += 1
        if total > best[0] + 1e-12:
            best = (total, float(value))
        i = j
    raw, threshold = best
    null, perfect = -profile.fn * n_windows, profile.tp * n_windows
    return SweepResult(profile.name, threshold, raw, 100.0 * (raw - null) / (perfect - null))


def file_score(rows: FileRows, windows_in_file: Sequence[int], threshold: float, profile: Profile) -> float:
    """Raw score of one file at a threshold (detections: a >= threshold)."""
    detected = rows.scores >= threshold
    total = float(np.sum(rows.fp_part[detected & (rows.in_window < 0)]) * profile.fp)
    for w in windows_in_file:
        hits = detected & (rows.in_window == w)
        total += float(rows.tp_part[hits].max() * profile.tp) if hits.any() else -profile.fn
    return total


def value_windows(
    series: str, stamps_ms: Sequence[int], values: Sequence[float], window_ms: int
) -> list[SegmentWindow]:
    """A NAB series as the windows of one value-stream segment (no counts: ``value`` is the reading)."""
    dims = {"metric": "nab", "series": series[:256]}
    return [
        SegmentWindow(
            window_start_ms=int(t),
            window_end_ms=int(t) + window_ms,
            dimensions=dims,
            impressions=0,
            clicks=0,
            revenue_usd=0.0,
            value=float(v),
        )
        for t, v in zip(stamps_ms, values, strict=True)
    ]


def rule_scores(windows: Sequence[SegmentWindow], engine: RuleEngine, chunk: int = 1) -> np.ndarray:
    """One anomaly score per window from the production rules, causally (row by row).

    The score of a row is its ``value_anomaly`` check's z (``Check.z_score``, the one-window or
    the CUSUM evidence, whichever is stronger) / Z_CAP, in [0, 1]; 0 where the service could not
    page (the alert already fires, or cools down after a resolve: one incident, one page, while NAB
    counts every flagged row as a detection) and on rows the rule does not judge (its first). ``chunk`` windows go through the engine per call, as a
    micro-batch would: the scores do not depend on it.
    """
    rule = next(r for r in engine.rules if isinstance(r, Value))
    out = np.zeros(len(windows))
    index = {w.window_start_ms: i for i, w in enumerate(windows)}
    state = SegmentState()

    def on_check(window: SegmentWindow, check: Check) -> None:
        if check.alert_type != "value_anomaly":
            return
        life = state.rules[rule.id].lives["value_anomaly"]
        if rule.may_page(life, window.window_start_ms, state.rules[rule.id].state) and _cooled(
            life, window.window_start_ms, engine.policies[rule.id].cooldown_ms
        ):
            out[index[window.window_start_ms]] = min(1.0, max(0.0, check.z_score) / Z_CAP)

    for start in range(0, len(windows), chunk):
        detect_windows(state, windows[start : start + chunk], engine, 0, on_check=on_check)
    return out


def _cooled(life: Lifecycle, start_ms: int, cooldown_ms: int) -> bool:
    """The rule set's own cooldown (the lifecycle's; 0 by default) is over."""
    return life.resolved_ms < 0 or start_ms - life.resolved_ms >= cooldown_ms
