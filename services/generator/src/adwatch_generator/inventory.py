"""The long tail below the cells as numpy tables, and segments of any dimensions as event masks.

Within a cell an event draws four things independently: a placement (which names its app), a
campaign, an exchange and a device OS (:data:`GROUPS`). Each draw is a *position* in that
group's flat table (cell by cell, in catalogue order), drawn in O(1) with Walker's alias
method (one uniform: its integer part picks a column of the cell, its fraction the side).
A *stacked* CDF (cell ``i``'s options in ``(i, i+1]``, one ``searchsorted`` for every cell)
draws from a segment's own options (its orphan clicks).
Positions map to dimension values (``values[dim][position]``, an index into ``names[dim]``).

A segment id (``campaign_id=cmp-0042``, ``ad_format=banner,app_id=...``, ``country=US``,
``*``) compiles into a :class:`Target`: the cells it covers entirely, the fraction of each
other cell's traffic it holds, and per group a mask of the positions it matches. Because the
four draws are independent, that fraction is the product of the groups' matched weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from adwatch.contracts import parse_segment_id
from adwatch_generator.catalog import CELL_DIMENSIONS, Segment

GROUPS: tuple[tuple[str, ...], ...] = (("app_id", "placement_id"), ("campaign_id",), ("exchange",), ("device_os",))
"""Dimensions drawn together within a cell: one draw per group, the groups independent."""
DRAWN_DIMENSIONS: tuple[str, ...] = tuple(d for group in GROUPS for d in group)
DIMENSIONS: tuple[str, ...] = (*CELL_DIMENSIONS, *DRAWN_DIMENSIONS)


def _options(s: Segment, group: int) -> tuple[list[tuple[str, ...]], Sequence[float]]:
    """A cell's options for one group (rows of values of the group's dimensions) and their weights."""
    if group == 0:
        return list(s.placements), s.placement_weights
    values, weights = {
        1: (s.campaigns, s.campaign_weights),
        2: (s.exchanges, s.exchange_weights),
        3: (s.device_oses, s.device_os_weights),
    }[group]
    return [(v,) for v in values], weights


class Inventory:
    """The stacked draw tables of some cells (see the module docstring)."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = tuple(segments)
        n = len(self.segments)
        self.cell_values: dict[str, tuple[str, ...]] = {
            "country": tuple(s.country for s in self.segments),
            "ad_format": tuple(s.ad_format for s in self.segments),
        }
        self.names: dict[str, list[str]] = {}
        self.values: dict[str, np.ndarray] = {}
        self.cdf: list[np.ndarray] = []
        self.weight: list[np.ndarray] = []  # per position: its weight within its cell (sums to 1 per cell)
        self.cell_of: list[np.ndarray] = []  # per position: its cell
        self.alias: list[_Alias] = []
        for g, dims in enumerate(GROUPS):
            index: list[dict[str, int]] = [{} for _ in dims]
            columns: list[list[int]] = [[] for _ in dims]
            weights: list[np.ndarray] = []
            cells: list[np.ndarray] = []
            for i, s in enumerate(self.segments):
                rows, w = _options(s, g)
                if not rows:
                    raise ValueError(f"cell {s.key} has no {'/'.join(dims)}")
                for d, idx in enumerate(index):
                    col = columns[d]
                    for row in rows:
                        col.append(idx.setdefault(row[d], len(idx)))
                arr = np.asarray(w, dtype=float)
                weights.append(arr / arr.sum())
                cells.append(np.full(len(rows), i, np.int64))
            for d, dim in enumerate(dims):
                self.names[dim] = list(index[d])
                self.values[dim] = np.asarray(columns[d], dtype=np.int64)
            weight = np.concatenate(weights)
            cell_of = np.concatenate(cells)
            self.weight.append(weight)
            self.cell_of.append(cell_of)
            self.cdf.append(_stacked_cdf(weight, cell_of, n))
            self.alias.append(_alias(weight, cell_of, n))
        self.n_cells = n
        self._known: dict[str, frozenset[str]] = {}
        self._targets: dict[str, Target] = {}

    def known(self, dimension: str) -> frozenset[str]:
        """The values a drawn dimension takes (empty for one it does not have)."""
        known = self._known.get(dimension)
        if known is None:
            known = self._known[dimension] = frozenset(self.names.get(dimension, ()))
        return known

    def draw(self, rng: np.random.Generator, cell: np.ndarray, cdfs: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """One position per group for each event of ``cell``: an (events, groups) array
        (from ``cdfs``, stacked CDFs of the same layout, when given)."""
        out = np.empty((len(cell), len(GROUPS)), np.int64)
        if cdfs is not None:
            for g, cdf in enumerate(cdfs):
                out[:, g] = np.searchsorted(cdf, cell + rng.random(len(cell)))
            return out
        for g, (offset, count, prob, alias) in enumerate(self.alias):
            x = rng.random(len(cell)) * count[cell]
            column = x.astype(np.int64)
            side = x - column
            column += offset[cell]
            out[:, g] = np.where(side < prob[column], column, alias[column])
        return out

    def target(self, segment: str) -> Target:
        """What a segment id covers; an unknown dimension or value covers nothing."""
        cached = self._targets.get(segment)
        if cached is None:
            cached = self._targets[segment] = self._target(segment)
        return cached

    def _target(self, segment: str) -> Target:
        dims = parse_segment_id(segment)
        cells = np.ones(self.n_cells, bool)
        for dim in CELL_DIMENSIONS:
            if dim in dims:
                cells &= np.asarray(self.cell_values[dim]) == dims[dim]
        unknown = [d for d in dims if d not in DIMENSIONS]
        if unknown:
            cells[:] = False
        masks: dict[int, np.ndarray] = {}
        fraction = cells.astype(float)
        cdfs = list(self.cdf)
        for g, group in enumerate(GROUPS):
            wanted = [d for d in group if d in dims]
            if not wanted:
                continue
            mask = np.ones(len(self.weight[g]), bool)
            for dim in wanted:
                names = self.names[dim]
                code = names.index(dims[dim]) if dims[dim] in names else -1
                mask &= self.values[dim] == code
            mask &= cells[self.cell_of[g]]
            masks[g] = mask
            matched = np.bincount(self.cell_of[g], weights=self.weight[g] * mask, minlength=self.n_cells)
            fraction *= matched
            # orphan clicks of the segment are drawn from its own options (a cell's own where it has none)
            own = np.where(matched[self.cell_of[g]] > 0, self.weight[g] * mask, self.weight[g])
            cdfs[g] = _stacked_cdf(own, self.cell_of[g], self.n_cells)
        full = cells & (fraction >= 1.0 - 1e-12) if not masks else np.zeros(self.n_cells, bool)
        return Target(segment, full, fraction, masks, cdfs)


@dataclass(frozen=True, eq=False)
class Target:
    """One segment in the model's terms (see :meth:`Inventory.target`)."""

    segment: str
    full: np.ndarray  # bool per cell: every event of the cell is in the segment
    fraction: np.ndarray  # float per cell: expected fraction of the cell's events in the segment
    masks: dict[int, np.ndarray]  # group -> bool per position of the group's table
    cdfs: list[np.ndarray]  # per group: the stacked CDF of the segment's own options

    @property
    def partial(self) -> np.ndarray:
        """Cells the segment covers in part (its events are picked out one by one)."""
        part: np.ndarray = (self.fraction > 0) & ~self.full
        return part

    def match(self, cell: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Which events (their cell, their positions from :meth:`Inventory.draw`) are in the segment."""
        if not self.masks:
            hit: np.ndarray = self.full[cell]
            return hit
        hit = np.ones(len(cell), bool)
        for g, mask in self.masks.items():
            hit &= mask[positions[:, g]]
        return hit


def _stacked_cdf(weight: np.ndarray, cell_of: np.ndarray, n_cells: int) -> np.ndarray:
    """Each cell's cumulative weights (positions grouped by cell, in order), normalised and
    shifted into ``(i, i+1]``, one cell after the other."""
    total = np.bincount(cell_of, weights=weight, minlength=n_cells)
    running = np.cumsum(weight)
    before = np.concatenate([[0.0], np.cumsum(total)[:-1]])
    within = (running - before[cell_of]) / total[cell_of]
    last = np.flatnonzero(np.diff(cell_of, append=n_cells))  # each cell's last position
    within[last] = 1.0  # exactly: a uniform in [0, 1) never lands past a cell's last option
    cdf: np.ndarray = cell_of + np.clip(within, 0.0, 1.0)
    return cdf


_Alias = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # per cell offset, count; per position prob, alias


def _alias(weight: np.ndarray, cell_of: np.ndarray, n_cells: int) -> _Alias:
    """Walker/Vose alias tables of each cell's options (positions grouped by cell, in order)."""
    count = np.bincount(cell_of, minlength=n_cells)
    offset = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    prob = np.ones(len(weight))
    alias = np.arange(len(weight), dtype=np.int64)
    for i in range(n_cells):
        a, k = int(offset[i]), int(count[i])
        w = weight[a : a + k]
        scaled = (w / w.sum() * k).tolist()
        small = [j for j in range(k) if scaled[j] < 1.0]
        large = [j for j in range(k) if scaled[j] >= 1.0]
        while small and large:
            lo, hi = small.pop(), large[-1]
            prob[a + lo] = scaled[lo]
            alias[a + lo] = a + hi
            scaled[hi] += scaled[lo] - 1.0
            if scaled[hi] < 1.0:
                small.append(large.pop())
    return offset, count, prob, alias


_CACHE: dict[tuple[int, ...], tuple[tuple[Segment, ...], Inventory]] = {}


def inventory_of(segments: Sequence[Segment]) -> Inventory:
    """The inventory of these cells, built once per set of cells (models share it)."""
    segs = tuple(segments)
    key = tuple(id(s) for s in segs)
    cached = _CACHE.get(key)
    if cached is None:
        cached = _CACHE[key] = (segs, Inventory(segs))  # the tuple keeps the ids alive
    return cached[1]


def known_values(segments: Sequence[Segment], dimension: str) -> frozenset[str]:
    """Every value ``dimension`` takes in these cells (empty for an unknown dimension)."""
    inv = inventory_of(segments)
    if dimension in inv.cell_values:
        return frozenset(inv.cell_values[dimension])
    return inv.known(dimension)
