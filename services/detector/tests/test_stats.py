"""Properties of the statistics behind the rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from adwatch_detector.stats import (
    bernoulli_llr,
    binom_tail,
    budget_z,
    cusum_step,
    ewm_update,
    poisson_tail,
    wilson_interval,
    z_from_p,
)

counts = st.integers(min_value=0, max_value=5000)
probs = st.floats(min_value=1e-4, max_value=0.5)
designs = st.floats(min_value=1.0, max_value=20.0)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=1, max_value=5000), data=st.data(), p=probs, d=designs)
def test_binomial_tails_are_probabilities_and_monotonic(n: int, data: st.DataObject, p: float, d: float) -> None:
    x = data.draw(st.integers(min_value=0, max_value=n - 1))
    low, low_next = binom_tail(x, n, p, "lower", d), binom_tail(x + 1, n, p, "lower", d)
    up, up_next = binom_tail(x, n, p, "upper", d), binom_tail(x + 1, n, p, "upper", d)
    assert 0.0 <= low <= low_next <= 1.0
    assert 1.0 >= up >= up_next >= 0.0


@settings(max_examples=200, deadline=None)
@given(x=counts, lam=st.floats(min_value=0.01, max_value=5000), d=designs)
def test_poisson_tails_are_probabilities_and_monotonic(x: int, lam: float, d: float) -> None:
    assert 0.0 <= poisson_tail(x, lam, "lower", d) <= poisson_tail(x + 1, lam, "lower", d) <= 1.0
    assert 1.0 >= poisson_tail(x, lam, "upper", d) >= poisson_tail(x + 1, lam, "upper", d) >= 0.0


@settings(max_examples=100, deadline=None)
@given(x=st.integers(min_value=1, max_value=200), n=st.integers(min_value=200, max_value=2000), p=probs, d=designs)
def test_overdispersion_weakens_evidence(x: int, n: int, p: float, d: float) -> None:
    """Above the mean, a wider (over-dispersed) distribution gives a larger upper tail."""
    x = max(x, math.ceil(n * p) + 1)
    assert binom_tail(x, n, p, "upper", d) >= binom_tail(x, n, p, "upper", 1.0) - 1e-12


@pytest.mark.parametrize(
    ("x", "n", "p"),
    [
        pytest.param(3, 100, 0.05, id="small"),
        pytest.param(40, 1000, 0.03, id="mid"),
        pytest.param(0, 50, 0.01, id="zero"),
    ],
)
def test_tails_match_scipy_at_unit_design(x: int, n: int, p: float) -> None:
    assert binom_tail(x, n, p, "lower") == pytest.approx(sps.binom.cdf(x, n, p), rel=1e-9)
    assert binom_tail(x, n, p, "upper") == pytest.approx(sps.binom.sf(x - 1, n, p), rel=1e-9)
    assert poisson_tail(x, n * p, "lower") == pytest.approx(sps.poisson.cdf(x, n * p), rel=1e-9)
    assert poisson_tail(x, n * p, "upper") == pytest.approx(sps.poisson.sf(x - 1, n * p), rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(a=st.floats(min_value=0.0, max_value=1.0), b=st.floats(min_value=0.0, max_value=1.0))
def test_z_from_p_is_decreasing_and_finite(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert z_from_p(lo) >= z_from_p(hi)
    assert math.isfinite(z_from_p(lo))


def test_budget_z_matches_detection_notes() -> None:
    assert budget_z(1.0, 100) == pytest.approx(4.35, abs=0.01)
    assert budget_z(1.0, 1000) == pytest.approx(4.83, abs=0.01)
    assert budget_z(1.0, 10_000) == pytest.approx(5.27, abs=0.01)


@settings(max_examples=100, deadline=None)
@given(
    x=st.integers(min_value=0, max_value=100),
    n=st.integers(min_value=1, max_value=100),
    z=st.floats(min_value=0.5, max_value=5),
)
def test_wilson_interval_contains_the_estimate(x: int, n: int, z: float) -> None:
    x = min(x, n)
    lo, hi = wilson_interval(x, n, z)
    assert 0.0 <= lo <= x / n + 1e-12 and x / n - 1e-12 <= hi <= 1.0


@settings(max_examples=100, deadline=None)
@given(s=st.floats(min_value=0, max_value=100), llr=st.floats(min_value=-100, max_value=100))
def test_cusum_never_negative(s: float, llr: float) -> None:
    assert cusum_step(s, llr) >= 0.0


def test_bernoulli_llr_sign() -> None:
    assert bernoulli_llr(0, 1000, 0.02, 0.01) > 0  # no clicks favour the drop
    assert bernoulli_llr(20, 1000, 0.02, 0.01) < 0


def test_ewm_update_tracks_a_constant() -> None:
    mu, var = 0.0, 1.0
    for _ in range(500):
        mu, var = ewm_update(mu, var, 5.0, 0.05)
    assert mu == pytest.approx(5.0) and var == pytest.approx(0.0, abs=1e-6)
