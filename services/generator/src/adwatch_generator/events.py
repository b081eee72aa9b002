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

import numpy as np

from adwatch_generator.catalog import Segment

# EventBatch.kinds: an impression, a click on an impression, a click without one.
IMPRESSION, CLICK, ORPHAN_CLICK = 0, 1, 2

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
class Placements:
    """Ads shown (or clicked without one): one row per event, as indices into the inventory.

    ``placement`` and ``campaign`` index the flat tables of :class:`EventEncoder`, which list
    every segment's placements (campaigns) one segment after the other, in catalogue order.
    """

    segment: np.ndarray
    time_ms: np.ndarray
    placement: np.ndarray
    campaign: np.ndarray
    user: np.ndarray


class EventEncoder:
    """Keys and AdEvent JSON for one seed's events: ``contracts.decode`` reads back what it was given.

    The bytes equal ``contracts.encode``'s except for how a small float is spelt
    (``8.7437e-05`` here, ``0.000087437`` there).

    Event ids are ``<seed tag>-<slice start, hex>-<row, hex>``: unique within a run, and the
    same for the same seed and slice.
    """

    def __init__(self, segments: Sequence[Segment], seed: int) -> None:
        self._tag = hashlib.sha256(str(seed).encode()).hexdigest()[:6].encode()
        self._key_bytes = [s.key_bytes for s in segments]
        self._placement_fragments = [  # the fields between event_type and campaign_id
            f'"country":"{s.country}","ad_format":"{s.ad_format}","app_id":"{app}","placement_id":"{placement}",'.encode()
            for s in segments
            for app, placement in s.placements
        ]
        self._campaign_ids = [c.encode() for s in segments for c in s.campaigns]

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
        pf, cids, key_of = self._placement_fragments, self._campaign_ids, self._key_bytes
        n = len(impressions.segment)
        place_l, camp_l, users_l = (
            impressions.placement.tolist(),
            impressions.campaign.tolist(),
            impressions.user.tolist(),
        )
        values = [
            _IMPRESSION_TEMPLATE % (prefix, i, t, pf[p], cids[c], u, r)
            for i, t, p, c, u, r in zip(
                range(n), impressions.time_ms.tolist(), place_l, camp_l, users_l, revenue_usd.tolist(), strict=True
            )
        ]
        keys = [key_of[s] for s in impressions.segment.tolist()]
        clicked_l = clicked.tolist()
        values += [
            _CLICK_TEMPLATE % (prefix, n + j, t, pf[place_l[i]], cids[camp_l[i]], users_l[i], prefix, i)
            for j, (i, t) in enumerate(zip(clicked_l, click_times_ms.tolist(), strict=True))
        ]
        keys += [keys[i] for i in clicked_l]
        base = n + len(clicked_l)
        orphan_columns = (orphans.time_ms, orphans.placement, orphans.campaign, orphans.user)
        values += [
            _ORPHAN_TEMPLATE % (prefix, base + j, t, pf[p], cids[c], u)
            for j, (t, p, c, u) in enumerate(zip(*(col.tolist() for col in orphan_columns), strict=True))
        ]
        keys += [key_of[s] for s in orphans.segment.tolist()]
        return keys, values
