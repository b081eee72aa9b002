"""World b: a second traffic model for the quality benchmark, unlike the generator's (issue #14).

The rules were developed on the generator's :class:`~adwatch_generator.traffic.TrafficModel` (one
cosine a day, mild noise), so its quality figure is optimistic. This world differs from it in the
ways real traffic does, and is only used to measure the detector (never to produce events):

- its own catalogue: 13 markets (none of the generator's but none shared in time zone either:
  UTC-5 to UTC+13), other shares, CTRs and prices, 40 apps per market x format (Zipf);
- per-time-zone daily shapes with two peaks (lunch, evening; hours jittered per market) and deep
  nights (3-8 % of the peak);
- weekend effects by format (rewarded video up, banner and native down), the lunch peak later;
- slowly wandering levels (an Ornstein-Uhlenbeck log-level per cell and per app, hourly knots);
- single-minute bursts (x3 to x30 on one app for one minute, one per app every two days), which
  return at once;
- segments dark at night (dayparted apps, and two whole cells: exactly 0 from ~midnight to ~6 h
  local, back at full level each morning);
- a holiday surge: +70 % over three hours in four markets on one day, and back down;
- an orphan-click trickle (~0.8 % of clicks, per app), slow CTR drift (a random walk, +-15 % over a
  week), heavier-tailed noise than the generator's, and whale bids (single impressions paying
  ~150x the mean price) in revenue.

All of it is clean traffic: an alert on any of it is false. Seeded and vectorised: every cell's
expectation is its own stream of the seed (:meth:`WorldB.cell`), so cells are independent of
the order they are asked in. Rows of a cell's arrays are its apps, columns minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adwatch_dev.simulate import gamma_noise, sample_counts

MIN_MS = 60_000
DAY_MIN = 1_440
EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0


@dataclass(frozen=True)
class Market:
    """A country of world b: traffic weight, UTC offset (hours), price level, daily shape."""

    code: str
    utc_offset_h: float
    weight: float
    price_level: float
    lunch_h: float  # local hour of the first peak
    evening_h: float  # local hour of the second (main) peak
    night_floor: float  # traffic at the deepest night, relative to the evening peak


@dataclass(frozen=True)
class Format:
    """An ad format of world b: share of traffic, base CTR, mean eCPM (USD), price spread, weekend factor."""

    name: str
    share: float
    ctr: float
    ecpm_usd: float
    ecpm_sigma: float
    weekend: float


MARKETS: tuple[Market, ...] = (
    Market("PH", 8.0, 14.0, 0.15, 12.5, 21.5, 0.04),
    Market("VN", 7.0, 10.0, 0.10, 12.0, 21.0, 0.05),
    Market("PL", 1.0, 9.0, 0.40, 13.0, 20.5, 0.04),
    Market("TH", 7.0, 8.0, 0.18, 12.5, 21.5, 0.06),
    Market("NL", 1.0, 7.0, 0.75, 12.5, 20.0, 0.03),
    Market("SA", 3.0, 7.0, 0.55, 14.0, 23.0, 0.08),
    Market("AR", -3.0, 6.0, 0.20, 13.5, 22.5, 0.06),
    Market("SE", 1.0, 5.0, 0.80, 12.0, 20.0, 0.03),
    Market("AE", 4.0, 5.0, 0.70, 13.5, 22.5, 0.07),
    Market("EG", 2.0, 5.0, 0.06, 14.0, 23.0, 0.08),
    Market("CO", -5.0, 5.0, 0.15, 12.5, 21.0, 0.05),
    Market("CL", -3.0, 4.0, 0.25, 13.5, 22.0, 0.05),
    Market("NZ", 13.0, 3.0, 0.80, 12.5, 20.5, 0.03),
)

FORMATS: tuple[Format, ...] = (
    Format("banner", 0.40, 0.004, 1.20, 0.55, 0.85),
    Format("interstitial", 0.22, 0.015, 10.0, 0.60, 1.05),
    Format("rewarded_video", 0.20, 0.040, 18.0, 0.60, 1.30),
    Format("native", 0.18, 0.008, 3.50, 0.55, 0.80),
)

HOLIDAY_MARKETS: tuple[str, ...] = ("PH", "VN", "TH", "SA")
HOLIDAY_DAY = 5  # day index from the start (local calendar)
HOLIDAY_RAMP_H = (8.0, 11.0, 18.0, 21.0)  # local: up from 8 to 11 h, hold, down from 18 to 21 h
HOLIDAY_SURGE = 0.70
DARK_CELLS: tuple[tuple[str, str], ...] = (("EG", "native"), ("CL", "interstitial"))
DARK_APP_SHARE = 0.12  # of the other leaves, dayparted apps
BURSTS_PER_APP_DAY = 0.5
WHALES_PER_IMPRESSION = 3e-5
WHALE_PRICE_X = 150.0
ORPHAN_SHARE = 0.008  # orphan clicks per click (median over apps)
TRAFFIC_CV, CTR_CV, ECPM_CV = 0.12, 0.10, 0.06  # per-minute wobble, above the generator's 0.08/0.06/0.03


@dataclass(frozen=True)
class Cell:
    market: Market
    fmt: Format
    share: float  # of all traffic

    @property
    def country(self) -> str:
        return self.market.code

    @property
    def ad_format(self) -> str:
        return self.fmt.name


@dataclass
class CellExpectation:
    """Noise-free expectation of one cell's apps (rows) per minute (columns), plus which world
    feature is active where (for tests and for diagnosing false alerts)."""

    impressions: np.ndarray  # bursts included
    ctr: np.ndarray
    ecpm: np.ndarray  # mean price per 1,000 impressions, whales excluded
    orphans: np.ndarray  # orphan clicks expected per minute (the trickle)
    smooth: np.ndarray  # impressions without the bursts
    burst: np.ndarray  # bool: a single-minute burst
    dark: np.ndarray  # bool: the app is dark (dayparted off)
    holiday: np.ndarray  # the holiday multiplier (1 outside the surge), per minute (1 row)
    weekend: np.ndarray  # bool per minute (1 row): a local weekend day
    local_hour: np.ndarray  # per minute (1 row)


def _wrap(d: np.ndarray) -> np.ndarray:
    out: np.ndarray = (d + 12.0) % 24.0 - 12.0
    return out


def daily_shape(hour: np.ndarray, market: Market, weekend: np.ndarray | bool = False) -> np.ndarray:
    """Traffic at local ``hour`` relative to the evening peak (~1): a lunch and an evening peak
    over a day plateau, a deep night (``night_floor``); at weekends the lunch peak comes later."""
    lunch = market.lunch_h + np.where(weekend, 1.5, 0.0)
    awake = 1.0 / (1.0 + np.exp(-(hour - 7.0) / 0.7)) - 1.0 / (1.0 + np.exp(-(hour - 24.5) / 0.8))
    peaks = 0.55 * np.exp(-0.5 * (_wrap(hour - lunch) / 1.6) ** 2) + 0.75 * np.exp(
        -0.5 * (_wrap(hour - market.evening_h) / 1.8) ** 2
    )
    day = 0.35 * np.clip(awake, 0.0, 1.0) + peaks
    shape: np.ndarray = market.night_floor + (1.0 - market.night_floor) * day / 1.05
    return shape


def daily_mean(market: Market) -> float:
    """The weekday mean of :func:`daily_shape` (traffic is scaled by it: a weekday averages 1)."""
    return float(daily_shape(np.arange(0.0, 24.0, 1 / 60), market).mean())


def _ou_knots(rng: np.random.Generator, rows: int, knots: int, sd: float, tau_knots: float) -> np.ndarray:
    """Stationary Ornstein-Uhlenbeck paths (rows x knots) of standard deviation ``sd``."""
    a = float(np.exp(-1.0 / tau_knots))
    out = np.empty((rows, knots))
    out[:, 0] = rng.normal(0.0, sd, rows)
    eps = rng.normal(0.0, sd * np.sqrt(1 - a * a), (rows, knots))
    for k in range(1, knots):
        out[:, k] = a * out[:, k - 1] + eps[:, k]
    return out


def _interp(knots: np.ndarray, minutes: int, every: int) -> np.ndarray:
    """Linear interpolation of knot values (rows x knots, one every ``every`` minutes) to minutes."""
    x = np.arange(minutes) / every
    i = np.minimum(x.astype(int), knots.shape[1] - 2)
    f = x - i
    out: np.ndarray = knots[:, i] * (1 - f) + knots[:, i + 1] * f
    return out


class WorldB:
    """World b over ``days`` from ``start_ms`` (a UTC midnight) at ``rate`` events/s on average."""

    def __init__(
        self,
        seed: int = 7,
        rate: float = 2000.0,
        *,
        apps: int = 40,
        start_ms: int = 0,
        days: int = 7,
        zipf: float = 1.1,
    ) -> None:
        self.seed, self.rate, self.apps, self.start_ms, self.days = seed, rate, apps, start_ms, days
        self.minutes = days * DAY_MIN
        structure = np.random.default_rng([seed, 0])
        total_w = sum(m.weight for m in MARKETS)
        raw = [
            (m, f, m.weight / total_w * f.share * float(structure.lognormal(0.0, 0.2)))
            for m in MARKETS
            for f in FORMATS
        ]
        norm = sum(s for _, _, s in raw)
        self.cells: tuple[Cell, ...] = tuple(Cell(m, f, s / norm) for m, f, s in raw)
        popularity = (np.arange(apps) + 1.0) ** -zipf
        self.app_share = np.empty((len(self.cells), apps))
        for r in range(len(self.cells)):
            share = popularity * structure.lognormal(0.0, 0.5, apps)
            self.app_share[r] = share / share.sum()
        self.app_ctr = structure.lognormal(0.0, 0.25, apps)
        self.app_ecpm = structure.lognormal(0.0, 0.2, apps)
        dark = structure.random((len(self.cells), apps)) < DARK_APP_SHARE
        for r, c in enumerate(self.cells):
            if (c.country, c.ad_format) in DARK_CELLS:
                dark[r] = True
        self.dark_apps = dark
        self.dark_off_h = structure.uniform(-0.5, 1.5, (len(self.cells), apps)) % 24.0
        self.dark_on_h = structure.uniform(5.5, 7.0, (len(self.cells), apps))

    @property
    def leaves(self) -> list[dict[str, str]]:
        """Leaf dimensions ``country, ad_format, app_id``, cell-major (cell r's apps are rows r*apps...)."""
        return [
            {"country": c.country, "ad_format": c.ad_format, "app_id": f"app{a:03d}"}
            for c in self.cells
            for a in range(self.apps)
        ]

    def ranked(self) -> list[int]:
        """Cell rows by share, biggest first."""
        return sorted(range(len(self.cells)), key=lambda r: -self.cells[r].share)

    def local_time(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(local hour, local day index since the epoch) per minute for cell ``r``."""
        t = self.start_ms // MIN_MS + np.arange(self.minutes) + round(self.cells[r].market.utc_offset_h * 60)
        return (t % DAY_MIN) / 60.0, t // DAY_MIN

    def cell(self, r: int) -> CellExpectation:
        """The expectation of cell ``r``'s apps per minute (its own random stream of the seed)."""
        c, apps, minutes = self.cells[r], self.apps, self.minutes
        rng = np.random.default_rng([self.seed, 1, r])
        hour, day = self.local_time(r)
        weekday = (day + EPOCH_WEEKDAY) % 7
        weekend = weekday >= 5
        shape = daily_shape(hour, c.market, weekend) / daily_mean(c.market) * np.where(weekend, c.fmt.weekend, 1.0)
        first_day = (self.start_ms // MIN_MS + round(c.market.utc_offset_h * 60)) // DAY_MIN
        holiday = np.ones(minutes)
        if c.country in HOLIDAY_MARKETS:
            on = day == first_day + HOLIDAY_DAY
            h0, h1, h2, h3 = HOLIDAY_RAMP_H
            up = np.clip((hour - h0) / (h1 - h0), 0.0, 1.0)
            down = np.clip((h3 - hour) / (h3 - h2), 0.0, 1.0)
            ramp = 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))
            holiday = np.where(on, 1.0 + HOLIDAY_SURGE * ramp, 1.0)
        per_min = self.rate * 60.0 * c.share / (1.0 + c.fmt.ctr)
        hours = minutes // 60 + 2
        wander = np.exp(
            _interp(_ou_knots(rng, 1, hours, 0.08, 12.0), minutes, 60)
            + _interp(_ou_knots(rng, apps, hours, 0.12, 8.0), minutes, 60)
        )
        smooth = per_min * self.app_share[r][:, None] * (shape * holiday)[None, :] * wander
        # dayparted apps: 0 between their off and on hours (local), full level at once each morning
        off, on_h = self.dark_off_h[r][:, None], self.dark_on_h[r][:, None]
        h = hour[None, :]
        dark = np.where(off < on_h, (h >= off) & (h < on_h), (h >= off) | (h < on_h)) & self.dark_apps[r][:, None]
        smooth = np.where(dark, 0.0, smooth)
        burst = rng.random((apps, minutes)) < BURSTS_PER_APP_DAY / DAY_MIN
        burst &= ~dark
        mult = np.where(burst, np.minimum(3.0 + 3.0 * rng.pareto(1.5, (apps, minutes)), 30.0), 1.0)
        knots6 = minutes // 360 + 2
        drift = np.cumsum(rng.normal(0.0, 0.03, (apps, knots6)), axis=1)
        drift -= drift[:, :1]
        ctr_daily = 1.0 + 0.08 * np.cos(2 * np.pi * (hour - 22.0) / 24.0)
        ctr = (
            c.fmt.ctr
            * float(rng.lognormal(0.0, 0.15))
            * self.app_ctr[:, None]
            * ctr_daily[None, :]
            * np.exp(_interp(drift, minutes, 360))
        )
        ecpm_daily = 1.0 + 0.12 * np.cos(2 * np.pi * (hour - 20.0) / 24.0)
        ecpm = (
            c.fmt.ecpm_usd
            * c.market.price_level
            * self.app_ecpm[:, None]
            * ecpm_daily[None, :]
            * np.exp(_interp(_ou_knots(rng, apps, hours, 0.05, 12.0), minutes, 60))
        )
        imps = smooth * mult
        orphan_share = ORPHAN_SHARE * rng.lognormal(0.0, 0.5, (apps, 1))
        orphans = imps * np.clip(ctr, 0.0, 1.0) * orphan_share * (1.0 + 0.3 * np.cos(2 * np.pi * hour / 24.0))[None, :]
        return CellExpectation(
            impressions=imps,
            ctr=np.clip(ctr, 0.0, 1.0),
            ecpm=ecpm,
            orphans=orphans,
            smooth=smooth,
            burst=burst,
            dark=dark,
            holiday=holiday[None, :],
            weekend=weekend[None, :],
            local_hour=hour[None, :],
        )

    def sample(
        self,
        rng: np.random.Generator,
        r: int,
        impressions: np.ndarray,
        ctr: np.ndarray,
        ecpm: np.ndarray,
        orphans: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(impressions, clicks, revenue_usd, orphan_clicks, whale revenue) sampled from the given
        expectations of cell ``r`` (anomalies applied by the caller): heavier-tailed than the
        generator's noise, plus whale bids (included in revenue; returned separately too)."""
        imps, clicks, revenue, orph = sample_counts(
            rng,
            impressions,
            ctr,
            ecpm,
            orphans,
            traffic_cv=TRAFFIC_CV,
            ctr_cv=CTR_CV,
            ecpm_cv=ECPM_CV,
            price_sigma=self.cells[r].fmt.ecpm_sigma,
        )
        whales = rng.poisson(imps * WHALES_PER_IMPRESSION)
        whale_rev = whales * ecpm / 1000.0 * WHALE_PRICE_X * gamma_noise(rng, 0.7, imps.shape)
        return imps, clicks, revenue + whale_rev, orph, whale_rev
