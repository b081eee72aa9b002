"""The traffic model: seasonal, over-dispersed ad events per segment, with scenarios injected.

Pure and vectorised (numpy in, pre-encoded JSON bytes out): no Kafka, no clock. Time is
always an argument, and the same seed, range and step give the same bytes.

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

import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from adwatch.contracts import AdEvent, decode
from adwatch_generator import catalog
from adwatch_generator.catalog import Segment
from adwatch_generator.scenarios import Scenario

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

IMPRESSION, CLICK, ORPHAN_CLICK = 0, 1, 2
KIND_NAMES = ("impression", "click", "click")

CLICK_DELAY_MIN_MS = 300
CLICK_DELAY_MEAN_MS = 2_500
CLICK_DELAY_MAX_MS = 30_000
ORPHAN_FLOOR_PER_MINUTE = 6.0
TARGET_EVENTS_PER_SLICE = 200_000

_IMPRESSION_TEMPLATE = (
    b'{"event_id":"%s%x","event_time_ms":%d,"event_type":"impression",%s"campaign_id":"%s",'
    b'"user_hash":"%016x","revenue_usd":%r,"impression_id":null,"schema_version":1}'
)
_CLICK_TEMPLATE = (
    b'{"event_id":"%s%x","event_time_ms":%d,"event_type":"click",%s"campaign_id":"%s",'
    b'"user_hash":"%016x","revenue_usd":0.0,"impression_id":"%s%x","schema_version":1}'
)
_ORPHAN_TEMPLATE = (
    b'{"event_id":"%s%x","event_time_ms":%d,"event_type":"click",%s"campaign_id":"%s",'
    b'"user_hash":"%016x","revenue_usd":0.0,"impression_id":null,"schema_version":1}'
)


@dataclass
class EventBatch:
    """Encoded events in event-time order: Kafka key (segment) and value (AdEvent JSON) each."""

    keys: list[bytes]
    values: list[bytes]
    times_ms: np.ndarray  # int64, ascending
    kinds: np.ndarray  # int8: IMPRESSION, CLICK, ORPHAN_CLICK
    affected: np.ndarray  # bool: a scenario shaped this event
    segment_index: np.ndarray  # int64: row in TrafficModel.segments
    revenue_usd: np.ndarray  # float64: 0 for clicks

    def __len__(self) -> int:
        return len(self.times_ms)

    def count(self, kind: int) -> int:
        return int(np.count_nonzero(self.kinds == kind))

    def events(self) -> list[AdEvent]:
        """Decoded records (slow; for tests and small runs)."""
        return [decode(v, AdEvent) for v in self.values]

    @staticmethod
    def empty() -> EventBatch:
        return EventBatch(
            [], [], np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0, bool), np.empty(0, np.int64), np.empty(0)
        )

    @staticmethod
    def concat(parts: Sequence[EventBatch]) -> EventBatch:
        """Merge batches and sort by event time (stable: impressions before their clicks)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return EventBatch.empty()
        if len(parts) == 1:
            return parts[0]
        times = np.concatenate([p.times_ms for p in parts])
        order = np.argsort(times, kind="stable")
        keys = [k for p in parts for k in p.keys]
        values = [v for p in parts for v in p.values]
        if len(values) == len(times):
            idx = order.tolist()
            keys, values = [keys[i] for i in idx], [values[i] for i in idx]
        return EventBatch(
            keys,
            values,
            times[order],
            np.concatenate([p.kinds for p in parts])[order],
            np.concatenate([p.affected for p in parts])[order],
            np.concatenate([p.segment_index for p in parts])[order],
            np.concatenate([p.revenue_usd for p in parts])[order],
        )

    def split(self, until_ms: int) -> tuple[EventBatch, EventBatch]:
        """(events before ``until_ms``, the rest)."""
        cut = int(np.searchsorted(self.times_ms, until_ms, side="left"))
        return self._slice(0, cut), self._slice(cut, len(self))

    def _slice(self, a: int, b: int) -> EventBatch:
        return EventBatch(
            self.keys[a:b],
            self.values[a:b],
            self.times_ms[a:b],
            self.kinds[a:b],
            self.affected[a:b],
            self.segment_index[a:b],
            self.revenue_usd[a:b],
        )


@dataclass(frozen=True)
class ExpectedVolumes:
    """Noise-free expectation per segment (rows) and minute (columns), scenarios included."""

    segments: tuple[str, ...]
    minute_start_ms: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    revenue_usd: np.ndarray
    orphan_clicks: np.ndarray

    @property
    def ctr(self) -> np.ndarray:
        ratio: np.ndarray = self.clicks / np.maximum(self.impressions, 1e-12)
        return ratio

    @property
    def ecpm(self) -> np.ndarray:
        price: np.ndarray = 1000.0 * self.revenue_usd / np.maximum(self.impressions, 1e-12)
        return price

    def row(self, segment: str) -> int:
        return self.segments.index(segment)


class _Factors:
    """Per-segment multipliers of traffic, CTR and price, and orphan clicks, at one instant."""

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
        self._key_bytes = [s.key_bytes for s in segs]
        # Inventory tables: segment i's CDF lives in [i, i+1], so one searchsorted serves all segments.
        self._placement_cdf, self._placement_frag = self._table(
            [s.placement_weights for s in segs],
            [
                [
                    (
                        f'"country":"{s.country}","ad_format":"{s.ad_format}",'
                        f'"app_id":"{app}","placement_id":"{placement}",'
                    ).encode()
                    for app, placement in s.placements
                ]
                for s in segs
            ],
        )
        self._campaign_cdf, self._campaign_ids = self._table(
            [s.campaign_weights for s in segs], [[c.encode() for c in s.campaigns] for s in segs]
        )
        self._tag = hashlib.sha256(str(self.seed).encode()).hexdigest()[:6].encode()
        self._minute_cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self._scenario_rows: dict[str, np.ndarray] = {}

    @staticmethod
    def _table(weights: Sequence[Sequence[float]], items: Sequence[Sequence[bytes]]) -> tuple[np.ndarray, list[bytes]]:
        cdf = np.concatenate([i + np.cumsum(w) / np.sum(w) for i, w in enumerate(weights)])
        return cdf, [item for group in items for item in group]

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

    def _minute(self, minute_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Impressions per ms, CTR and mean price per segment in one minute, noise included."""
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
        rows = self._scenario_rows.get(scenario.scenario_id)
        if rows is None:
            rows = np.array([self._index[k] for k in scenario.segments if k in self._index], dtype=np.int64)
            self._scenario_rows[scenario.scenario_id] = rows
        return rows

    def _factors(self, t_ms: int, scenarios: Sequence[Scenario], click_rate: np.ndarray) -> _Factors:
        factors = _Factors(len(self.segments))
        for sc in scenarios:
            if not sc.start_ms <= t_ms < sc.end_ms or sc.kind == "clean":
                continue
            rows = self.scenario_rows(sc)
            factors.affected[rows] = True
            if sc.kind in ("ctr_drop", "ctr_spike"):
                factors.ctr[rows] *= sc.magnitude
            elif sc.kind == "traffic_spike":
                factors.traffic[rows] *= sc.magnitude
            elif sc.kind == "ecpm_drop":
                factors.ecpm[rows] *= sc.magnitude
            elif sc.kind == "click_flood_without_impressions":
                floor = ORPHAN_FLOOR_PER_MINUTE / MINUTE_MS
                factors.orphan[rows] += np.maximum(sc.magnitude * click_rate[rows], floor)
        return factors

    @staticmethod
    def _cuts(lo: int, hi: int, scenarios: Sequence[Scenario]) -> list[int]:
        """Boundaries in ``[lo, hi]`` where any factor may change."""
        points = {lo, hi}
        points.update(range((lo // MINUTE_MS + 1) * MINUTE_MS, hi, MINUTE_MS))
        for sc in scenarios:
            points.update(t for t in (sc.start_ms, sc.end_ms) if lo < t < hi)
        return sorted(points)

    # --- expectations -------------------------------------------------------------------------
    def expected_volumes(self, start_ms: int, end_ms: int, scenarios: Sequence[Scenario] = ()) -> ExpectedVolumes:
        """Expected impressions/clicks/revenue/orphan clicks per segment and minute (no noise).

        The seasonal profile and scenario factors are exactly those used by :meth:`generate`;
        only the per-minute gamma noise is left out (its mean is 1).
        """
        first = start_ms // MINUTE_MS * MINUTE_MS
        minutes = np.arange(first, end_ms, MINUTE_MS, dtype=np.int64)
        shape = (len(self.segments), len(minutes))
        imps, clicks, revenue, orphans = (np.zeros(shape) for _ in range(4))
        for col, minute in enumerate(minutes.tolist()):
            traffic, ctr, ecpm = self.seasonal(minute + MINUTE_MS // 2)
            imp_rate = self._imp_per_ms * traffic
            click_rate = imp_rate * ctr * self._ctr
            cuts = self._cuts(max(minute, start_ms), min(minute + MINUTE_MS, end_ms), scenarios)
            for a, b in itertools.pairwise(cuts):
                f = self._factors(a, scenarios, click_rate)
                n = imp_rate * f.traffic * (b - a)
                imps[:, col] += n
                clicks[:, col] += n * np.clip(self._ctr * ctr * f.ctr, 0, 1)
                revenue[:, col] += n * self._ecpm * ecpm * f.ecpm / 1000.0
                orphans[:, col] += f.orphan * (b - a)
        return ExpectedVolumes(self.segment_keys, minutes, imps, clicks, revenue, orphans)

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

    def events(self, start_ms: int, end_ms: int, scenarios: Sequence[Scenario] = ()) -> list[AdEvent]:
        """All events of a (short) range as records; convenient for tests and examples."""
        return [e for batch in self.generate(start_ms, end_ms, scenarios) for e in batch.events()]

    def make_slice(self, lo: int, hi: int, scenarios: Sequence[Scenario], encode: bool = True) -> EventBatch:
        """Every event caused by impressions in ``[lo, hi)`` (their clicks may come later).

        ``encode=False`` skips the JSON (keys/values stay empty): same columns, for statistics.
        """
        rng = np.random.default_rng([self.seed, 2, lo, hi])
        cuts = self._cuts(lo, hi, scenarios)
        seg_parts, time_parts, ctr_parts, price_parts, hit_parts = [], [], [], [], []
        orphan_segs, orphan_times = [], []
        for a, b in itertools.pairwise(cuts):
            imp_rate, ctr, price = self._minute(a // MINUTE_MS * MINUTE_MS)
            f = self._factors(a, scenarios, imp_rate * ctr)
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
        placement = np.searchsorted(self._placement_cdf, seg + rng.random(n))
        campaign = np.searchsorted(self._campaign_cdf, seg + rng.random(n))
        users = rng.integers(0, 2**62, n)
        clicked = np.flatnonzero(rng.random(n) < np.concatenate(ctr_parts))
        delays = rng.exponential(CLICK_DELAY_MEAN_MS, len(clicked)).astype(np.int64)
        click_times = times[clicked] + np.minimum(CLICK_DELAY_MIN_MS + delays, CLICK_DELAY_MAX_MS)
        o_seg = np.concatenate(orphan_segs) if orphan_segs else np.empty(0, np.int64)
        m = len(o_seg)
        o_times = np.concatenate(orphan_times) if orphan_segs else np.empty(0, np.int64)
        o_place = np.searchsorted(self._placement_cdf, o_seg + rng.random(m))
        o_camp = np.searchsorted(self._campaign_cdf, o_seg + rng.random(m))
        o_users = rng.integers(0, 2**62, m)
        c = len(clicked)
        all_times = np.concatenate([times, click_times, o_times])
        order = np.argsort(all_times, kind="stable")
        keys: list[bytes] = []
        values: list[bytes] = []
        if encode:
            idx = order.tolist()
            keys, values = self._encode(lo, seg, times, placement, campaign, users, revenue, clicked, click_times,
                                        o_seg, o_times, o_place, o_camp, o_users)  # fmt: skip
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

    def _encode(
        self,
        lo: int,
        seg: np.ndarray,
        times: np.ndarray,
        placement: np.ndarray,
        campaign: np.ndarray,
        users: np.ndarray,
        revenue: np.ndarray,
        clicked: np.ndarray,
        click_times: np.ndarray,
        o_seg: np.ndarray,
        o_times: np.ndarray,
        o_place: np.ndarray,
        o_camp: np.ndarray,
        o_users: np.ndarray,
    ) -> tuple[list[bytes], list[bytes]]:
        """Keys and AdEvent JSON (byte-identical to ``contracts.encode``) for impressions, clicks, orphans."""
        prefix = self._tag + b"-%x-" % lo
        pf, cids, key_of = self._placement_frag, self._campaign_ids, self._key_bytes
        n = len(seg)
        seg_l, place_l, camp_l, users_l = seg.tolist(), placement.tolist(), campaign.tolist(), users.tolist()
        values = [
            _IMPRESSION_TEMPLATE % (prefix, i, t, pf[p], cids[c], u, r)
            for i, t, p, c, u, r in zip(
                range(n), times.tolist(), place_l, camp_l, users_l, revenue.tolist(), strict=True
            )
        ]
        keys = [key_of[s] for s in seg_l]
        clicked_l = clicked.tolist()
        values += [
            _CLICK_TEMPLATE % (prefix, n + j, t, pf[place_l[i]], cids[camp_l[i]], users_l[i], prefix, i)
            for j, (i, t) in enumerate(zip(clicked_l, click_times.tolist(), strict=True))
        ]
        keys += [keys[i] for i in clicked_l]
        base = n + len(clicked_l)
        values += [
            _ORPHAN_TEMPLATE % (prefix, base + j, t, pf[p], cids[c], u)
            for j, (t, p, c, u) in enumerate(
                zip(o_times.tolist(), o_place.tolist(), o_camp.tolist(), o_users.tolist(), strict=True)
            )
        ]
        keys += [key_of[s] for s in o_seg.tolist()]
        return keys, values


class EventStream:
    """Event time moving forward: ``advance(until_ms)`` returns every event before ``until_ms``.

    Scenarios can be added or replaced while it runs (a drill reaching a live generator).
    """

    def __init__(
        self, model: TrafficModel, start_ms: int, scenarios: Sequence[Scenario], step_ms: int, encode: bool = True
    ) -> None:
        self.encode = encode
        if step_ms <= 0:
            raise ValueError("step_ms must be positive")
        self.model = model
        self.cursor_ms = int(start_ms)
        self.step_ms = int(step_ms)
        self._scenarios: dict[str, Scenario] = {s.scenario_id: s for s in scenarios}
        self._pending = EventBatch.empty()

    @property
    def scenarios(self) -> list[Scenario]:
        return list(self._scenarios.values())

    def upsert(self, scenario: Scenario) -> bool:
        """Add a scenario or replace the one with its id; False when nothing changed."""
        if self._scenarios.get(scenario.scenario_id) == scenario:
            return False
        self._scenarios[scenario.scenario_id] = scenario
        self.model._scenario_rows.pop(scenario.scenario_id, None)
        return True

    def active(self, t_ms: int) -> list[Scenario]:
        return [s for s in self._scenarios.values() if s.start_ms <= t_ms < s.end_ms and s.kind != "clean"]

    def next_boundary(self) -> int:
        return (self.cursor_ms // self.step_ms + 1) * self.step_ms

    def advance(self, until_ms: int) -> EventBatch:
        parts = [self._pending]
        scenarios = [s for s in self._scenarios.values() if s.kind != "clean"]
        while self.cursor_ms < until_ms:
            hi = min(self.next_boundary(), until_ms)
            relevant = [s for s in scenarios if s.start_ms < hi and s.end_ms > self.cursor_ms]
            parts.append(self.model.make_slice(self.cursor_ms, hi, relevant, self.encode))
            self.cursor_ms = hi
        ready, self._pending = EventBatch.concat(parts).split(until_ms)
        return ready


@dataclass(frozen=True)
class MinuteTotals:
    """Observed impressions/clicks/orphan clicks/revenue per segment (rows) and minute (columns)."""

    minute_start_ms: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    orphan_clicks: np.ndarray
    revenue_usd: np.ndarray


def minute_totals(batches: Iterable[EventBatch], n_segments: int, start_ms: int, end_ms: int) -> MinuteTotals:
    """Aggregate generated batches by segment and event-time minute, without decoding JSON.

    Clicks count in the minute they happen (as a detector sees them); orphan clicks are
    counted in ``clicks`` too and also in ``orphan_clicks``.
    """
    first = start_ms // MINUTE_MS * MINUTE_MS
    minutes = np.arange(first, end_ms, MINUTE_MS, dtype=np.int64)
    size = n_segments * len(minutes)
    imps, clicks, orphans, revenue = np.zeros(size), np.zeros(size), np.zeros(size), np.zeros(size)
    for batch in batches:
        col = (batch.times_ms - first) // MINUTE_MS
        keep = (batch.times_ms >= start_ms) & (batch.times_ms < end_ms)
        cell = (batch.segment_index * len(minutes) + col)[keep]
        kinds = batch.kinds[keep]
        imps += np.bincount(cell[kinds == IMPRESSION], minlength=size)
        clicks += np.bincount(cell[kinds != IMPRESSION], minlength=size)
        orphans += np.bincount(cell[kinds == ORPHAN_CLICK], minlength=size)
        revenue += np.bincount(cell, weights=batch.revenue_usd[keep], minlength=size)
    shape = (n_segments, len(minutes))
    return MinuteTotals(
        minutes, imps.reshape(shape), clicks.reshape(shape), orphans.reshape(shape), revenue.reshape(shape)
    )


def _gamma_noise(rng: np.random.Generator, cv: float, n: int) -> np.ndarray:
    """Mean-1 multipliers with coefficient of variation ``cv`` (the over-dispersion)."""
    if cv <= 0:
        return np.ones(n)
    shape = 1.0 / cv**2
    noise: np.ndarray = rng.gamma(shape, 1.0 / shape, n)
    return noise
