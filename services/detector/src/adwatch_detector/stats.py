"""Pure statistics behind the rules: tail p-values, z scores, CUSUM log-likelihood ratios.

Scalar functions on floats (no numpy arrays) because the detector calls them a few times per
segment-window; scipy.special ufuncs cost about a microsecond each. Over-dispersion enters through
a *design effect* D: a count with variance D times the binomial/Poisson variance carries the
evidence of a count D times smaller, so tails are evaluated at (x/D, n/D) -- a moment match of
the beta-binomial / negative-binomial that keeps the tails continuous in x.
"""

from __future__ import annotations

import math
from typing import Literal

from scipy import special

Side = Literal["lower", "upper"]

Z_CAP = 40.0
_SQRT2 = math.sqrt(2.0)


def norm_sf(z: float) -> float:
    """P(Z >= z) for a standard normal."""
    return 0.5 * math.erfc(z / _SQRT2)


def z_from_p(p: float) -> float:
    """One-sided z with P(Z >= z) = p, capped to +-Z_CAP so tiny or unit p stay finite."""
    if p <= 0.0:
        return Z_CAP
    if p >= 1.0:
        return -Z_CAP
    return max(-Z_CAP, min(Z_CAP, -float(special.ndtri(p))))


def budget_alpha(alert_budget_per_day: float, expected_tests: int, windows_per_day: float) -> float:
    """Per-test alpha so that tests x windows/day x alpha = budget (Bonferroni over a day)."""
    if alert_budget_per_day <= 0 or expected_tests <= 0 or windows_per_day <= 0:
        raise ValueError("alert budget, expected tests and windows per day must be positive")
    return min(0.5, alert_budget_per_day / (expected_tests * windows_per_day))


def budget_z(alert_budget_per_day: float, expected_tests: int, windows_per_day: float = 1440.0) -> float:
    """One-sided z threshold for an alert budget; 1/day over 100 tests/min -> 4.35 (DETECTION.md)."""
    return z_from_p(budget_alpha(alert_budget_per_day, expected_tests, windows_per_day))


def cusum_threshold(alpha: float) -> float:
    """CUSUM alarm level h for a log-likelihood-ratio CUSUM: ARL0 >= e^h (Wald), so h = ln(1/alpha)."""
    return math.log(1.0 / alpha)


_TINY = 1e-300  # below it betainc/gammainc return subnormals that are noise (and break monotonicity)


def _probability(value: float) -> float:
    return 0.0 if value < _TINY else min(1.0, float(value))


def binom_tail(x: float, n: float, p: float, side: Side, design: float = 1.0) -> float:
    """Binomial tail P(X <= x) or P(X >= x), X ~ Bin(n, p), at design effect ``design`` >= 1.

    Uses the regularized incomplete beta, so x and n may be non-integers (x/D, n/D).
    """
    if n <= 0:
        return 1.0
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    d = max(design, 1.0)
    xe, ne = max(0.0, min(x, n)) / d, n / d
    if side == "lower":
        if xe >= ne:
            return 1.0
        return _probability(special.betainc(ne - xe, xe + 1.0, 1.0 - p))
    if xe <= 0.0:
        return 1.0
    return _probability(special.betainc(xe, ne - xe + 1.0, p))


def poisson_tail(x: float, lam: float, side: Side, design: float = 1.0) -> float:
    """Poisson tail P(X <= x) or P(X >= x), X ~ Poisson(lam), at design effect ``design`` >= 1."""
    d = max(design, 1.0)
    xe, le = max(0.0, x) / d, max(lam, 1e-12) / d
    if side == "upper":
        if xe <= 0.0:
            return 1.0
        return _probability(special.gammainc(xe, le))
    return _probability(special.gammaincc(xe + 1.0, le))


def bernoulli_llr(x: float, n: float, p0: float, p1: float) -> float:
    """log L(p1)/L(p0) of x successes in n trials: the Bernoulli CUSUM increment."""
    p0 = min(max(p0, 1e-12), 1.0 - 1e-12)
    p1 = min(max(p1, 1e-12), 1.0 - 1e-12)
    return x * math.log(p1 / p0) + (n - x) * math.log((1.0 - p1) / (1.0 - p0))


def poisson_llr(x: float, lam0: float, ratio: float) -> float:
    """log L(ratio*lam0)/L(lam0) of a Poisson count x: the Poisson CUSUM increment."""
    return x * math.log(ratio) - lam0 * (ratio - 1.0)


def gauss_llr(y: float, delta: float, var: float) -> float:
    """log L(mean delta)/L(mean 0) of y ~ N(., var): the Gaussian CUSUM increment."""
    return (delta * y - 0.5 * delta * delta) / max(var, 1e-12)


def cusum_step(s: float, llr: float) -> float:
    """S_t = max(0, S_{t-1} + llr_t)."""
    return max(0.0, s + llr)


def wilson_interval(x: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion x/n at z; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    phat = min(max(x / n, 0.0), 1.0)
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (phat + z2 / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def ewm_update(mu: float, var: float, x: float, alpha: float) -> tuple[float, float]:
    """Finch's exponentially weighted mean and variance: scores use the values *before* this."""
    d = x - mu
    mu = mu + alpha * d
    var = (1.0 - alpha) * (var + alpha * d * d)
    return mu, var


def halflife_decay(halflife_windows: float) -> float:
    """Per-window retention factor of a decayed sum with the given half-life."""
    return float(0.5 ** (1.0 / max(halflife_windows, 1e-9)))
