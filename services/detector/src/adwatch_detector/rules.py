"""Detection rules: pure Python over window aggregates plus per-segment state (no Spark).

The Spark job calls :func:`detect_windows` once per segment and micro-batch with the segment's
closed windows and its state bytes. Two rule sets share the lifecycle: ``default`` (count-aware,
rules_default.py) and ``classic`` (the tutorial's fixed ratios, rules_classic.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from adwatch.contracts import (
    Alert,
    SegmentWindow,
    deviation_pct,
    format_message,
    make_alert_id,
    make_fingerprint,
)
from adwatch_detector.rules_check import Check
from adwatch_detector.rules_classic import classic_checks
from adwatch_detector.rules_default import default_checks
from adwatch_detector.rules_model import (
    ALERT_ORDER,
    Lifecycle,
    RuleSettings,
    SegmentState,
    load_rules,
    make_rules,
)

__all__ = ["RuleSettings", "SegmentState", "detect_windows", "load_rules", "make_rules"]

_IDX = {name: i for i, name in enumerate(ALERT_ORDER)}


def _alert(check: Check, status: str, window: SegmentWindow, rules: RuleSettings, now_ms: int) -> Alert:
    fingerprint = make_fingerprint(check.alert_type, window.segment_key)
    return Alert(
        alert_id=make_alert_id(fingerprint, window.window_start_ms, status),
        fingerprint=fingerprint,
        status=status,  # type: ignore[arg-type]
        alert_type=check.alert_type,  # type: ignore[arg-type]
        severity=check.severity,  # type: ignore[arg-type]
        country=window.country,
        ad_format=window.ad_format,
        metric=check.metric,  # type: ignore[arg-type]
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
            status, check.alert_type, window.country, window.ad_format, check.metric, check.current, check.expected
        ),
        rule_set=rules.rule_set,
    )


def _lifecycle(life: Lifecycle, check: Check, window: SegmentWindow, rules: RuleSettings, cooldown: int) -> str | None:
    """Fire once per fingerprint; resolve after ``resolve_windows`` in-band windows with evidence of recovery."""
    start = window.window_start_ms
    if not life.firing:
        cooled = life.resolved_ms < 0 or start - life.resolved_ms >= cooldown * rules.window_ms
        if check.breach and cooled:
            life.firing, life.fired_ms, life.in_band, life.firing_windows = True, start, 0, 0
            life.recovery = 0.0
            return "firing"
        return None
    life.firing_windows += 1
    life.in_band = life.in_band + 1 if check.in_band else 0
    if life.in_band >= rules.resolve_windows and check.recovered:
        life.firing, life.resolved_ms, life.in_band, life.firing_windows = False, start, 0, 0
        life.cusum = life.recovery = 0.0
        return "resolved"
    return None


def _zero_window(template: SegmentWindow, start_ms: int, window_ms: int) -> SegmentWindow:
    return SegmentWindow(window_start_ms=start_ms, window_end_ms=start_ms + window_ms, country=template.country,
                         ad_format=template.ad_format, impressions=0, clicks=0, revenue_usd=0.0)  # fmt: skip


def _with_gaps(state: SegmentState, window: SegmentWindow, rules: RuleSettings) -> list[SegmentWindow]:
    """The window, preceded by zero-traffic windows for the minutes the segment had no events."""
    step = rules.window_ms
    if state.last_window_ms < 0 or rules.rule_set == "classic":
        return [window]
    missing = (window.window_start_ms - state.last_window_ms) // step - 1
    if missing <= 0:
        return [window]
    if missing > rules.max_gap_fill:
        # a long silence: decay the count baseline in bulk instead of replaying every minute
        skipped = missing - rules.max_gap_fill
        state.cnt_level *= (1.0 - rules.count_alpha) ** min(skipped, 10_000)
        state.cnt_trend = 0.0
        missing = rules.max_gap_fill
    first = window.window_start_ms - missing * step
    return [*(_zero_window(window, first + k * step, step) for k in range(missing)), window]


def detect_windows(
    state: SegmentState | None,
    windows: Sequence[SegmentWindow],
    rules: RuleSettings,
    now_ms: int,
    on_check: Callable[[SegmentWindow, Check], None] | None = None,
) -> tuple[SegmentState, list[Alert]]:
    """Feed closed windows of ONE segment (sorted by start) through the rules.

    Windows at or before the last processed one are ignored (idempotent replay); alert ids
    derive from fingerprint, window and status, so a replay mints the same ids. ``on_check``
    sees every window's evidence (the backtest records expected values and bands with it).
    """
    state = state if state is not None else SegmentState()
    classic = rules.rule_set == "classic"
    evaluate = classic_checks if classic else default_checks
    cooldown = rules.classic_cooldown_windows if classic else rules.cooldown_windows
    alerts: list[Alert] = []
    for window in sorted(windows, key=lambda w: w.window_start_ms):
        if window.window_start_ms <= state.last_window_ms:
            continue
        for current in _with_gaps(state, window, rules):
            for check in evaluate(state, current, rules):
                if on_check is not None:
                    on_check(current, check)
                status = _lifecycle(state.life[_IDX[check.alert_type]], check, current, rules, cooldown)
                if status is not None:
                    alerts.append(_alert(check, status, current, rules, now_ms))
            state.last_window_ms = current.window_start_ms
    return state, alerts
