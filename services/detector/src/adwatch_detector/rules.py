"""Detection rules: pure Python over window aggregates plus per-segment state (no Spark).

PLACEHOLDER (lead): the API below is the contract between the Spark job and the rules;
the statistics behind it are being replaced by the count-aware rule set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from adwatch.contracts import Alert, SegmentWindow, format_message, make_alert_id, make_fingerprint


@dataclass(frozen=True)
class RuleSettings:
    """Thresholds and parameters of the rule set (loaded from YAML by ``load_rules``)."""

    rule_set: str = "default"
    ema_alpha: float = 0.2
    warmup_windows: int = 5


def load_rules(path: str | None = None) -> RuleSettings:
    return RuleSettings()


class SegmentState(msgspec.Struct):
    """Per-segment baselines and open alerts; serialised into Spark state as bytes."""

    windows_seen: int = 0
    ctr_ema: float = 0.0
    firing: dict[str, int] = {}

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes | None) -> SegmentState:
        return msgspec.msgpack.decode(data, type=cls) if data else cls()


def detect_windows(
    state: SegmentState | None, windows: Sequence[SegmentWindow], rules: RuleSettings, now_ms: int
) -> tuple[SegmentState, list[Alert]]:
    """Feed closed windows of ONE segment (sorted by start) through the rules."""
    state = state or SegmentState()
    alerts: list[Alert] = []
    for window in windows:
        ctr = window.ctr
        if state.windows_seen >= rules.warmup_windows and state.ctr_ema > 0 and ctr < 0.5 * state.ctr_ema:
            fingerprint = make_fingerprint("ctr_drop", window.segment_key)
            if fingerprint not in state.firing:
                state.firing[fingerprint] = window.window_start_ms
                alerts.append(
                    Alert(
                        alert_id=make_alert_id(fingerprint, window.window_start_ms, "firing"),
                        fingerprint=fingerprint,
                        status="firing",
                        alert_type="ctr_drop",
                        severity="high",
                        country=window.country,
                        ad_format=window.ad_format,
                        metric="ctr",
                        current=ctr,
                        expected=state.ctr_ema,
                        band_low=0.5 * state.ctr_ema,
                        band_high=2 * state.ctr_ema,
                        deviation_pct=100 * (ctr - state.ctr_ema) / state.ctr_ema,
                        volume=window.impressions,
                        p_value=1.0,
                        z_score=0.0,
                        window_start_ms=window.window_start_ms,
                        window_end_ms=window.window_end_ms,
                        detected_at_ms=now_ms,
                        message=format_message("firing", "ctr_drop", window.country, window.ad_format, "ctr",
                                               ctr, state.ctr_ema),  # fmt: skip
                        rule_set=rules.rule_set,
                    )
                )
            continue
        state.ctr_ema = ctr if state.windows_seen == 0 else rules.ema_alpha * ctr + (1 - rules.ema_alpha) * state.ctr_ema
        state.windows_seen += 1
    return state, alerts
