"""One problem, one alert: a parent's alert names the children that explain it and absorbs theirs.

ThirdEye-style drill-down, on the driver after each micro-batch (it sees every segment's
evidence of the batch: the rules' band points). For a firing parent alert, each direct child
segment's contribution to the change is its own delta in the parent's units (CTR and eCPM
weighted by the child's impressions: clicks or revenue lost; counts as they are); the children
moving the same way as the parent are ranked by their share of it. A child's firing alert of the
same type is folded into an ancestor's active one (stored, not published); a child breaching
alone alerts alone. When the parent resolves while a folded child is still firing, the child's
alert is released (published), so a problem that narrows to one child is not lost.

Pure: alerts and band points in, (published, folded) out; the state (active and folded
fingerprints) is this object's, on the driver (a restart forgets it: children then page alone).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import msgspec

from adwatch.contracts import Alert, Contributor, describe_segment, format_value, make_fingerprint, segment_id
from adwatch_detector.evidence import BandPoint
from adwatch_detector.hierarchy import Hierarchy

_RATE_METRICS = ("ctr", "ecpm")


def delta(metric: str, current: float, expected: float, volume: int) -> float:
    """A segment's change in units that add up over children (clicks, dollars, events)."""
    scale = volume / 1000.0 if metric == "ecpm" else volume if metric in _RATE_METRICS else 1.0
    return (current - expected) * scale


def contributors(
    parent: Alert,
    children: Sequence[BandPoint],
    dimensions: Mapping[str, dict[str, str]],
    alerting: set[str],
    top: int,
) -> list[Contributor]:
    """The children that explain the parent's change, largest share first (at most ``top``)."""
    sign = 1.0 if parent.current >= parent.expected else -1.0
    moves = [(b, delta(b.metric, b.current, b.expected, b.volume)) for b in children]
    same_way = [(b, d) for b, d in moves if d * sign > 0]
    total = sum(abs(d) for _, d in same_way)
    if total <= 0:
        return []
    ranked = sorted(same_way, key=lambda bd: -abs(bd[1]))[:top]
    return [
        Contributor(
            segment_id=b.segment,
            dimensions=dimensions.get(b.segment, {}),
            current=b.current,
            expected=b.expected,
            share=round(abs(d) / total, 4),
            volume=b.volume,
            alerting=b.segment in alerting,
        )
        for b, d in ranked
    ]


class Folder:
    """Folds child alerts into their ancestors' and attaches the drill-down (driver state)."""

    def __init__(self, hierarchy: Hierarchy, top: int = 5) -> None:
        self.hierarchy = hierarchy
        self.top = top
        self._active: dict[str, Alert] = {}  # fingerprint -> published firing alert
        self._folded: dict[str, tuple[Alert, str]] = {}  # child fingerprint -> (its firing, ancestor fingerprint)

    def fold(
        self, alerts: Sequence[Alert], bands: Sequence[BandPoint], dimensions: Mapping[str, dict[str, str]]
    ) -> tuple[list[Alert], list[Alert]]:
        """(alerts to publish, alerts folded into an ancestor's), both in input order."""
        by_window: dict[tuple[int, str], list[BandPoint]] = defaultdict(list)
        for b in bands:
            by_window[(b.window_start_ms, b.alert_type)].append(b)
        firing_now: set[tuple[int, str, str]] = {
            (a.window_start_ms, a.alert_type, a.segment_id) for a in alerts if a.status == "firing"
        }
        published: list[Alert] = []
        folded: list[Alert] = []
        # parents before children: a batch's alerts of one window fold top-down
        order = sorted(range(len(alerts)), key=lambda i: (alerts[i].window_start_ms, len(alerts[i].dimensions)))
        decided: dict[int, tuple[Alert, bool]] = {}
        for i in order:
            alert = alerts[i]
            if alert.status == "firing":
                ancestor = self._active_ancestor(alert)
                if ancestor is not None:
                    child = msgspec.structs.replace(alert, parent_segment_id=ancestor.segment_id)
                    self._folded[alert.fingerprint] = (child, ancestor.fingerprint)
                    decided[i] = (child, False)
                    continue
                alert = self._with_drilldown(alert, by_window, dimensions, firing_now)
                self._active[alert.fingerprint] = alert
                decided[i] = (alert, True)
            else:
                if alert.fingerprint in self._folded:
                    child, _ = self._folded.pop(alert.fingerprint)
                    decided[i] = (msgspec.structs.replace(alert, parent_segment_id=child.parent_segment_id), False)
                    continue
                self._active.pop(alert.fingerprint, None)
                decided[i] = (alert, True)
        for i in range(len(alerts)):
            alert, publish = decided[i]
            (published if publish else folded).append(alert)
            if alert.status == "resolved" and publish:
                published.extend(self._release_children(alert.fingerprint))
        return published, folded

    def _active_ancestor(self, alert: Alert) -> Alert | None:
        """The nearest ancestor segment with a published firing alert of the same type."""
        frontier = self.hierarchy.parents(alert.dimensions)
        seen: set[str] = set()
        while frontier:
            nxt: list[dict[str, str]] = []
            for dims in frontier:
                sid = segment_id(dims)
                if sid in seen:
                    continue
                seen.add(sid)
                active = self._active.get(make_fingerprint(alert.alert_type, sid))
                if active is not None:
                    return active
                nxt.extend(self.hierarchy.parents(dims))
            frontier = nxt
        return None

    def _with_drilldown(
        self,
        alert: Alert,
        by_window: Mapping[tuple[int, str], list[BandPoint]],
        dimensions: Mapping[str, dict[str, str]],
        firing_now: set[tuple[int, str, str]],
    ) -> Alert:
        points = by_window.get((alert.window_start_ms, alert.alert_type), [])
        children = [
            b
            for b in points
            if b.segment in dimensions and self.hierarchy.is_child_of(dimensions[b.segment], alert.dimensions)
        ]
        if not children:
            return alert
        alerting = {b.segment for b in children if (alert.window_start_ms, alert.alert_type, b.segment) in firing_now}
        found = contributors(alert, children, dimensions, alerting, self.top)
        if not found:
            return alert
        folded = sum(1 for b in children if b.segment in alerting)
        return msgspec.structs.replace(alert, contributors=found, folded=folded, message=_explain(alert, found))

    def _release_children(self, ancestor_fp: str) -> list[Alert]:
        """A resolved ancestor's children that still fire: published on their own now."""
        released = [fp for fp, (_, anc) in self._folded.items() if anc == ancestor_fp]
        out = []
        for fp in released:
            child, _ = self._folded.pop(fp)
            child = msgspec.structs.replace(child, parent_segment_id="")
            self._active[fp] = child
            out.append(child)
        return out


def _explain(alert: Alert, found: Sequence[Contributor]) -> str:
    """``...: 91% of the drop from app_id=com.example.game (3.10% -> 0.40%)`` after the message."""
    top = found[0]
    direction = "drop" if alert.current < alert.expected else "rise"
    where = describe_segment({k: v for k, v in top.dimensions.items() if k not in alert.dimensions})
    text = (
        f"{alert.message}: {top.share * 100:.0f}% of the {direction} from {where or top.segment_id} "
        f"({format_value(alert.metric, top.expected)} -> {format_value(alert.metric, top.current)})"
    )
    return text[:4096]
