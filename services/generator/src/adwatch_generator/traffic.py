"""The traffic model: seasonal, over-dispersed ad events per segment, with scenarios injected.

This is the one place that decides how much traffic there is, how often it is clicked and
what it pays; the event layout lives in :mod:`adwatch_generator.events` and the moving clock
in :mod:`adwatch_generator.stream`. Pure and vectorised (numpy in, an :class:`EventBatch`
out): no Kafka, no clock. Time is always an argument, and the same seed, range and step
give the same bytes.

How a slice ``[lo, hi)`` of event time is made:
1. cut it at minute boundaries and scenario starts/ends, so every factor is constant within a piece;
2. per cell (country x format), expected impressions = rate x share x daily/weekly season x
   per-minute gamma noise x scenario factor; draw Poisson counts and uniform times;
3. each impression draws its placement (app), campaign, exchange and device OS from the cell's
   long tail (:mod:`adwatch_generator.inventory`);
4. a scenario on whole cells (``country=US``, ``ad_format=banner,country=US``) scales the cell's
   rates; one on part of a cell (``campaign_id=...``, ``app_id=...``) picks its events out: CTR
   and price factors apply to those events, a traffic factor by thinning (the cell is drawn at
   the largest factor, each event kept with its factor over that bound: exactly Poisson);
5. each impression gets a log-normal price and clicks with probability CTR (season x noise x
   scenario); a click follows its impression after a short delay and names it (``impression_id``);
6. orphan clicks (no ``impression_id``) only come from ``click_flood_without_impressions``, drawn
   from the targeted segment's own inventory.
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
from adwatch_generator.inventory import Inventory, Target, inventory_of
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
    """Per-cell multipliers of traffic, CTR and price, and orphan clicks per ms, at one instant.

    ``bound``: the largest traffic factor of a scenario on part of the cell (the cell is drawn
    at it and thinned); the other fields are the cell's mean (see :meth:`TrafficModel.factors`).
    """

    __slots__ = ("affected", "bound", "ctr", "ecpm", "orphan", "traffic")

    def __init__(self, n: int) -> None:
        self.traffic = np.ones(n)
        self.ctr = np.ones(n)
        self.ecpm = np.ones(n)
        self.orphan = np.zeros(n)
        self.affected = np.zeros(n, bool)
        self.bound = np.ones(n)


class CompiledScenario:
    """A scenario's segments in the model's terms: the cells it covers whole, and the parts of others."""

    __slots__ = ("fraction", "full", "partial", "targets")

    def __init__(self, targets: Sequence[Target], n_cells: int) -> None:
        self.full = np.zeros(n_cells, bool)
        for t in targets:
            self.full |= t.full
        # a cell covered whole by one segment is not also picked out by another's events
        self.targets = tuple(t for t in targets if (t.partial & ~self.full).any())
        self.partial = np.zeros(n_cells, bool)
        fraction = np.zeros(n_cells)
        for t in self.targets:
            self.partial |= t.partial & ~self.full
            fraction += np.where(self.full, 0.0, t.fraction)
        self.fraction = np.minimum(fraction, 1.0)  # the segments of one scenario taken as disjoint

    def match(self, cell: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Events picked out in the cells it covers in part."""
        hit = np.zeros(len(cell), bool)
        for t in self.targets:
            hit |= t.match(cell, positions)
        hit &= self.partial[cell]
        return hit


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
        # The long tail below the cells: one searchsorted per group serves every cell.
        self.inventory: Inventory = inventory_of(segs)
        self._encoder = EventEncoder(self.inventory, self.seed)
        self._minute_cache: OrderedDict[int, Rates] = OrderedDict()
        self._compiled: dict[tuple[str, ...], CompiledScenario] = {}

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

    def compile(self, scenario: Scenario) -> CompiledScenario:
        """The scenario's segments (any dimensions) as cells and masks of this model's inventory."""
        compiled = self._compiled.get(scenario.segments)
        if compiled is None:
            targets = [self.inventory.target(sid) for sid in scenario.segments]
            compiled = self._compiled[scenario.segments] = CompiledScenario(targets, len(self.segments))
        return compiled

    def scenario_rows(self, scenario: Scenario) -> np.ndarray:
        """Rows (in :attr:`segments`) of the cells the scenario touches, whole or in part."""
        c = self.compile(scenario)
        rows: np.ndarray = np.flatnonzero(c.full | c.partial)
        return rows

    def segment_mask(self, batch: EventBatch, segment: str) -> np.ndarray:
        """Which events of ``batch`` belong to the segment id (any dimensions), from its columns."""
        target = self.inventory.target(segment)
        if not target.masks:
            hit: np.ndarray = target.full[batch.segment_index]
            return hit
        picked: np.ndarray = target.match(batch.segment_index, batch.inventory)
        return picked

    def factors(
        self, t_ms: int, scenarios: Sequence[Scenario], click_rate: np.ndarray, *, mean: bool = True
    ) -> Factors:
        """What the scenarios active at ``t_ms`` do to each cell (``click_rate``: clicks per ms).

        A scenario on whole cells scales them; one on part of a cell (a campaign, an app) moves
        the cell's mean by its share of it (``mean=True``, for expectations), or, for
        :meth:`make_slice` (``mean=False``), only sets the traffic ``bound`` and its orphan
        clicks, its events being picked out one by one. Orphan clicks: ``magnitude`` x the
        segment's normal clicks, at least :data:`ORPHAN_FLOOR_PER_MINUTE` per cell (whole) or per
        segment (part, spread over its cells by its clicks).
        """
        factors = Factors(len(self.segments))
        for sc in scenarios:
            if not sc.start_ms <= t_ms < sc.end_ms or sc.kind == "clean":
                continue
            c = self.compile(sc)
            rows, part, w = c.full, c.partial, c.fraction
            factors.affected |= (rows | part) if mean else rows  # make_slice marks a part's events itself
            m = sc.magnitude
            if sc.kind == "click_flood_without_impressions":
                factors.orphan += self.orphan_rate(sc, click_rate)
                continue
            if sc.kind in ("traffic_spike", "traffic_drop"):
                target = factors.traffic
                factors.bound[part] *= max(m, 1.0)
            else:
                target = factors.ctr if sc.kind in ("ctr_drop", "ctr_spike") else factors.ecpm
            target[rows] *= m
            if mean:
                target[part] *= 1.0 + w[part] * (m - 1.0)
        return factors

    def orphan_rate(self, scenario: Scenario, click_rate: np.ndarray) -> np.ndarray:
        """Orphan clicks per ms per cell that a click flood adds (see :meth:`factors`)."""
        c = self.compile(scenario)
        floor = ORPHAN_FLOOR_PER_MINUTE / MINUTE_MS
        rate = np.where(c.full, np.maximum(scenario.magnitude * click_rate, floor), 0.0)
        own = click_rate * np.where(c.partial, c.fraction, 0.0)
        total = float(own.sum())
        if total > 0:
            rate += own / total * max(scenario.magnitude * total, floor)
        result: np.ndarray = rate
        return result

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
        seg_parts, time_parts, ctr_parts, price_parts, hit_parts, bound_parts, start_parts = ([] for _ in range(7))
        floods: list[tuple[Scenario, np.ndarray, np.ndarray]] = []
        partial = [sc for sc in scenarios if sc.kind != "clean" and self.compile(sc).partial.any()]
        for a, b in itertools.pairwise(self.cuts(lo, hi, scenarios)):
            imp_rate, ctr, price = self._minute(a // MINUTE_MS * MINUTE_MS)
            f = self.factors(a, scenarios, imp_rate * ctr, mean=False)
            counts = rng.poisson(imp_rate * f.traffic * f.bound * (b - a))
            segs = np.repeat(np.arange(len(counts)), counts)
            seg_parts.append(segs)
            time_parts.append(rng.integers(a, b, len(segs)))
            ctr_parts.append((ctr * f.ctr)[segs])
            price_parts.append((price * f.ecpm)[segs])
            hit_parts.append(f.affected[segs])
            bound_parts.append(f.bound[segs])
            start_parts.append(np.full(len(segs), a, np.int64))
            for sc in scenarios:
                if sc.kind == "click_flood_without_impressions" and sc.start_ms <= a < sc.end_ms:
                    n_orphans = rng.poisson(self.orphan_rate(sc, imp_rate * ctr) * (b - a))
                    segs_o = np.repeat(np.arange(len(n_orphans)), n_orphans)
                    floods.append((sc, segs_o, rng.integers(a, b, len(segs_o))))
        seg = np.concatenate(seg_parts)
        times = np.concatenate(time_parts)
        affected = np.concatenate(hit_parts)
        event_ctr = np.concatenate(ctr_parts)
        event_price = np.concatenate(price_parts)
        impressions = self._place(rng, seg, times)
        if partial:
            keep = self._pick_out(
                rng, partial, impressions, np.concatenate(start_parts), np.concatenate(bound_parts),
                affected, event_ctr, event_price,
            )  # fmt: skip
            if keep is not None:
                seg, times, affected = seg[keep], times[keep], affected[keep]
                event_ctr, event_price = event_ctr[keep], event_price[keep]
                impressions = Placements(seg, times, impressions.inventory[keep], impressions.user[keep])
        # Impressions in time order from here on: the final sort then barely moves them, and putting
        # the encoded events in order walks memory in sequence (much faster on a big slice).
        first = np.argsort(times, kind="stable")
        seg, times, affected = seg[first], times[first], affected[first]
        event_ctr, event_price = event_ctr[first], event_price[first]
        impressions = Placements(seg, times, impressions.inventory[first], impressions.user[first])
        n = len(seg)
        # Log-normal price with the segment's mean: exp(mu + s Z - s^2/2).
        sigma = self._sigma[seg]
        prices = event_price * np.exp(sigma * rng.standard_normal(n) - sigma**2 / 2)
        revenue = np.round(prices / 1000.0, 9)
        clicked = np.flatnonzero(rng.random(n) < np.clip(event_ctr, 0.0, 1.0))
        delays = rng.exponential(CLICK_DELAY_MEAN_MS, len(clicked)).astype(np.int64)
        click_times = times[clicked] + np.minimum(CLICK_DELAY_MIN_MS + delays, CLICK_DELAY_MAX_MS)
        orphans = self._place_orphans(rng, floods)
        o_seg, o_times = orphans.segment, orphans.time_ms
        m = len(o_seg)
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
        inventory = impressions.inventory
        return EventBatch(
            keys,
            values,
            all_times[order],
            kinds[order],
            np.concatenate([affected, affected[clicked], np.ones(m, bool)])[order],
            np.concatenate([seg, seg[clicked], o_seg])[order],
            np.concatenate([revenue, np.zeros(c + m)])[order],
            np.concatenate([inventory, inventory[clicked], orphans.inventory])[order],
        )

    def _pick_out(
        self,
        rng: np.random.Generator,
        partial: Sequence[Scenario],
        impressions: Placements,
        piece_start: np.ndarray,
        bound: np.ndarray,
        affected: np.ndarray,
        event_ctr: np.ndarray,
        event_price: np.ndarray,
    ) -> np.ndarray | None:
        """Apply the scenarios on parts of cells to their events (in place); the events to keep, or
        None when no traffic factor applies (then every event stays and no random number is drawn)."""
        traffic: np.ndarray | None = None
        for sc in partial:
            on = (piece_start >= sc.start_ms) & (piece_start < sc.end_ms)
            if not on.any():
                continue
            hit = on & self.compile(sc).match(impressions.segment, impressions.inventory)
            affected |= hit
            if sc.kind in ("ctr_drop", "ctr_spike"):
                event_ctr[hit] *= sc.magnitude
            elif sc.kind == "ecpm_drop":
                event_price[hit] *= sc.magnitude
            elif sc.kind in ("traffic_spike", "traffic_drop"):
                if traffic is None:
                    traffic = np.ones(len(bound))
                traffic[hit] *= sc.magnitude
        if traffic is None:
            return None
        kept: np.ndarray = rng.random(len(bound)) * bound < traffic
        return kept

    def _place(self, rng: np.random.Generator, seg: np.ndarray, times: np.ndarray) -> Placements:
        """Draw a placement, a campaign, an exchange, an OS and a user for each event (in this order:
        the seed's bytes depend on it)."""
        positions = self.inventory.draw(rng, seg)
        return Placements(seg, times, positions, rng.integers(0, 2**62, len(seg)))

    def _place_orphans(
        self, rng: np.random.Generator, floods: Sequence[tuple[Scenario, np.ndarray, np.ndarray]]
    ) -> Placements:
        """The orphan clicks of each flood, drawn from its segment's own inventory."""
        if not floods:
            return Placements(
                np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, 4), np.int64), np.empty(0, np.int64)
            )
        segs, times, positions, users = [], [], [], []
        for sc, seg, t in floods:
            c = self.compile(sc)
            positions.append(self._orphan_positions(rng, c, seg))
            segs.append(seg)
            times.append(t)
            users.append(rng.integers(0, 2**62, len(seg)))
        return Placements(np.concatenate(segs), np.concatenate(times), np.concatenate(positions), np.concatenate(users))

    def _orphan_positions(self, rng: np.random.Generator, c: CompiledScenario, seg: np.ndarray) -> np.ndarray:
        positions = self.inventory.draw(rng, seg)
        for t in c.targets:  # cells covered in part: draw from the segment's own options
            rows = np.flatnonzero(t.partial[seg] & ~c.full[seg])
            if len(rows):
                positions[rows] = self.inventory.draw(rng, seg[rows], t.cdfs)
        return positions


def _gamma_noise(rng: np.random.Generator, cv: float, n: int) -> np.ndarray:
    """Mean-1 multipliers with coefficient of variation ``cv`` (the over-dispersion)."""
    if cv <= 0:
        return np.ones(n)
    shape = 1.0 / cv**2
    noise: np.ndarray = rng.gamma(shape, 1.0 / shape, n)
    return noise
