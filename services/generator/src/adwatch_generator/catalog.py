"""The fixed world the generator simulates: countries, ad formats and the segments they span.

The structure (shares, CTRs, prices, apps, campaigns) is the same for every seed, so
"US|banner is the biggest segment" holds in every run; the seed only drives the events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adwatch.contracts import AD_FORMATS, AdFormat, segment_key


@dataclass(frozen=True)
class Country:
    """A market: its traffic weight, local-time offset and price level relative to the US."""

    code: str
    utc_offset_h: float
    weight: float
    price_level: float


@dataclass(frozen=True)
class FormatProfile:
    """What a format looks like on average: share of traffic, CTR and median eCPM (US)."""

    name: AdFormat
    share: float
    ctr: float
    ecpm_usd: float
    ecpm_sigma: float


# Zipf-like weights: a few big markets and a long tail.
COUNTRIES: tuple[Country, ...] = (
    Country("US", -5.0, 30.0, 1.00),
    Country("IN", 5.5, 10.0, 0.12),
    Country("GB", 0.0, 9.0, 0.80),
    Country("DE", 1.0, 8.0, 0.75),
    Country("JP", 9.0, 8.0, 0.85),
    Country("BR", -3.0, 6.0, 0.25),
    Country("FR", 1.0, 6.0, 0.60),
    Country("CA", -5.0, 4.0, 0.85),
    Country("ID", 7.0, 4.0, 0.10),
    Country("AU", 10.0, 3.0, 0.80),
    Country("KR", 9.0, 3.0, 0.65),
    Country("MX", -6.0, 3.0, 0.22),
    Country("ES", 1.0, 2.0, 0.40),
    Country("IT", 1.0, 2.0, 0.45),
    Country("TR", 3.0, 1.5, 0.15),
    Country("NG", 1.0, 0.5, 0.05),
)

FORMATS: tuple[FormatProfile, ...] = (
    FormatProfile("banner", 0.50, 0.005, 0.90, 0.45),
    FormatProfile("interstitial", 0.18, 0.012, 9.00, 0.50),
    FormatProfile("rewarded_video", 0.12, 0.035, 15.00, 0.50),
    FormatProfile("native", 0.20, 0.009, 3.00, 0.45),
)
assert tuple(f.name for f in FORMATS) == AD_FORMATS

# Local-time shape of traffic: peak in the evening, trough before dawn.
TRAFFIC_DAILY_AMPLITUDE = 0.5
TRAFFIC_PEAK_HOUR = 20.0
CTR_DAILY_AMPLITUDE = 0.05
CTR_PEAK_HOUR = 21.0
ECPM_DAILY_AMPLITUDE = 0.10
ECPM_PEAK_HOUR = 19.0
# Mobile apps get more use at weekends; the weights average 1 over a week.
WEEKDAY_FACTOR = 0.96
WEEKEND_FACTOR = 1.10

_STRUCTURE_SEED = 20240601


@dataclass(frozen=True)
class Segment:
    """One country x format cell, with its apps/placements and campaigns below it.

    ``share`` is its fraction of all traffic, ``ctr`` its base CTR, ``ecpm_usd`` its mean price.
    """

    index: int
    country: str
    ad_format: AdFormat
    key: str
    key_bytes: bytes
    share: float
    ctr: float
    ecpm_usd: float
    ecpm_sigma: float
    utc_offset_h: float
    placements: tuple[tuple[str, str], ...]
    placement_weights: tuple[float, ...]
    campaigns: tuple[str, ...]
    campaign_weights: tuple[float, ...]


def _zipf(n: int, exponent: float = 1.1) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    normalised: np.ndarray = weights / weights.sum()
    return normalised


def build_segments(
    countries: tuple[Country, ...] = COUNTRIES, formats: tuple[FormatProfile, ...] = FORMATS
) -> tuple[Segment, ...]:
    """All segments with their shares (summing to 1), CTRs, prices and inventory."""
    rng = np.random.default_rng(_STRUCTURE_SEED)
    total_weight = sum(c.weight for c in countries)
    raw: list[tuple[Country, FormatProfile, float]] = []
    for country in countries:
        for fmt in formats:
            jitter = float(rng.lognormal(0.0, 0.25))
            raw.append((country, fmt, country.weight / total_weight * fmt.share * jitter))
    norm = sum(share for _, _, share in raw)
    top = max(share for _, _, share in raw) / norm
    segments = []
    for index, (country, fmt, share) in enumerate(raw):
        share /= norm
        ctr = fmt.ctr * float(rng.lognormal(0.0, 0.15))
        ecpm = fmt.ecpm_usd * country.price_level * float(rng.lognormal(0.0, 0.1))
        n_apps = 2 + int(18 * np.sqrt(share / top))
        placements: list[tuple[str, str]] = []
        for app in range(n_apps):
            app_id = f"app-{country.code.lower()}-{app:03d}"
            for slot in range(1 + app % 3):
                placements.append((app_id, f"{app_id}-{fmt.name}-{slot}"))
        n_campaigns = 3 + int(12 * np.sqrt(share / top))
        campaigns = tuple(f"cmp-{fmt.name[:3]}-{country.code.lower()}-{c:03d}" for c in range(n_campaigns))
        segments.append(
            Segment(
                index=index,
                country=country.code,
                ad_format=fmt.name,
                key=segment_key(country.code, fmt.name),
                key_bytes=segment_key(country.code, fmt.name).encode(),
                share=share,
                ctr=ctr,
                ecpm_usd=ecpm,
                ecpm_sigma=fmt.ecpm_sigma,
                utc_offset_h=country.utc_offset_h,
                placements=tuple(placements),
                placement_weights=tuple(_zipf(len(placements)).tolist()),
                campaigns=campaigns,
                campaign_weights=tuple(_zipf(n_campaigns).tolist()),
            )
        )
    return tuple(segments)


SEGMENTS: tuple[Segment, ...] = build_segments()
SEGMENT_KEYS: tuple[str, ...] = tuple(s.key for s in SEGMENTS)
