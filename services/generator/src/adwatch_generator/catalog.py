"""The fixed world the generator simulates: countries, ad formats and the segments they span.

The structure (shares, CTRs, prices, apps, campaigns) is the same for every seed, so
"US banner is the biggest cell" holds in every run; the seed only drives the events.

Two levels: 16 countries x 4 formats make 64 *cells* (:class:`Segment`: share, CTR, price,
season), and below them a long tail, Zipf-like, of 2,000 apps (with their placements),
3,000 campaigns, a handful of exchanges and device OSes, shared across cells: an app sells
some formats in every country, a campaign targets some countries and formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adwatch.contracts import AD_FORMATS, AdFormat, segment_id, segment_key


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

# --- the long tail below the cells --------------------------------------------------------
N_APPS = 2_000
N_CAMPAIGNS = 3_000
APP_ZIPF = 1.1
CAMPAIGN_ZIPF = 1.05
GLOBAL_CAMPAIGNS = 40
"""The biggest campaigns run in every country and format; the others target a few of each."""
EXCHANGES: tuple[str, ...] = ("google_adx", "applovin", "unity_ads", "ironsource", "mintegral", "pubmatic")
EXCHANGE_WEIGHTS: tuple[float, ...] = (0.32, 0.24, 0.17, 0.12, 0.10, 0.05)
DEVICE_OSES: tuple[str, ...] = ("android", "ios", "ipados")
APPLE_SHARE: dict[str, float] = {
    "US": 0.55, "JP": 0.65, "GB": 0.50, "CA": 0.55, "AU": 0.55, "DE": 0.38, "FR": 0.40, "KR": 0.30,
    "IN": 0.05, "ID": 0.08, "NG": 0.05, "BR": 0.15, "MX": 0.22, "TR": 0.20, "ES": 0.30, "IT": 0.32,
}  # fmt: skip
IPAD_SHARE_OF_APPLE = 0.12
FORMAT_SUPPORT: dict[str, float] = {"banner": 0.9, "interstitial": 0.6, "rewarded_video": 0.4, "native": 0.5}
"""Probability that an app sells a format (every app sells at least one)."""


def app_id(index: int) -> str:
    return f"com.adwatch.app{index:04d}"


def campaign_id(index: int) -> str:
    return f"cmp-{index:04d}"


@dataclass(frozen=True, eq=False)
class Segment:
    """One country x format cell, with its long tail of apps/placements, campaigns, exchanges, OSes.

    ``share`` is its fraction of all traffic, ``ctr`` its base CTR, ``ecpm_usd`` its mean price.
    Within a cell an event's placement (and so its app), campaign, exchange and device OS are
    drawn independently with the ``*_weights``; the same app or campaign appears in many cells.
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
    exchanges: tuple[str, ...] = EXCHANGES
    exchange_weights: tuple[float, ...] = EXCHANGE_WEIGHTS
    device_oses: tuple[str, ...] = DEVICE_OSES
    device_os_weights: tuple[float, ...] = (0.7, 0.26, 0.04)

    @property
    def dimensions(self) -> dict[str, str]:
        return {"country": self.country, "ad_format": self.ad_format}


def _zipf(n: int, exponent: float = 1.1) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    normalised: np.ndarray = weights / weights.sum()
    return normalised


@dataclass(frozen=True)
class _LongTail:
    """The apps (with the formats they sell and their placements) and campaigns (with their targets)."""

    app_weight: np.ndarray  # (apps,) global Zipf popularity
    app_country: np.ndarray  # (apps, countries) local popularity multiplier
    app_formats: np.ndarray  # (apps, formats) bool: sells this format
    slots: np.ndarray  # (apps,) placements per format
    campaign_weight: np.ndarray  # (campaigns,)
    campaign_target: np.ndarray  # (campaigns, countries, formats) bool


def _long_tail(n_countries: int, n_formats: int, support: Sequence[float]) -> _LongTail:
    rng = np.random.default_rng(_STRUCTURE_SEED + 1)
    app_weight = _zipf(N_APPS, APP_ZIPF)
    app_country = rng.lognormal(0.0, 0.6, (N_APPS, n_countries))
    app_formats = rng.random((N_APPS, n_formats)) < np.asarray(support)
    app_formats[np.arange(N_APPS), rng.integers(0, n_formats, N_APPS)] = True
    app_formats[:20] = True  # the big apps sell every format
    slots = 1 + rng.integers(0, 3, N_APPS)
    campaign_weight = _zipf(N_CAMPAIGNS, CAMPAIGN_ZIPF) * rng.lognormal(0.0, 0.2, N_CAMPAIGNS)
    n_target_countries = np.minimum(n_countries, 1 + rng.geometric(0.45, N_CAMPAIGNS))
    target = np.zeros((N_CAMPAIGNS, n_countries, n_formats), bool)
    for c in range(N_CAMPAIGNS):
        if c < GLOBAL_CAMPAIGNS:
            target[c] = True
            continue
        countries = rng.choice(n_countries, int(n_target_countries[c]), replace=False)
        formats = rng.choice(n_formats, 1 + int(rng.random() < 0.3), replace=False)
        target[c, np.ix_(countries, formats)[0], np.ix_(countries, formats)[1]] = True
    return _LongTail(app_weight, app_country, app_formats, slots, campaign_weight, target)


def build_segments(
    countries: tuple[Country, ...] = COUNTRIES, formats: tuple[FormatProfile, ...] = FORMATS
) -> tuple[Segment, ...]:
    """All segments with their shares (summing to 1), CTRs, prices and inventory.

    The same for every run seed: the structure has seeds of its own.
    """
    rng = np.random.default_rng(_STRUCTURE_SEED)
    total_weight = sum(c.weight for c in countries)
    raw: list[tuple[Country, FormatProfile, float]] = []
    for country in countries:
        for fmt in formats:
            jitter = float(rng.lognormal(0.0, 0.25))
            raw.append((country, fmt, country.weight / total_weight * fmt.share * jitter))
    norm = sum(share for _, _, share in raw)
    tail = _long_tail(len(countries), len(formats), [FORMAT_SUPPORT.get(f.name, 0.5) for f in formats])
    apps = [app_id(a) for a in range(N_APPS)]
    campaign_ids = [campaign_id(c) for c in range(N_CAMPAIGNS)]
    # placement ids per (app, format): app slots, shared by every country's cell of that format
    placement_ids = {
        (a, f.name): tuple(f"{apps[a]}.{f.name}.{slot}" for slot in range(int(tail.slots[a])))
        for a in range(N_APPS)
        for f in formats
    }
    slot_weights = {n: _zipf(n, 1.0) for n in (1, 2, 3)}
    exchange_rng = np.random.default_rng(_STRUCTURE_SEED + 2)
    segments = []
    for index, (country, fmt, share) in enumerate(raw):
        ci, fi = divmod(index, len(formats))
        share /= norm
        ctr = fmt.ctr * float(rng.lognormal(0.0, 0.15))
        ecpm = fmt.ecpm_usd * country.price_level * float(rng.lognormal(0.0, 0.1))
        sold = np.flatnonzero(tail.app_formats[:, fi])
        app_w = tail.app_weight[sold] * tail.app_country[sold, ci]
        placements: list[tuple[str, str]] = []
        weights: list[float] = []
        for a, w in zip(sold.tolist(), app_w.tolist(), strict=True):
            ids = placement_ids[(a, fmt.name)]
            placements += [(apps[a], p) for p in ids]
            weights += (w * slot_weights[len(ids)]).tolist()
        targeted = np.flatnonzero(tail.campaign_target[:, ci, fi])
        cw = tail.campaign_weight[targeted]
        apple = APPLE_SHARE.get(country.code, 0.3)
        ex_w = np.asarray(EXCHANGE_WEIGHTS) * exchange_rng.lognormal(0.0, 0.2, len(EXCHANGES))
        total = float(sum(weights))
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
                placement_weights=tuple(w / total for w in weights),
                campaigns=tuple(campaign_ids[c] for c in targeted.tolist()),
                campaign_weights=tuple((cw / cw.sum()).tolist()),
                exchange_weights=tuple((ex_w / ex_w.sum()).tolist()),
                device_os_weights=(1.0 - apple, apple * (1 - IPAD_SHARE_OF_APPLE), apple * IPAD_SHARE_OF_APPLE),
            )
        )
    return tuple(segments)


SEGMENTS: tuple[Segment, ...] = build_segments()
SEGMENT_KEYS: tuple[str, ...] = tuple(s.key for s in SEGMENTS)
CELL_DIMENSIONS: tuple[str, ...] = ("country", "ad_format")
"""The dimensions of a catalogue cell (a :class:`Segment`); the others are drawn within a cell."""


def top_values(
    dimension: str,
    n: int = 1,
    *,
    country: str | None = None,
    ad_format: str | None = None,
    segments: Sequence[Segment] = SEGMENTS,
) -> list[tuple[str, float]]:
    """The ``n`` biggest values of ``dimension`` (``app_id``, ``campaign_id``, ``placement_id``,
    ``exchange``, ``device_os``, ``country``, ``ad_format``) by expected share of the traffic of
    the cells of ``country``/``ad_format`` (all when None), biggest first, with that share.

    For tests and benchmarks that target a big campaign or app: ``top_values("campaign_id",
    country="US", ad_format="banner")``.
    """
    cells = [s for s in segments if country in (None, s.country) and ad_format in (None, s.ad_format)]
    if not cells:
        raise ValueError(f"no cell with country={country!r}, ad_format={ad_format!r}")
    total = sum(s.share for s in cells)
    volume: dict[str, float] = {}
    for s in cells:
        for value, weight in _values_of(s, dimension):
            volume[value] = volume.get(value, 0.0) + s.share * weight / total
    ranked = sorted(volume.items(), key=lambda item: (-item[1], item[0]))
    return ranked[:n]


def top_segment_id(dimension: str, *, country: str | None = None, ad_format: str | None = None) -> str:
    """The segment id of the biggest value of ``dimension`` in those cells, e.g. ``campaign_id=cmp-0000``
    (the value's whole segment, every cell it runs in; add ``country``/``ad_format`` to scope it)."""
    value = top_values(dimension, 1, country=country, ad_format=ad_format)[0][0]
    return segment_id({dimension: value})


def _values_of(s: Segment, dimension: str) -> list[tuple[str, float]]:
    if dimension in CELL_DIMENSIONS:
        return [(s.country if dimension == "country" else s.ad_format, 1.0)]
    if dimension == "app_id":
        apps: dict[str, float] = {}
        for (app, _), w in zip(s.placements, s.placement_weights, strict=True):
            apps[app] = apps.get(app, 0.0) + w
        return list(apps.items())
    table = {
        "placement_id": ([p for _, p in s.placements], s.placement_weights),
        "campaign_id": (s.campaigns, s.campaign_weights),
        "exchange": (s.exchanges, s.exchange_weights),
        "device_os": (s.device_oses, s.device_os_weights),
    }
    if dimension not in table:
        raise ValueError(f"unknown dimension {dimension!r}")
    values, weights = table[dimension]
    return list(zip(values, weights, strict=True))
