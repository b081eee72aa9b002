"""Runs a rule set over the closed windows of one segment: gaps, lifecycles, alerts.

The Spark job calls :func:`detect_windows` once per segment and micro-batch with the segment's
closed windows, its state and the batch's processing time (``now_ms``: only stamped on alerts as
``detected_at_ms``; every decision runs on event time, so a replay makes the same decisions).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adwatch.contracts import (
    Alert,
    SegmentWindow,
    deviation_pct,
    format_message,
    make_alert_id,
    make_fingerprint,
)
from adwatch_detector.rules.base import BaseRule, Check, SegmentPrior
from adwatch_detector.rules.lifecycle import Lifecycle, Policy, Transition, step
from adwatch_detector.rules.registry import RULE_SETS, RULES
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.rules.state import RuleSlot, SegmentState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuleEngine:
    """A rule set built from settings once (thresholds precomputed), shared by every segment."""

    settings: RuleSettings
    rules: tuple[BaseRule[Any], ...]
    policies: dict[str, Policy]  # rule id -> how its alerts fire and resolve
    max_gap_fill: int

    @classmethod
    def build(cls, settings: RuleSettings) -> RuleEngine:
        rules = tuple(RULES[rule_id](settings) for rule_id in RULE_SETS[settings.rule_set])
        return cls(settings, rules, {rule.id: rule.policy() for rule in rules}, settings.set_settings.max_gap_fill)

    def for_live_segments(self, live_segments: int | None) -> RuleEngine:
        """The engine whose alert budget is spread over ``live_segments`` tracked segments (the
        count-aware set: ``tests_per_segment`` tests each, rounded up to a power of two so a few
        engines serve every count); None: the configured ``expected_segments``."""
        if live_segments is None or self.settings.rule_set != "default":
            return self
        tests = budget_tests(live_segments, self.settings.default.tests_per_segment)
        key = (id(self.settings), tests)
        engine = _BY_BUDGET.get(key)
        if engine is None or engine.settings.default.expected_segments != tests:
            if len(_BY_BUDGET) >= 64:
                _BY_BUDGET.clear()
            engine = _BY_BUDGET[key] = RuleEngine.build(self.settings.with_expected_segments(tests))
        return engine

    def seed(self, state: SegmentState, prior: SegmentPrior) -> None:
        """Start a new segment's baselines from its parent's (rules that can use a prior do)."""
        for rule in self.rules:
            if not rule.lazy:
                rule.seed(self.slot(state, rule).state, prior)

    def slot(self, state: SegmentState, rule: BaseRule[Any]) -> RuleSlot[Any]:
        """The rule's slot in ``state``, created (or completed with new alert types) on first use."""
        slot = state.rules.get(rule.id)
        if slot is None:
            slot = state.rules[rule.id] = RuleSlot(rule.new_state(), {})
        for alert_type in rule.alert_types:
            if alert_type not in slot.lives:
                slot.lives[alert_type] = Lifecycle()
        return slot

    def warming_up(self, state: SegmentState) -> bool:
        """Whether the segment's baselines are still warming up (no rule has seen warmup_windows yet)."""
        seen = 0
        for rule in self.rules:
            slot = state.rules.get(rule.id)
            if slot is not None:
                seen = max(seen, rule.windows_seen(slot.state))
        return seen < self.settings.set_settings.warmup_windows

    def detect(
        self,
        state: SegmentState | None,
        windows: Sequence[SegmentWindow],
        now_ms: int,
        on_check: Callable[[SegmentWindow, Check], None] | None = None,
        unknown: tuple[int, int] | None = None,
    ) -> tuple[SegmentState, list[Alert]]:
        """``unknown``: [from, to) in which silent minutes say nothing (the whole input stalled):
        they are not replayed as zero traffic nor aged over, as if the segment had not been watched."""
        state = state if state is not None else SegmentState()
        slots: list[tuple[BaseRule[Any], RuleSlot[Any] | None]] = [
            (rule, self.slot(state, rule) if not rule.lazy or rule.id in state.rules else None) for rule in self.rules
        ]
        policies = [self.policies[rule.id] for rule in self.rules]  # aligned with slots
        alerts: list[Alert] = []
        for window in sorted(windows, key=lambda w: w.window_start_ms):
            if window.window_start_ms <= state.last_window_ms:
                continue
            replay, skipped = self._gap(state, window, unknown)
            for current in (*replay, window):
                if current is window and skipped:
                    # a long silence: the first max_gap_fill minutes were replayed (an outage shows
                    # where it starts); age the baselines over the rest in bulk
                    for rule, slot in slots:
                        if slot is not None:
                            rule.on_silence(
                                slot.state, skipped, current.window_start_ms - skipped * self.settings.window_ms
                            )
                start = current.window_start_ms
                for k, (rule, slot) in enumerate(slots):
                    if slot is None:  # a lazy rule that has not read a window of this segment yet
                        if not rule.reads(current):
                            continue
                        slot = self.slot(state, rule)
                        slots[k] = (rule, slot)
                    policy = policies[k]
                    for check in rule.evaluate(slot.state, slot.lives, current):
                        if on_check is not None:
                            on_check(current, check)
                        transition = step(slot.lives[check.alert_type], check, start, policy)
                        if transition is not None:
                            if transition.resolution == "recovered" and transition.anchor >= 0.0:
                                rule.on_recovered(slot.state, check.alert_type, transition.anchor)
                            alerts.append(self._alert(rule, check, transition, current, now_ms))
                state.last_window_ms = start
        return state, alerts

    def _gap(
        self, state: SegmentState, window: SegmentWindow, unknown: tuple[int, int] | None = None
    ) -> tuple[list[SegmentWindow], int]:
        """Zero-traffic windows for the first minutes the segment had no events before ``window``
        (at most max_gap_fill, none inside ``unknown``), and how many silent minutes after them
        are aged over in bulk."""
        step_ms = self.settings.window_ms
        if state.last_window_ms < 0:
            return [], 0
        first = state.last_window_ms + step_ms
        if unknown is not None and first < unknown[1] and unknown[0] < window.window_start_ms:
            first = max(first, min(unknown[1], window.window_start_ms))  # resume the gap after the stall
            first -= (first - (state.last_window_ms + step_ms)) % step_ms  # on the window grid
        missing = (window.window_start_ms - first) // step_ms
        if missing <= 0:
            return [], 0
        replayed = min(missing, self.max_gap_fill)
        return [_zero_window(window, first + k * step_ms, step_ms) for k in range(replayed)], missing - replayed

    def _alert(
        self, rule: BaseRule[Any], check: Check, transition: Transition, window: SegmentWindow, now_ms: int
    ) -> Alert:
        status = transition.status
        fingerprint = make_fingerprint(check.alert_type, window.segment_id)
        alert_id = make_alert_id(fingerprint, window.window_start_ms, status)
        if logger.isEnabledFor(logging.DEBUG):
            fields = {
                "rule": rule.id,
                "alert_type": check.alert_type,
                "status": status,
                "alert_id": alert_id,
                "segment": window.segment_id,
                "window_start_ms": window.window_start_ms,
            }
            logger.debug("alert %s", status, extra=fields)
        return Alert(
            alert_id=alert_id,
            fingerprint=fingerprint,
            status=status,
            alert_type=check.alert_type,
            severity=transition.severity,
            dimensions=window.dimensions,
            segment_id=window.segment_id,
            metric=check.metric,
            current=check.current,
            expected=check.expected,
            band_low=check.band_low,
            band_high=check.band_high,
            deviation_pct=round(deviation_pct(check.current, check.expected), 6),
            volume=check.volume,
            p_value=check.p_value,
            z_score=check.z_score,
            window_start_ms=window.window_start_ms,
            window_end_ms=window.window_end_ms,
            detected_at_ms=now_ms,
            message=format_message(
                status,
                check.alert_type,
                window.where,
                check.metric,
                check.current,
                check.expected,
                resolution=transition.resolution,
                previous_severity=transition.previous_severity,
                severity=transition.severity,
            ),
            rule_set=self.settings.rule_set,
            rule=rule.id,
            previous_severity=transition.previous_severity,
            resolution=transition.resolution,
            duration_ms=transition.duration_ms,
        )


def _zero_window(template: SegmentWindow, start_ms: int, window_ms: int) -> SegmentWindow:
    return SegmentWindow(
        window_start_ms=start_ms,
        window_end_ms=start_ms + window_ms,
        dimensions=template.dimensions,
        segment_id=template.segment_id,
        impressions=0,
        clicks=0,
        revenue_usd=0.0,
    )


_ENGINES: dict[int, RuleEngine] = {}
_BY_BUDGET: dict[tuple[int, int], RuleEngine] = {}


def budget_tests(live_segments: int, tests_per_segment: int) -> int:
    """Tests per window the alert budget is spread over: live segments x tests each, rounded up
    to a power of two (at least 16)."""
    tests = max(16, live_segments * tests_per_segment)
    return 1 << (tests - 1).bit_length()


def engine_for(rules: RuleSettings | RuleEngine) -> RuleEngine:
    """The engine of ``rules``, built once per settings object (a few are kept, by identity)."""
    if isinstance(rules, RuleEngine):
        return rules
    engine = _ENGINES.get(id(rules))
    if engine is None or engine.settings is not rules:
        if len(_ENGINES) >= 16:
            _ENGINES.clear()
        engine = _ENGINES[id(rules)] = RuleEngine.build(rules)
    return engine


def detect_windows(
    state: SegmentState | None,
    windows: Sequence[SegmentWindow],
    rules: RuleSettings | RuleEngine,
    now_ms: int,
    on_check: Callable[[SegmentWindow, Check], None] | None = None,
    live_segments: int | None = None,
) -> tuple[SegmentState, list[Alert]]:
    """Feed closed windows of ONE segment (any order: sorted by start here) through the rules.

    Windows at or before the last processed one are ignored (idempotent replay); alert ids
    derive from fingerprint, window and status, so a replay mints the same ids. ``now_ms`` is
    the caller's processing time, written to ``detected_at_ms`` and used for nothing else.
    ``on_check`` sees every window's evidence (the backtest records expected values and bands with it).
    """
    return engine_for(rules).for_live_segments(live_segments).detect(state, windows, now_ms, on_check)
