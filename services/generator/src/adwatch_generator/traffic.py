"""The traffic model: seasonal, over-dispersed ad events per segment, with scenarios injected.

This is the one place that decides how much traffic there is, how often it is clicked and
what it pays; the event layout lives in :mod:`adwatch_generator.events` and the moving clock
in :mod:`adwatch_generator.stream`. Pure and vectorised (numpy in, an :class:`EventBatch`
out): no Kafka, no clock. Time is always an argument, and the same seed, range and step
give the same bytes.

How a slice ``[lo, hi)`` of event time is made:
1. cut it at minute boundaries and scenario starts/ends, so every factor is constant within a piece;
2. per segment, expected impressions = rate x share x daily/weekly season x per-minute gamma
   noise x scenario factor; draw Poisson counts and uniform times;
3. each impression gets a log-normal price and clicks with probability CTR (season x noise x
   scenario); a click follows its impression after a short delay and names it (``impression_id``);
4. orphan clicks (no ``impression_id``) only come from ``click_flood_without_impressions``.
Clicks that fall after the slice wait in the stream until their time comes.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import numpy as np

from adwatch_generator import catalog
from adwatch_generator.catalog import Segment
from adwatch_generator.events import CLICK, IMPRESSION, ORPHAN_CLICK, EventBatch, EventEncoder, Placements
from adwatch_generator.scenarios import Scenario
from adwatch_generator.stream import EventStream

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

CLICK_DELAY_MIN_MS = 300
CLICK_DELAY_MEAN_MS = 2_500
CLICK_DELAY_MAX_MS = 30_000
ORPHAN_FLOOR_PER_MINUTE = 6.0
TARGET_EVENTS_PER_SLICE = 200_000

Rates = tuple[np.ndarray, np.ndarray, np.ndarray]  # per segment: impressions per ms, CTR, mean eCPM (USD)


class Factors:
    """Per-segment multipliers of traffic, CTR and price, and orphan clicks per ms, at one instant."""

    __slots__ = ("affected", "ctr", "ecpm", "orphan", "traffic")

    def __init__(self, n: int) -> None:
        self.traffic = np.ones(n)
        self.ctr = np.ones(n)
        self.ecpm = np.ones(n)
        self.orphan = np.zeros(n)
        self.affected = np.zeros(n, bool)


class TrafficModel:
    """Ad traffic over :data:`catalog.SEGMENTS` at ``rate`` events/s on average (clicks included).

    ``traffic_cv``/``ctr_cv``/``ecpm_cv`` are the per-segment-per-minute wobble (coefficient of
    variation) on top of Poisson/binomial noise; 0 turns it off.
    """

    def __init__(
        self,
        seed: int = 42,
        rate: float = 80.0,
        *,
        traffic_cv: float = 0.08,
        ctr_cv: float = 0.06,
        ecpm_cv: float = 0.03,
        segments: Sequence[Segment] = catalog.SEGMENTS,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.seed = int(seed)
        self.rate = float(rate)
        self.segments: tuple[Segment, ...] = tuple(segments)
        self.segment_keys: tuple[str, ...] = tuple(s.key for s in self.segments)
        self.traffic_cv, self.ctr_cv, self.ecpm_cv = traffic_cv, ctr_cv, ecpm_cv
        segs = self.segments
        self._index = {s.key: i for i, s in enumerate(segs)}
        self._share = np.array([s.share for s in segs])
        self._ctr = np.array([s.ctr for s in segs])
        # Impressions per ms so that impressions + clicks average ``rate`` per second.
        self._imp_per_ms = self.rate * self._share / (1.0 + self._ctr) / 1000.0
        self._ecpm = np.array([s.ecpm_usd for s in segs])
        self._sigma = np.array([s.ecpm_sigma for s in segs])
        self._offset_ms = np.array([s.utc_offset_h * HOUR_MS for s in segs])
        # Inventory CDFs: segment i's CDF lives in [i, i+1], so one searchsorted serves all segments.
        self._placement_cdf = _stacked_cdf([s.placement_weights for s in segs])
        self._campaign_cdf = _stacked_cdf([s.campaign_weights for s in segs])
        self._encoder = EventEncoder(segs, self.seed)
        self._minute_cache: OrderedDict[int, Rates] = OrderedDict()
        self._scenario_rows: dict[tuple[str, ...], np.ndarray] = {}

    # --- time structure ---------------------------------------------------------------------
    def seasonal(self, t_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Traffic, CTR and price multipliers per segment at ``t_ms`` (local time of day, weekday)."""
        local_ms = t_ms + self._offset_ms
        hour = (local_ms % DAY_MS) / HOUR_MS
        weekday = (local_ms // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        week = np.where(weekday >= 5, catalog.WEEKEND_FACTOR, catalog.WEEKDAY_FACTOR)

        def daily(amplitude: float, peak: float) -> np.ndarray:
            shape: np.ndarray = 1.0 + amplitude * np.cos(2 * np.pi * (hour - peak) / 24.0)
            return shape

        traffic = daily(catalog.TRAFFIC_DAILY_AMPLITUDE, catalog.TRAFFIC_PEAK_HOUR) * week
        return (
            traffic,
            daily(catalog.CTR_DAILY_AMPLITUDE, catalog.CTR_PEAK_HOUR),
            daily(catalog.ECPM_DAILY_AMPLITUDE, catalog.ECPM_PEAK_HOUR),
        )

    @property
    def base_rates(self) -> Rates:
        """Impressions per ms, CTR and mean eCPM per segment before season, noise and scenarios (read-only)."""
        return self._imp_per_ms, self._ctr, self._ecpm

    def _minute(self, minute_ms: int) -> Rates:
        """Impressions per ms, CTR and mean price per segment in one minute, noise included.

        The season is taken at mid-minute and the minute's gamma noise has mean 1.
        """
        cached = self._minute_cache.get(minute_ms)
        if cached is not None:
            return cached
        traffic, ctr, ecpm = self.seasonal(minute_ms + MINUTE_MS // 2)
        rng = np.random.default_rng([self.seed, 1, minute_ms // MINUTE_MS])
        n = len(self.segments)
        result = (
            self._imp_per_ms * traffic * _gamma_noise(rng, self.traffic_cv, n),
            np.clip(self._ctr * ctr * _gamma_noise(rng, self.ctr_cv, n), 0.0, 1.0),
            self._ecpm * ecpm * _gamma_noise(rng, self.ecpm_cv, n),
        )
        self._minute_cache[minute_ms] = result
        if len(self._minute_cache) > 16:
            self._minute_cache.popitem(last=False)
        return result

    def scenario_rows(self, scenario: Scenario) -> np.ndarray:
        """Rows (in :attr:`segments`) of the segments the scenario names."""
        rows = self._scenario_rows.get(scenario.segments)
        if rows is None:
            rows = np.array([self._index[k] for k in scenario.segments if k in self._index], dtype=np.int64)
            self._scenario_rows[scenario.segments] = rows
        return rows

    def factors(self, t_ms: int, scenarios: Sequence[Scenario], click_rate: np.ndarray) -> Factors:
        """What the scenarios active at ``t_ms`` do to each segment (``click_rate``: clicks per ms)."""
        factors = Factors(len(self.segments))
        for sc in scenarios:
            if not sc.start_ms <= t_ms < sc.end_ms or sc.kind == "clean":
                continue
            rows = self.scenario_rows(sc)
            factors.affected[rows] = True
            if sc.kind in ("ctr_drop", "ctr_spike"):
                factors.ctr[rows] *= sc.magnitude
            elif sc.kind in ("traffic_spike", "traffic_drop"):
                factors.traffic[rows] *= sc.magnitude
            elif sc.kind == "ecpm_drop":
                factors.ecpm[rows] *= sc.magnitude
            elif sc.kind == "click_flood_without_impressions":
                floor = ORPHAN_FLOOR_PER_MINUTE / MINUTE_MS
                factors.orphan[rows] += np.maximum(sc.magnitude * click_rate[rows], floor)
        return factors

    @staticmethod
    def cuts(lo: int, hi: int, scenarios: Sequence[Scenario]) -> list[int]:
        """Boundaries in ``[lo, hi]`` where any factor may change (minutes, scenario starts and ends)."""
        points = {lo, hi}
        points.update(range((lo // MINUTE_MS + 1) * MINUTE_MS, hi, MINUTE_MS))
        for sc in scenarios:
            points.update(t for t in (sc.start_ms, sc.end_ms) if lo < t < hi)
        return sorted(points)

    # --- generation ---------------------------------------------------------------------------
    def default_step_ms(self) -> int:
        """Slice length that keeps a slice near :data:`TARGET_EVENTS_PER_SLICE` events."""
        step = int(TARGET_EVENTS_PER_SLICE / (self.rate * 2.0) * 1000)
        for candidate in (MINUTE_MS, 30_000, 10_000, 5_000, 1_000, 500, 200, 100):
            if candidate <= step:
                return candidate
        return 100

    def stream(
        self, start_ms: int, scenarios: Sequence[Scenario] = (), step_ms: int | None = None, encode: bool = True
    ) -> EventStream:
        return EventStream(self, start_ms, scenarios, step_ms or self.default_step_ms(), encode)

    def generate(
        self,
        start_ms: int,
        end_ms: int,
        scenarios: Sequence[Scenario] = (),
        step_ms: int | None = None,
        encode: bool = True,
    ) -> Iterator[EventBatch]:
        """Batches of events with event time in ``[start_ms, end_ms)``, in time order.

        ``encode=False``: columns only (segment, kind, time, revenue), several times faster.
        """
        stream = self.stream(start_ms, scenarios, step_ms, encode)
        while stream.cursor_ms < end_ms:
            batch = stream.advance(min(stream.next_boundary(), end_ms))
            if len(batch):
                yield batch

    def make_slice(self, lo: int, hi: int, scenarios: Sequence[Scenario], encode: bool = True) -> EventBatch:
        """Every event caused by impressions in ``[lo, hi)`` (their clicks may come later).

        ``encode=False`` skips the JSON (keys/values stay empty): same columns, for statistics.
        """
        rng = np.random.default_rng([self.seed, 2, lo, hi])
        seg_parts, time_parts, ctr_parts, price_parts, hit_parts = [], [], [], [], []
        orphan_segs, orphan_times = [], []
        for a, b in itertools.pairwise(self.cuts(lo, hi, scenarios)):
            imp_rate, ctr, price = self._minute(a // MINUTE_MS * MINUTE_MS)
            f = self.factors(a, scenarios, imp_rate * ctr)
            counts = rng.poisson(imp_rate * f.traffic * (b - a))
            segs = np.repeat(np.arange(len(counts)), counts)
            seg_parts.append(segs)
            time_parts.append(rng.integers(a, b, len(segs)))
            ctr_parts.append(np.clip(ctr * f.ctr, 0.0, 1.0)[segs])
            price_parts.append((price * f.ecpm)[segs])
            hit_parts.append(f.affected[segs])
            if f.orphan.any():
                n_orphans = rng.poisson(f.orphan * (b - a))
                segs_o = np.repeat(np.arange(len(n_orphans)), n_orphans)
                orphan_segs.append(segs_o)
                orphan_times.append(rng.integers(a, b, len(segs_o)))
        seg = np.concatenate(seg_parts)
        times = np.concatenate(time_parts)
        affected = np.concatenate(hit_parts)
        n = len(seg)
        # Log-normal price with the segment's mean: exp(mu + s Z - s^2/2).
        sigma = self._sigma[seg]
        prices = np.concatenate(price_parts) * np.exp(sigma * rng.standard_normal(n) - sigma**2 / 2)
        revenue = np.round(prices / 1000.0, 9)
        impressions = self._place(rng, seg, times)
        clicked = np.flatnonzero(rng.random(n) < np.concatenate(ctr_parts))
        delays = rng.exponential(CLICK_DELAY_MEAN_MS, len(clicked)).astype(np.int64)
        click_times = times[clicked] + np.minimum(CLICK_DELAY_MIN_MS + delays, CLICK_DELAY_MAX_MS)
        o_seg = np.concatenate(orphan_segs) if orphan_segs else np.empty(0, np.int64)
        m = len(o_seg)
        o_times = np.concatenate(orphan_times) if orphan_segs else np.empty(0, np.int64)
        orphans = self._place(rng, o_seg, o_times)
        c = len(clicked)
        all_times = np.concatenate([times, click_times, o_times])
        order = np.argsort(all_times, kind="stable")
        keys: list[bytes] = []
        values: list[bytes] = []
        if encode:
            idx = order.tolist()
            keys, values = self._encoder.encode(lo, impressions, revenue, clicked, click_times, orphans)
            keys, values = [keys[i] for i in idx], [values[i] for i in idx]
        kinds = np.concatenate(
            [np.full(n, IMPRESSION, np.int8), np.full(c, CLICK, np.int8), np.full(m, ORPHAN_CLICK, np.int8)]
        )
        return EventBatch(
            keys,
            values,
            all_times[order],
            kinds[order],
            np.concatenate([affected, affected[clicked], np.ones(m, bool)])[order],
            np.concatenate([seg, seg[clicked], o_seg])[order],
            np.concatenate([revenue, np.zeros(c + m)])[order],
        )

    def _place(self, rng: np.random.Generator, seg: np.ndarray, times: np.ndarray) -> Placements:
        """Draw a placement, a campaign and a user for each event (in this order: the seed's bytes depend on it)."""
        n = len(seg)
        placement = np.searchsorted(self._placement_cdf, seg + rng.random(n))
        campaign = np.searchsorted(self._campaign_cdf, seg + rng.random(n))
        return Placements(seg, times, placement, campaign, rng.integers(0, 2**62, n))


def _stacked_cdf(weights: Sequence[Sequence[float]]) -> np.ndarray:
    """Segment i's cumulative weights, normalised and shifted into ``(i, i+1]``, one after the other."""
    cdf: np.ndarray = np.concatenate([i + np.cumsum(w) / np.sum(w) for i, w in enumerate(weights)])
    return cdf


def _gamma_noise(rng: np.random.Generator, cv: float, n: int) -> np.ndarray:
    """Mean-1 multipliers with coefficient of variation ``cv`` (the over-dispersion)."""
    if cv <= 0:
        return np.ones(n)
    shape = 1.0 / cv**2
    noise: np.ndarray = rng.gamma(shape, 1.0 / shape, n)
    return noise
