"""Measuring the generator's traffic: what it should produce, and what it did.

Tests and the quality benchmark compare generated events with the model's noise-free
expectation, per segment (rows) and event-time minute (columns). Neither side is needed to
produce traffic, so both live here rather than in the generator image:

- :func:`expected_volumes`: the expectation, from the same seasonality and scenario factors
  that :meth:`TrafficModel.make_slice` draws from (only the per-minute gamma noise, mean 1,
  is left out);
- :func:`minute_totals`: what a run produced, counted from :class:`EventBatch` columns
  without decoding JSON, per cell (country x format); :func:`segment_minute_totals` the same
  for segment ids of any dimensions (``campaign_id=cmp-0042``, ``country=US``...);
- :func:`decoded`: the events of some batches as ``AdEvent`` records (slow; small runs).
"""

from __future__ import annotations

import itertools
import resource
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from adwatch.contracts import AdEvent, decode
from adwatch_generator.events import IMPRESSION, ORPHAN_CLICK, EventBatch
from adwatch_generator.scenarios import Scenario
from adwatch_generator.traffic import MINUTE_MS, TrafficModel


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


def expected_volumes(
    model: TrafficModel, start_ms: int, end_ms: int, scenarios: Sequence[Scenario] = ()
) -> ExpectedVolumes:
    """Expected impressions/clicks/revenue/orphan clicks per segment and minute of ``[start_ms, end_ms)``."""
    first = start_ms // MINUTE_MS * MINUTE_MS
    minutes = np.arange(first, end_ms, MINUTE_MS, dtype=np.int64)
    shape = (len(model.segments), len(minutes))
    imps, clicks, revenue, orphans = (np.zeros(shape) for _ in range(4))
    imp_per_ms, base_ctr, base_ecpm = model.base_rates
    for col, minute in enumerate(minutes.tolist()):
        traffic, ctr, ecpm = model.seasonal(minute + MINUTE_MS // 2)  # as the model: the season at mid-minute
        imp_rate = imp_per_ms * traffic
        click_rate = imp_rate * ctr * base_ctr
        cuts = model.cuts(max(minute, start_ms), min(minute + MINUTE_MS, end_ms), scenarios)
        for a, b in itertools.pairwise(cuts):
            f = model.factors(a, scenarios, click_rate)
            n = imp_rate * f.traffic * (b - a)
            imps[:, col] += n
            clicks[:, col] += n * np.clip(base_ctr * ctr * f.ctr, 0, 1)
            revenue[:, col] += n * base_ecpm * ecpm * f.ecpm / 1000.0
            orphans[:, col] += f.orphan * (b - a)
    return ExpectedVolumes(model.segment_keys, minutes, imps, clicks, revenue, orphans)


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


def segment_minute_totals(
    model: TrafficModel, batches: Iterable[EventBatch], segments: Sequence[str], start_ms: int, end_ms: int
) -> MinuteTotals:
    """:func:`minute_totals` with one row per segment id (any dimensions; rows may overlap), from
    the batches' columns (:meth:`TrafficModel.segment_mask`), without decoding JSON."""
    first = start_ms // MINUTE_MS * MINUTE_MS
    minutes = np.arange(first, end_ms, MINUTE_MS, dtype=np.int64)
    shape = (len(segments), len(minutes))
    imps, clicks, orphans, revenue = (np.zeros(shape) for _ in range(4))
    for batch in batches:
        keep = (batch.times_ms >= start_ms) & (batch.times_ms < end_ms)
        col = ((batch.times_ms - first) // MINUTE_MS)[keep]
        kinds, money = batch.kinds[keep], batch.revenue_usd[keep]
        for row, segment in enumerate(segments):
            mine = model.segment_mask(batch, segment)[keep]
            imps[row] += np.bincount(col[mine & (kinds == IMPRESSION)], minlength=len(minutes))
            clicks[row] += np.bincount(col[mine & (kinds != IMPRESSION)], minlength=len(minutes))
            orphans[row] += np.bincount(col[mine & (kinds == ORPHAN_CLICK)], minlength=len(minutes))
            revenue[row] += np.bincount(col[mine], weights=money[mine], minlength=len(minutes))
    return MinuteTotals(minutes, imps, clicks, orphans, revenue)


def decoded(batches: Iterable[EventBatch]) -> list[AdEvent]:
    """The events of encoded batches as records, in batch order (slow; for tests and examples)."""
    return [decode(value, AdEvent) for batch in batches for value in batch.values]


def rss_mb() -> float:
    """This process's resident memory now, in MB (the peak where /proc is missing)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
