"""Causal univariate anomaly score for a single time series (used by the NAB benchmark).

Row by row, from data up to and including the current row only:
1. Finch EWMA mean/variance at a fast and a slow rate; the raw surprise of a value is its
   |z| against the statistics *before* the update (the same rule as the detector's baselines);
2. an "anomaly likelihood": the recent mean surprise compared with the long-run distribution of
   surprises (robust to series that are always noisy), turned into a tail probability;
3. a sequential CUSUM of surprise above its long-run level catches slow drifts;
4. after an alarm, the score is damped for a refractory period (one incident, one alarm).
The score is -log10(p) / 10 clipped to [0, 1].
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
    fast_alpha: float = 0.2
    slow_alpha: float = 0.005
    short_window: int = 12
    long_alpha: float = 0.0005
    warmup: int = 30
    alarm_score: float = 0.5
    refractory: int = 150
    point_power: float = 0.1
    damping: float = 0.2


def score_series(values: Sequence[float] | np.ndarray, settings: UnivariateSettings | None = None) -> np.ndarray:
    """Anomaly score in [0, 1] per value; the score at t uses values[0..t] only."""
    cfg = settings or UnivariateSettings()
    x = np.asarray(values, dtype=float)
    out = np.zeros(len(x))
    if len(x) == 0:
        return out
    mu_f = mu_s = float(x[0])
    var_f = var_s = 0.0
    recent: deque[float] = deque(maxlen=cfg.short_window)
    long_mu, long_var = 0.0, 1.0
    since_alarm = 10**9
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
            score = min(1.0, -math.log10(max(p, 1e-300)) / 10.0)
            if since_alarm < cfg.refractory:
                score *= cfg.damping
            elif score >= cfg.alarm_score:
                since_alarm = 0
            out[t] = score
        since_alarm += 1
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
