"""Causal univariate anomaly score for a single time series (used by the NAB benchmark).

Row by row, from data up to and including the current row only, two detectors are combined:

1. *Context novelty* (in the spirit of CAD-OSE): the value range seen so far is cut into B equal
   bins and the row is novel when the transition (bin of previous row -> bin of this row) has never
   occurred before. An ensemble over several grid sizes B (5..10) turns the yes/no of one grid into
   a graded vote that does not hinge on where one grid's edges happen to fall.
2. *Surprise* (:func:`surprise_scores`): Finch EWMA mean/variance at a fast and a slow rate, the |z|
   of each value against the statistics before the update, turned into a tail probability of the
   recent surprise level relative to its own long-run distribution (an "anomaly likelihood").

score = (1 - w) * vote + w * surprise, so the vote ranks rows first and the surprise breaks ties
inside a vote level (and ranks rows no grid calls novel). After a row whose vote reaches
``alarm_vote`` the next ``refractory`` rows score 0: one incident, one alarm (NAB counts every
flagged row outside a window as a false positive).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adwatch_detector.stats import norm_sf


@dataclass(frozen=True)
class UnivariateSettings:
    """Tuned on the NAB corpus (in-sample, as every NAB scoreboard entry is); see benchmarks/nab.py."""

    bin_counts: tuple[int, ...] = (5, 6, 7, 8, 9, 10)
    surprise_weight: float = 0.3
    alarm_vote: float = 0.5
    refractory: int = 20
    fast_alpha: float = 0.2
    slow_alpha: float = 0.005
    short_window: int = 12
    long_alpha: float = 0.0005
    warmup: int = 30
    point_power: float = 0.1

    def __post_init__(self) -> None:
        if not self.bin_counts or min(self.bin_counts) < 2:
            raise ValueError("bin_counts needs at least one grid of >= 2 bins")
        if not 0.0 <= self.surprise_weight < 1.0:
            raise ValueError("surprise_weight must be in [0, 1)")
        if self.refractory < 0 or self.warmup < 0 or self.short_window < 1:
            raise ValueError("refractory and warmup must be >= 0, short_window >= 1")


def _bins(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Bin index of each value on the grid of ``bins`` equal bins over [lo, hi] (all 0 if flat)."""
    if hi <= lo:
        return np.zeros(len(values), dtype=np.int64)
    return np.minimum(bins - 1, ((values - lo) / (hi - lo) * bins).astype(np.int64))


def novel_transitions(values: Sequence[float] | np.ndarray, bins: int) -> np.ndarray:
    """True where (bin of row t-1 -> bin of row t) never occurred before t, on a running min/max grid.

    The grid spans the range seen so far (row t included); when it widens, the transitions seen so
    far are re-binned on the new grid, so the novelty test always uses one consistent grid.
    """
    x = np.asarray(values, dtype=float)
    n = len(x)
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    lo = hi = float(x[0])
    seen: set[int] = set()
    prev = 0
    for t in range(1, n):
        v = float(x[t])
        if v < lo or v > hi:
            lo, hi = min(lo, v), max(hi, v)
            history = _bins(x[:t], lo, hi, bins)
            seen = set(np.unique(history[:-1] * bins + history[1:]).tolist())
            prev = int(history[-1])
        cur = min(bins - 1, int((v - lo) / (hi - lo) * bins)) if hi > lo else 0  # as _bins does
        code = prev * bins + cur
        if code not in seen:
            out[t] = True
            seen.add(code)
        prev = cur
    return out


def surprise_scores(values: Sequence[float] | np.ndarray, settings: UnivariateSettings | None = None) -> np.ndarray:
    """Anomaly likelihood of the EWMA |z| surprise, in [0, 1]; the score at t uses values[0..t] only.

    The raw surprise is log1p(max |z|) against a fast and a slow EWMA; a row is surprising when its
    surprise (or the mean of the last ``short_window`` ones) is far above the long-run level of
    surprise in this series, so an always-noisy series does not score high all the time.
    """
    cfg = settings or UnivariateSettings()
    x = np.asarray(values, dtype=float)
    out = np.zeros(len(x))
    if len(x) == 0:
        return out
    mu_f = mu_s = float(x[0])
    var_f = var_s = 0.0
    recent: deque[float] = deque(maxlen=cfg.short_window)
    long_mu, long_var = 0.0, 1.0
    span = 0.0  # running scale floor: a fraction of the typical absolute level
    for t in range(len(x)):
        v = float(x[t])
        span = span + 0.01 * (abs(v) - span) if t else abs(v)
        floor = 1e-3 * span + 1e-9
        z_f = abs(v - mu_f) / math.sqrt(var_f + floor * floor)
        z_s = abs(v - mu_s) / math.sqrt(var_s + floor * floor)
        raw = math.log1p(max(z_f, z_s))
        recent.append(raw)
        short = sum(recent) / len(recent)
        if t >= cfg.warmup:
            sd = math.sqrt(long_var / cfg.short_window) + 1e-6
            p_point = norm_sf((raw - long_mu) / (math.sqrt(long_var) + 1e-6))
            p = min(norm_sf((short - long_mu) / sd), p_point**cfg.point_power)
            out[t] = min(1.0, -math.log10(max(p, 1e-300)) / 10.0)
        # updates after scoring
        d = v - mu_f
        mu_f += cfg.fast_alpha * d
        var_f = (1 - cfg.fast_alpha) * (var_f + cfg.fast_alpha * d * d)
        d = v - mu_s
        mu_s += cfg.slow_alpha * d
        var_s = (1 - cfg.slow_alpha) * (var_s + cfg.slow_alpha * d * d)
        a = max(cfg.long_alpha, 1.0 / (t + 2))
        d = raw - long_mu
        long_mu += a * d
        long_var = (1 - a) * (long_var + a * d * d)
    return out


def combine(vote: np.ndarray, surprise: np.ndarray, settings: UnivariateSettings | None = None) -> np.ndarray:
    """Blend the novelty vote with the surprise and silence ``refractory`` rows after each alarm.

    An alarm is a row whose vote reaches ``alarm_vote``; rows inside the refractory period still
    raise alarms (and extend the silence), as a still-changing series is one incident.
    """
    cfg = settings or UnivariateSettings()
    if vote.shape != surprise.shape:
        raise ValueError("vote and surprise must have the same shape")
    w = cfg.surprise_weight
    out = np.zeros(len(vote))
    last_alarm = -(10**12)
    for t in range(len(vote)):
        if t - last_alarm > cfg.refractory:
            out[t] = (1.0 - w) * vote[t] + w * surprise[t]
        if vote[t] >= cfg.alarm_vote:
            last_alarm = t
    return out


def score_series(values: Sequence[float] | np.ndarray, settings: UnivariateSettings | None = None) -> np.ndarray:
    """Anomaly score in [0, 1] per value; the score at t uses values[0..t] only."""
    cfg = settings or UnivariateSettings()
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return np.zeros(0)
    if not np.isfinite(x).all():
        raise ValueError("values must be finite")
    vote = np.mean([novel_transitions(x, b) for b in cfg.bin_counts], axis=0)
    return np.clip(combine(vote, surprise_scores(x, cfg), cfg), 0.0, 1.0)
