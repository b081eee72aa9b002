"""Window-level traffic simulation for tests and the quality benchmark (numpy, seeded, pure).

Samples what a segment's 1-minute window would count, given its expected impressions, CTR,
eCPM and orphan clicks per minute: gamma noise per minute (over-dispersion) on the rates,
Poisson impressions, binomial clicks, revenue as a sum of log-normal prices, Poisson orphans.
The same noise model as adwatch_generator.traffic, without producing single events.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from adwatch.contracts import SegmentWindow

MINUTE_MS = 60_000


def gamma_noise(rng: np.random.Generator, cv: float, shape: tuple[int, ...]) -> np.ndarray:
    """Mean-1 multipliers with coefficient of variation ``cv``."""
    if cv <= 0:
        return np.ones(shape)
    k = 1.0 / cv**2
    noise: np.ndarray = rng.gamma(k, 1.0 / k, shape)
    return noise


def sample_counts(
    rng: np.random.Generator,
    impressions: np.ndarray,
    ctr: np.ndarray,
    ecpm: np.ndarray,
    orphans: np.ndarray | None = None,
    *,
    traffic_cv: float = 0.08,
    ctr_cv: float = 0.06,
    ecpm_cv: float = 0.03,
    price_sigma: float | np.ndarray = 0.45,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(impressions, clicks, revenue_usd, orphan_clicks) arrays shaped like ``impressions``."""
    shape = impressions.shape
    imps = rng.poisson(impressions * gamma_noise(rng, traffic_cv, shape))
    p = np.clip(ctr * gamma_noise(rng, ctr_cv, shape), 0.0, 1.0)
    clicks = rng.binomial(imps, p)
    sigma = np.broadcast_to(np.asarray(price_sigma, dtype=float), shape)
    # the sum of n log-normal prices with mean m: n*m times a mean-1 factor of CV sqrt(e^s^2 - 1)/sqrt(n)
    cv_price = np.sqrt(np.expm1(sigma**2))
    n_safe = np.maximum(imps, 1)
    cv_sum = cv_price / np.sqrt(n_safe)
    k = 1.0 / np.maximum(cv_sum**2, 1e-12)
    mean_price = ecpm * gamma_noise(rng, ecpm_cv, shape) / 1000.0
    revenue = np.where(imps > 0, imps * mean_price * rng.gamma(k, 1.0 / k), 0.0)
    orph = rng.poisson(orphans) if orphans is not None else np.zeros(shape, dtype=np.int64)
    return imps, clicks, revenue, orph


def to_windows(
    country: str,
    ad_format: str,
    start_ms: int,
    imps: np.ndarray,
    clicks: np.ndarray,
    revenue: np.ndarray,
    orphans: np.ndarray | None = None,
    window_ms: int = MINUTE_MS,
    *,
    dimensions: Mapping[str, str] | None = None,
) -> Iterator[SegmentWindow]:
    """SegmentWindows of one segment; minutes without any event yield no window (as in Spark).

    ``dimensions``: a segment of any dimensions (``{"campaign_id": "cmp-0042"}``); then
    ``country``/``ad_format`` are ignored (pass ``""``) and the window carries that map and its id.
    """
    dims = dict(dimensions) if dimensions is not None else {}
    orph = orphans if orphans is not None else np.zeros_like(imps)
    for i, (n, c, r, o) in enumerate(zip(imps.tolist(), clicks.tolist(), revenue.tolist(), orph.tolist(), strict=True)):
        if n == 0 and c == 0 and o == 0:
            continue
        t = start_ms + i * window_ms
        yield SegmentWindow(
            window_start_ms=t,
            window_end_ms=t + window_ms,
            country=country if dimensions is None else "",
            ad_format=ad_format if dimensions is None else "",
            dimensions=dims,
            impressions=int(n),
            clicks=int(c + o),
            revenue_usd=float(r),
            orphan_clicks=int(o),
            event_counts={"impression": int(n), "click": int(c + o)},
        )


def diurnal(minutes: np.ndarray, amplitude: float = 0.5, peak_hour: float = 20.0) -> np.ndarray:
    """Daily shape 1 + a cos(2 pi (h - peak) / 24) at minute offsets."""
    hours = minutes / 60.0
    shape: np.ndarray = 1.0 + amplitude * np.cos(2 * np.pi * (hours - peak_hour) / 24.0)
    return shape


def orphan_windows(
    orphans: np.ndarray, rng: np.random.Generator, imps: float = 600.0, ctr: float = 0.02
) -> list[SegmentWindow]:
    """US banner windows of steady traffic (Poisson impressions, binomial clicks) plus the given
    orphan clicks per minute: what the orphan-click rule's tests and benchmark feed it."""
    n = rng.poisson(imps, len(orphans))
    k = rng.binomial(n, ctr)
    return [
        SegmentWindow(
            window_start_ms=i * MINUTE_MS,
            window_end_ms=(i + 1) * MINUTE_MS,
            country="US",
            ad_format="banner",
            impressions=int(n[i]),
            clicks=int(k[i] + orphans[i]),
            revenue_usd=float(n[i]) * 0.002,
            orphan_clicks=int(orphans[i]),
        )
        for i in range(len(orphans))
    ]


def orphan_trickle(rng: np.random.Generator, minutes: int, low: float = 3.0, high: float = 8.0) -> np.ndarray:
    """``low``-``high`` orphan clicks a minute (tracking loss): the rate wanders within the day and
    minute by minute."""
    t = np.arange(minutes)
    daily = low + (high - low) * (0.5 - 0.5 * np.cos(2 * np.pi * t / 1440))
    counts: np.ndarray = rng.poisson(np.clip(daily + rng.normal(0.0, 0.8, minutes), low, high))
    return counts
