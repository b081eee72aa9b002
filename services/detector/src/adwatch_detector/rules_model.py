"""Rule settings (frozen, loaded from YAML) and per-segment state (msgpack bytes in Spark state).

Settings and runtime state are separate objects: the settings are shared by every segment, the
state is one small struct per segment that round-trips through bytes.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cached_property
from pathlib import Path
from typing import Any

import msgspec
import yaml

from adwatch.errors import ConfigError
from adwatch_detector.stats import budget_alpha, cusum_threshold, z_from_p

RULE_SETS = ("default", "classic")
# Order of the lifecycles in SegmentState.life (index = position).
ALERT_ORDER = ("ctr_drop", "ctr_spike", "traffic_spike", "ecpm_drop", "click_without_impression")
STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class RuleSettings:
    """Thresholds and parameters of both rule sets (see services/detector/rules.yaml)."""

    rule_set: str = "default"
    window_ms: int = 60_000
    # alert budget -> thresholds (Bonferroni over tests x windows per day)
    alert_budget_per_day: float = 1.0
    expected_segments: int = 256  # segment x metric tests per window, e.g. 64 segments x 4 metrics
    cusum_budget_share: float = 0.5  # share of the budget spent on the sequential (CUSUM) alarms
    # lifecycle
    warmup_windows: int = 10
    resolve_windows: int = 3
    z_resolve: float = 2.0
    resolve_evidence: float = 3.0  # log-likelihood ratio in favour of "back to normal"
    z_freeze: float = 3.0  # a window beyond this |z| does not update its baseline
    max_freeze_windows: int = 60  # ...unless the baseline has been frozen this long (level shift)
    cooldown_windows: int = 0  # after a resolve, the same fingerprint may not fire again for this long
    max_gap_fill: int = 60  # missing windows replayed as zero-traffic windows (older ones decay in bulk)
    # counts (impressions): damped Holt baseline + negative-binomial variance
    count_alpha: float = 0.15
    count_beta: float = 0.05
    count_damping: float = 0.95
    count_phi_prior: float = 0.01
    count_var_halflife: float = 240.0
    min_expected_count: float = 5.0
    traffic_spike_ratio: float = 2.0  # CUSUM design alternative
    traffic_min_ratio: float = 1.5  # practical significance: never page on a spike smaller than this
    # CTR: decayed beta baseline + beta-binomial (overdispersion rho)
    ctr_halflife: float = 60.0
    ctr_prior: float = 0.01
    ctr_prior_n: float = 20.0
    rho_prior: float = 0.0005
    rho_halflife: float = 480.0
    ctr_max_effective_n: float = 200_000.0
    min_expected_clicks: float = 5.0
    min_impressions: int = 20
    ctr_drop_ratio: float = 0.5
    ctr_spike_ratio: float = 2.5
    ctr_drop_min_ratio: float = 0.8
    ctr_spike_min_ratio: float = 1.3
    # eCPM: log-scale EWMA, variance sigma1^2/n + tau^2 (shape from config, scale fitted)
    ecpm_alpha: float = 0.05
    ecpm_sigma1_sq: float = 1.0
    ecpm_tau_sq: float = 0.005
    ecpm_var_halflife: float = 240.0
    min_impressions_ecpm: int = 20
    ecpm_drop_ratio: float = 0.6
    ecpm_drop_min_ratio: float = 0.8
    # clicks without impressions (both rule sets)
    orphan_abs_tolerance: int = 2
    orphan_frac_tolerance: float = 0.02
    # classic rule set (the tutorial)
    ema_alpha: float = 0.2
    classic_ctr_drop: float = 0.5
    classic_ctr_spike: float = 2.0
    classic_traffic_spike: float = 3.0
    classic_ecpm_drop: float = 0.5
    classic_warmup_windows: int = 5
    classic_cooldown_windows: int = 10

    @property
    def windows_per_day(self) -> float:
        return 86_400_000.0 / self.window_ms

    @cached_property
    def z_threshold(self) -> float:
        """Single-window z threshold from the alert budget."""
        share = 1.0 - self.cusum_budget_share
        return z_from_p(budget_alpha(self.alert_budget_per_day * share, self.expected_segments, self.windows_per_day))

    @cached_property
    def cusum_h(self) -> float:
        """CUSUM alarm level from the alert budget (ARL0 >= e^h)."""
        share = self.cusum_budget_share
        return cusum_threshold(
            budget_alpha(self.alert_budget_per_day * share, self.expected_segments, self.windows_per_day)
        )


_POSITIVE_EXCEPT = {"count_beta", "cusum_budget_share", "cooldown_windows", "classic_cooldown_windows", "ecpm_tau_sq",
                    "rho_prior", "orphan_abs_tolerance", "orphan_frac_tolerance", "z_freeze", "z_resolve",
                    "resolve_evidence", "min_expected_count", "min_expected_clicks", "min_impressions",
                    "min_impressions_ecpm", "warmup_windows", "classic_warmup_windows", "count_phi_prior",
                    "max_gap_fill"}  # fmt: skip
_UNIT_INTERVAL = {"count_alpha", "count_beta", "count_damping", "ecpm_alpha", "ema_alpha", "cusum_budget_share",
                  "ctr_prior", "orphan_frac_tolerance"}  # fmt: skip


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool) or isinstance(value, bool):
        raise ConfigError(f"rules: {name}: expected a number, got {value!r}")
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"rules: {name}: expected a string, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(f"rules: {name}: expected an integer, got {value!r}")
        return value
    if not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ConfigError(f"rules: {name}: expected a finite number, got {value!r}")
    return float(value)


def make_rules(**values: Any) -> RuleSettings:
    """Validated RuleSettings from keyword values; ConfigError names the bad key."""
    fields = {f.name: f.default for f in dataclasses.fields(RuleSettings)}
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if name not in fields:
            raise ConfigError(f"rules: unknown key {name!r} (known: {', '.join(sorted(fields))})")
        clean[name] = _coerce(name, value, fields[name])
        if name == "rule_set":
            if value not in RULE_SETS:
                raise ConfigError(f"rules: rule_set: expected one of {RULE_SETS}, got {value!r}")
            continue
        number = clean[name]
        if name in _UNIT_INTERVAL and not 0 <= number <= 1:
            raise ConfigError(f"rules: {name}: must be within [0, 1], got {number!r}")
        if name in _POSITIVE_EXCEPT:
            if number < 0:
                raise ConfigError(f"rules: {name}: must be >= 0, got {number!r}")
        elif number <= 0:
            raise ConfigError(f"rules: {name}: must be > 0, got {number!r}")
    settings = RuleSettings(**clean)
    if settings.cusum_budget_share >= 1:
        raise ConfigError("rules: cusum_budget_share: must be < 1")
    if settings.count_alpha == 0 or settings.ecpm_alpha == 0 or settings.ema_alpha == 0:
        raise ConfigError("rules: count_alpha/ecpm_alpha/ema_alpha: must be > 0")
    return settings


def load_rules(path: str | None = None) -> RuleSettings:
    """RuleSettings from a YAML mapping (flat keys, see rules.yaml); None -> defaults."""
    if path is None:
        return RuleSettings()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"rules: cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"rules: {path} is not valid YAML: {exc}") from None
    if data is None:
        return RuleSettings()
    if not isinstance(data, dict):
        raise ConfigError(f"rules: {path} must hold a mapping of settings, got {type(data).__name__}")
    return make_rules(**{str(k): v for k, v in data.items()})


class Lifecycle(msgspec.Struct, array_like=True):
    """One fingerprint's evidence and lifecycle (firing once, resolve after N in-band windows)."""

    firing: bool = False
    cusum: float = 0.0
    recovery: float = 0.0
    in_band: int = 0
    firing_windows: int = 0
    fired_ms: int = -1
    resolved_ms: int = -1


def _fresh_life() -> list[Lifecycle]:
    return [Lifecycle() for _ in ALERT_ORDER]


class SegmentState(msgspec.Struct, array_like=True):
    """Per-segment baselines and open alerts; serialised into Spark state as msgpack bytes."""

    version: int = STATE_VERSION
    last_window_ms: int = -1
    windows_seen: int = 0
    # counts: damped Holt level/trend, NB dispersion phi = phi_num / phi_den
    cnt_level: float = 0.0
    cnt_trend: float = 0.0
    phi_num: float = 0.0
    phi_den: float = 0.0
    cnt_frozen: int = 0
    # CTR: decayed clicks / impressions, overdispersion rho = rho_num / rho_den
    ctr_clicks: float = 0.0
    ctr_imps: float = 0.0
    rho_num: float = 0.0
    rho_den: float = 0.0
    ctr_frozen: int = 0
    ctr_windows: int = 0
    # eCPM: log-scale mean, variance scale
    ecpm_mu: float = 0.0
    ecpm_scale: float = 1.0
    ecpm_windows: int = 0
    ecpm_frozen: int = 0
    # classic EMAs
    ema_ctr: float = 0.0
    ema_imps: float = 0.0
    ema_ecpm: float = 0.0
    life: list[Lifecycle] = msgspec.field(default_factory=_fresh_life)

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes | None) -> SegmentState:
        """Decode state bytes; None/empty -> a fresh state."""
        if not data:
            return cls()
        state = msgspec.msgpack.decode(data, type=cls)
        if len(state.life) != len(ALERT_ORDER):
            state.life = _fresh_life()
        return state
