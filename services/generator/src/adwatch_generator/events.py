"""What the generator produces: events as numpy columns and as ready-to-send AdEvent JSON.

Kept apart from the traffic model because it is the contract side of the generator: the
sinks, the stream and the model all pass :class:`EventBatch` around, and only this module
knows the byte layout of an event. :class:`EventEncoder` writes the JSON with ``%``
templates instead of ``contracts.encode``: the same records, many times faster.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from adwatch_generator.inventory import GROUPS, Inventory

# EventBatch.kinds: an impression, a click on an impression, a click without one.
IMPRESSION, CLICK, ORPHAN_CLICK = 0, 1, 2

# After event_type, three fragments: country and ad_format (per cell); app_id and placement_id
# (per placement); campaign_id and the dimensions map (per campaign x exchange x device OS).
# Small tables, so the lookups stay in cache.
_IMPRESSION_TEMPLATE = (
    b'{"event_id":"%s%x","event_time_ms":%d,"event_type":"impression",%s%s%s'
    b'"user_hash":"%016x","revenue_usd":%r,"impression_id":null,"schema_version":2}'
)
_CLICK_TEMPLATE = (
    b'{"event_id":"%s%x","event_time_ms":%d,"event_type":"click",%s%s%s'
    b'"user_hash":"%016x","revenue_usd":0.0,"impression_id":"%s%x","schema_version":2}'
)
_ORPHAN_TEMPLATE = (
    b'{"event_id":"%s%x","event_time_ms":%d,"event_type":"click",%s%s%s'
    b'"user_hash":"%016x","revenue_usd":0.0,"impression_id":null,"schema_version":2}'
)


@dataclass
class EventBatch:
    """Encoded events in event-time order: Kafka key (segment) and value (AdEvent JSON) each."""

    keys: list[bytes]
    values: list[bytes]
    times_ms: np.ndarray  # int64, ascending
    kinds: np.ndarray  # int8: IMPRESSION, CLICK, ORPHAN_CLICK
    affected: np.ndarray  # bool: a scenario shaped this event
    segment_index: np.ndarray  # int64: row in TrafficModel.segments (the event's cell)
    revenue_usd: np.ndarray  # float64: 0 for clicks
    inventory: np.ndarray  # int64 (events, 4): positions in the model's Inventory (placement, campaign, ...)

    def __len__(self) -> int:
        return len(self.times_ms)

    def count(self, kind: int) -> int:
        return int(np.count_nonzero(self.kinds == kind))

    @staticmethod
    def empty() -> EventBatch:
        return EventBatch(
            [],
            [],
            np.empty(0, np.int64),
            np.empty(0, np.int8),
            np.empty(0, bool),
            np.empty(0, np.int64),
            np.empty(0),
            np.empty((0, len(GROUPS)), np.int64),
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
            np.concatenate([p.inventory for p in parts])[order],
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
            self.inventory[a:b],
        )


@dataclass(frozen=True)
class Placements:
    """Ads shown (or clicked without one): one row per event, as positions in the inventory.

    ``inventory`` holds, per event, its position in each group's flat table of
    :class:`~adwatch_generator.inventory.Inventory` (placement, campaign, exchange, device OS),
    tables that list every cell's options one cell after the other, in catalogue order.
    """

    segment: np.ndarray
    time_ms: np.ndarray
    inventory: np.ndarray
    user: np.ndarray


class EventEncoder:
    """Keys and AdEvent JSON for one seed's events: ``contracts.decode`` reads back what it was given.

    The bytes equal ``contracts.encode``'s except for how a small float is spelt
    (``8.7437e-05`` here, ``0.000087437`` there).

    Event ids are ``<seed tag>-<slice start, hex>-<row, hex>``: unique within a run, and the
    same for the same seed and slice.
    """

    def __init__(self, inventory: Inventory, seed: int) -> None:
        self._tag = hashlib.sha256(str(seed).encode()).hexdigest()[:6].encode()
        self._key_bytes, self._cell_fragments, self._placement_fragments, self._campaign_fragments = _tables(inventory)
        self._placement_code = inventory.values["placement_id"]
        n_os, n_exchanges = len(inventory.names["device_os"]), len(inventory.names["exchange"])
        self._codes = (
            inventory.values["campaign_id"] * (n_exchanges * n_os),
            inventory.values["exchange"] * n_os,
            inventory.values["device_os"],
        )

    def _campaigns(self, positions: np.ndarray) -> list[int]:
        """Per event, the index of its campaign + dimensions fragment."""
        camp, exch, os_ = self._codes
        combo: np.ndarray = camp[positions[:, 1]] + exch[positions[:, 2]] + os_[positions[:, 3]]
        return combo.tolist()  # type: ignore[no-any-return]

    def encode(
        self,
        slice_start_ms: int,
        impressions: Placements,
        revenue_usd: np.ndarray,
        clicked: np.ndarray,
        click_times_ms: np.ndarray,
        orphans: Placements,
    ) -> tuple[list[bytes], list[bytes]]:
        """(keys, values) of the impressions, then their clicks, then the orphan clicks.

        ``clicked`` holds the rows of the impressions that were clicked, ``click_times_ms`` when.
        """
        prefix = self._tag + b"-%x-" % slice_start_ms
        sf, pf, cf, key_of = self._cell_fragments, self._placement_fragments, self._campaign_fragments, self._key_bytes
        n = len(impressions.segment)
        cell_l = impressions.segment.tolist()
        place_l = self._placement_code[impressions.inventory[:, 0]].tolist()
        camp_l = self._campaigns(impressions.inventory)
        users_l = impressions.user.tolist()
        values = [
            _IMPRESSION_TEMPLATE % (prefix, i, t, sf[s], pf[p], cf[c], u, r)
            for i, t, s, p, c, u, r in zip(
                range(n),
                impressions.time_ms.tolist(),
                cell_l,
                place_l,
                camp_l,
                users_l,
                revenue_usd.tolist(),
                strict=True,
            )
        ]
        keys = [key_of[s] for s in cell_l]
        clicked_l = clicked.tolist()
        values += [
            _CLICK_TEMPLATE % (prefix, n + j, t, sf[cell_l[i]], pf[place_l[i]], cf[camp_l[i]], users_l[i], prefix, i)
            for j, (i, t) in enumerate(zip(clicked_l, click_times_ms.tolist(), strict=True))
        ]
        keys += [keys[i] for i in clicked_l]
        base = n + len(clicked_l)
        orphan_columns = (
            orphans.time_ms.tolist(),
            orphans.segment.tolist(),
            self._placement_code[orphans.inventory[:, 0]].tolist(),
            self._campaigns(orphans.inventory),
            orphans.user.tolist(),
        )
        values += [
            _ORPHAN_TEMPLATE % (prefix, base + j, t, sf[s], pf[p], cf[c], u)
            for j, (t, s, p, c, u) in enumerate(zip(*orphan_columns, strict=True))
        ]
        keys += [key_of[s] for s in orphans.segment.tolist()]
        return keys, values


_Tables = tuple[list[bytes], list[bytes], list[bytes], list[bytes]]
_TABLES: dict[int, tuple[Inventory, _Tables]] = {}


def _json(text: str) -> str:
    """A JSON string's inside (the catalogue's values are plain, but a custom one may not be)."""
    return msgspec.json.encode(text).decode()[1:-1]


def _tables(inventory: Inventory) -> _Tables:
    """The byte fragments of an inventory's events, built once per inventory."""
    cached = _TABLES.get(id(inventory))
    if cached is not None:
        return cached[1]
    segments = inventory.segments
    cells = [f'"country":"{_json(s.country)}","ad_format":"{_json(s.ad_format)}",'.encode() for s in segments]
    app_of = np.zeros(len(inventory.names["placement_id"]), np.int64)
    app_of[inventory.values["placement_id"]] = inventory.values["app_id"]
    apps = inventory.names["app_id"]
    placement_fragments = [
        f'"app_id":"{_json(apps[a])}","placement_id":"{_json(p)}",'.encode()
        for p, a in zip(inventory.names["placement_id"], app_of.tolist(), strict=True)
    ]
    dims = [
        f'"dimensions":{{"device_os":"{_json(o)}","exchange":"{_json(x)}"}},'
        for x in inventory.names["exchange"]
        for o in inventory.names["device_os"]
    ]
    campaign_fragments = [
        f'"campaign_id":"{_json(c)}",{d}'.encode() for c in inventory.names["campaign_id"] for d in dims
    ]
    tables = ([s.key_bytes for s in segments], cells, placement_fragments, campaign_fragments)
    _TABLES[id(inventory)] = (inventory, tables)
    return tables
