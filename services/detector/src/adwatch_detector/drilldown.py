"""One problem, one alert: a parent's alert names the children that explain it and absorbs theirs.

ThirdEye-style drill-down, on the driver after each micro-batch (it sees every segment's
evidence of the batch: the rules' band points). For a firing parent alert, each direct child
segment's contribution to the change is its own delta in the parent's units (CTR and eCPM
weighted by the child's impressions: clicks or revenue lost; counts as they are); the children
moving the same way as the parent are ranked by their share of it. Firing alerts of one window
and type linked through the hierarchy are one problem, published once: on the top-most segment
with the children as contributors (a country-wide drop), or, when a single breaching child
carries most of its parent's change, on that child (a child breaching alone alerts alone: its
parent's alert is folded into it). A later child alert under an active ancestor's is folded too.
Folded alerts are stored, not published. When the published alert resolves while a folded one
still fires, that one is released (published), so a problem that narrows is not lost.

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
DELEGATE_SHARE = 0.8
"""A parent whose only breaching child carries at least this share of its change is that child's
problem (less: its siblings may breach a window later, and the parent is the problem)."""


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

    def __init__(self, hierarchy: Hierarchy, top: int = 5, horizon_ms: int = 24 * 3600 * 1000) -> None:
        self.hierarchy = hierarchy
        self.top = top
        self.horizon_ms = horizon_ms  # an episode older than this is forgotten (its segment was evicted)
        self._active: dict[str, Alert] = {}  # fingerprint -> published firing alert
        self._folded: dict[str, tuple[Alert, str]] = {}  # child fingerprint -> (its firing, ancestor fingerprint)

    def fold(
        self, alerts: Sequence[Alert], bands: Sequence[BandPoint], dimensions: Mapping[str, dict[str, str]]
    ) -> tuple[list[Alert], list[Alert]]:
        """(alerts to publish, alerts folded into another's), in input order (released ones last).

        The firing alerts of one window and type that are ancestors and descendants of each other
        are one problem. Folded into an ancestor's still active alert if there is one; else one of
        them is published: the top-most, unless a single breaching child explains most of its
        change (then that child, and so on down), with the rest folded into it.
        """
        if not alerts:
            return [], []
        self._forget_before(max(a.window_start_ms for a in alerts) - self.horizon_ms)
        firing = [a for a in alerts if a.status == "firing"]
        children_of = self._children_by_parent(bands, dimensions, {(a.window_start_ms, a.alert_type) for a in firing})
        decided: dict[str, tuple[Alert, bool]] = {}  # alert id -> (alert as decided, published)
        for group in self._problems(firing):
            self._decide(group, children_of, dimensions, decided)
        published: list[Alert] = []
        folded: list[Alert] = []
        released: list[Alert] = []
        for alert in alerts:
            if alert.status == "firing":
                alert, publish = decided[alert.alert_id]
            elif alert.fingerprint in self._folded:
                child, _ = self._folded.pop(alert.fingerprint)
                alert, publish = msgspec.structs.replace(alert, parent_segment_id=child.parent_segment_id), False
            else:
                self._active.pop(alert.fingerprint, None)
                publish = True
                released.extend(self._release(alert.fingerprint))
            (published if publish else folded).append(alert)
        return published + released, folded

    def _children_by_parent(
        self,
        bands: Sequence[BandPoint],
        dimensions: Mapping[str, dict[str, str]],
        alerting: set[tuple[int, str]],
    ) -> dict[tuple[int, str, str], list[BandPoint]]:
        """The band points of the windows and types that alert, under each of their parents' segment
        ids: a parent's children are one lookup (a batch holds every segment's points)."""
        out: dict[tuple[int, str, str], list[BandPoint]] = defaultdict(list)
        for b in bands:
            if (b.window_start_ms, b.alert_type) in alerting and b.segment in dimensions:
                for parent in self.hierarchy.parents(dimensions[b.segment]):
                    out[(b.window_start_ms, b.alert_type, segment_id(parent))].append(b)
        return out

    def _problems(self, firing: Sequence[Alert]) -> list[list[Alert]]:
        """Firing alerts grouped into problems: same window and type, linked through the hierarchy."""
        by_key = {(a.window_start_ms, a.alert_type, a.segment_id): a for a in firing}
        root: dict[str, str] = {}

        def top(alert: Alert) -> Alert:
            node = alert
            while True:
                up = next(
                    (
                        by_key[key]
                        for p in self.hierarchy.parents(node.dimensions)
                        if (key := (node.window_start_ms, node.alert_type, segment_id(p))) in by_key
                    ),
                    None,
                )
                if up is None:
                    return node
                node = up

        groups: dict[str, list[Alert]] = defaultdict(list)
        for a in sorted(firing, key=lambda a: (a.window_start_ms, len(a.dimensions))):  # time order, top-down
            head = root.setdefault(a.alert_id, top(a).alert_id)
            groups[head].append(a)
        return list(groups.values())

    def _decide(
        self,
        group: list[Alert],
        children_of: Mapping[tuple[int, str, str], list[BandPoint]],
        dimensions: Mapping[str, dict[str, str]],
        decided: dict[str, tuple[Alert, bool]],
    ) -> None:
        head = group[0]  # the top-most (fewest dimensions)
        alerting = {a.segment_id for a in group}
        ancestor = self._active_ancestor(head)
        if ancestor is not None:
            for a in group:
                self._fold(a, ancestor, decided, self._contributors(a, children_of, dimensions, alerting))
            return
        chosen = head
        while True:
            # a child explains the change: the group's own breaching child, or one already paged
            breaching = [a for a in group if self.hierarchy.is_child_of(a.dimensions, chosen.dimensions)]
            breaching += [
                a for a in self._active_children(chosen) if a.segment_id not in {b.segment_id for b in breaching}
            ]
            if len(breaching) != 1:
                break
            (child,) = breaching
            found = self._contributors(chosen, children_of, dimensions, {child.segment_id})
            share = next((c.share for c in found if c.segment_id == child.segment_id), 0.0)
            if share < DELEGATE_SHARE:
                break
            if self._active.get(child.fingerprint) is child:  # paged already: the whole group is its problem
                for a in group:
                    self._fold(a, child, decided, self._contributors(a, children_of, dimensions, alerting))
                return
            chosen = child
        found = self._contributors(chosen, children_of, dimensions, alerting)
        others = [a for a in group if a is not chosen]
        chosen = msgspec.structs.replace(
            chosen,
            contributors=found,
            folded=len(others),
            message=_explain(chosen, found) if found else chosen.message,
        )
        self._active[chosen.fingerprint] = chosen
        decided[chosen.alert_id] = (chosen, True)
        for a in others:
            self._fold(a, chosen, decided, self._contributors(a, children_of, dimensions, alerting))

    def _active_children(self, alert: Alert) -> list[Alert]:
        """Published, still firing alerts of the same type on the alert's direct children."""
        return [
            a
            for a in self._active.values()
            if a.alert_type == alert.alert_type and self.hierarchy.is_child_of(a.dimensions, alert.dimensions)
        ]

    def _fold(
        self,
        alert: Alert,
        into: Alert,
        decided: dict[str, tuple[Alert, bool]],
        found: list[Contributor] | None = None,
    ) -> None:
        """Store ``alert`` as part of ``into``'s problem (with its own drill-down, for the record)."""
        child = msgspec.structs.replace(alert, parent_segment_id=into.segment_id, contributors=found or [])
        self._folded[alert.fingerprint] = (child, into.fingerprint)
        decided[alert.alert_id] = (child, False)

    def _contributors(
        self,
        alert: Alert,
        children_of: Mapping[tuple[int, str, str], list[BandPoint]],
        dimensions: Mapping[str, dict[str, str]],
        alerting: set[str],
    ) -> list[Contributor]:
        children = children_of.get((alert.window_start_ms, alert.alert_type, alert.segment_id), [])
        return contributors(alert, children, dimensions, alerting, self.top) if children else []

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

    def _forget_before(self, start_ms: int) -> None:
        """Bounded memory: episodes that began before ``start_ms`` are no one's to fold into."""
        for fp in [fp for fp, a in self._active.items() if a.window_start_ms < start_ms]:
            del self._active[fp]
        for fp in [fp for fp, (a, _) in self._folded.items() if a.window_start_ms < start_ms]:
            del self._folded[fp]

    def _release(self, ancestor_fp: str) -> list[Alert]:
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
