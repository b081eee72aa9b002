"""rules.yaml as a pydantic model: rule-set-wide sections plus one section per rule id.

Every section forbids unknown keys and bounds its values; :func:`load_rules` turns a bad file
into a :class:`ConfigError` naming the file and the dotted key (``rules.ctr.halflife``). Each
rule's own section model lives next to the rule (``settings_model``) and is looked up in the
registry, so adding a rule does not touch this file.

A round-1 file (every key at the top level, e.g. ``alert_budget_per_day: 1.0``) still loads:
:data:`LEGACY_FLAT_KEYS` maps each old key to its section, with a warning naming the new place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from adwatch.errors import ConfigError
from adwatch_detector.rules.base import SettingsSection
from adwatch_detector.stats import budget_alpha, cusum_threshold, z_from_p

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=SettingsSection)

# Round-1 rules.yaml (one flat mapping) key -> its dotted place in the sectioned file.
LEGACY_FLAT_KEYS: dict[str, str] = {
    **{
        key: f"default.{key}"
        for key in (
            "alert_budget_per_day",
            "expected_segments",
            "cusum_budget_share",
            "warmup_windows",
            "z_resolve",
            "resolve_evidence",
            "z_freeze",
            "max_freeze_windows",
            "cooldown_windows",
            "max_gap_fill",  # the classic set never replayed silent minutes
        )
    },
    "ema_alpha": "classic.ema_alpha",
    "classic_warmup_windows": "classic.warmup_windows",
    "classic_cooldown_windows": "classic.cooldown_windows",
    "count_alpha": "rules.traffic.alpha",
    "count_beta": "rules.traffic.beta",
    "count_damping": "rules.traffic.damping",
    "count_phi_prior": "rules.traffic.phi_prior",
    "count_var_halflife": "rules.traffic.var_halflife",
    "min_expected_count": "rules.traffic.min_expected_count",
    "traffic_spike_ratio": "rules.traffic.spike_ratio",
    "traffic_min_ratio": "rules.traffic.min_ratio",
    "ctr_halflife": "rules.ctr.halflife",
    "ctr_prior": "rules.ctr.prior",
    "ctr_prior_n": "rules.ctr.prior_n",
    "rho_prior": "rules.ctr.rho_prior",
    "rho_halflife": "rules.ctr.rho_halflife",
    "ctr_max_effective_n": "rules.ctr.max_effective_n",
    "min_expected_clicks": "rules.ctr.min_expected_clicks",
    "min_impressions": "rules.ctr.min_impressions",
    "ctr_drop_ratio": "rules.ctr.drop_ratio",
    "ctr_spike_ratio": "rules.ctr.spike_ratio",
    "ctr_drop_min_ratio": "rules.ctr.drop_min_ratio",
    "ctr_spike_min_ratio": "rules.ctr.spike_min_ratio",
    "ecpm_alpha": "rules.ecpm_drop.alpha",
    "ecpm_sigma1_sq": "rules.ecpm_drop.sigma1_sq",
    "ecpm_tau_sq": "rules.ecpm_drop.tau_sq",
    "ecpm_var_halflife": "rules.ecpm_drop.var_halflife",
    "min_impressions_ecpm": "rules.ecpm_drop.min_impressions",
    "ecpm_drop_ratio": "rules.ecpm_drop.drop_ratio",
    "ecpm_drop_min_ratio": "rules.ecpm_drop.drop_min_ratio",
    "orphan_abs_tolerance": "rules.click_without_impression.abs_tolerance",
    "orphan_frac_tolerance": "rules.click_without_impression.frac_tolerance",
    "classic_ctr_drop": "rules.classic_ctr.drop_ratio",
    "classic_ctr_spike": "rules.classic_ctr.spike_ratio",
    "classic_traffic_spike": "rules.classic_traffic.spike_ratio",
    "classic_ecpm_drop": "rules.classic_ecpm_drop.drop_ratio",
}


RETIRED_KEYS: frozenset[str] = frozenset({"resolve_evidence"})
"""``default`` keys a file may still carry that no longer do anything (read, ignored, warned about)."""


class CountAwareSettings(SettingsSection):
    """Shared by the count-aware rules of the ``default`` set: thresholds from the alert budget
    (alpha = alert_budget_per_day / (expected_segments x windows per day), split between one-window
    z tests and CUSUMs), warm-up, baseline freezing and the evidence needed to resolve."""

    alert_budget_per_day: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    expected_segments: int = Field(
        default=256,
        gt=0,
        description="segment x metric tests per window, until the detector counts its live tracked segments",
    )
    tests_per_segment: int = Field(default=4, gt=0, description="tests per tracked segment and window (the budget)")
    cusum_budget_share: float = Field(default=0.5, ge=0, lt=1, description="budget share of the sequential alarms")
    warmup_windows: int = Field(default=10, ge=0)
    z_resolve: float = Field(default=2.0, ge=0, allow_inf_nan=False, description="band half-width, in sigmas")
    extreme_z_margin: float = Field(
        default=2.0, ge=0, allow_inf_nan=False, description="z above the threshold that fires without confirmation"
    )
    equivalence_margin: float = Field(
        default=0.2, ge=0, allow_inf_nan=False, description="resolve only within this share of the episode's anchor"
    )
    new_normal_windows: int = Field(
        default=240, ge=0, description="firing this long: accept the level as the new normal (0: never)"
    )
    z_freeze: float = Field(default=3.0, ge=0, allow_inf_nan=False, description="a window beyond |z| does not update")
    max_freeze_windows: int = Field(default=60, gt=0, description="...unless frozen this long (a level shift)")
    cooldown_windows: int = Field(default=0, ge=0, description="after a resolve, no new firing for this long")
    max_gap_fill: int = Field(default=60, ge=0, description="silent minutes replayed as zero windows")

    @model_validator(mode="before")
    @classmethod
    def _retired_keys(cls, data: Any) -> Any:
        """``resolve_evidence`` (round 1: the LLR for 'back to normal') is read and ignored, with a warning."""
        if isinstance(data, Mapping) and RETIRED_KEYS & set(data):
            logger.warning(
                "rules: default.resolve_evidence is no longer used: an alert resolves when its metric is back "
                "within default.equivalence_margin of the baseline frozen when it fired (remove the key)",
                extra={"retired_keys": ["resolve_evidence"]},
            )
            data = {k: v for k, v in data.items() if k not in RETIRED_KEYS}
        return data


class ClassicSettings(SettingsSection):
    """Shared by the rules of the ``classic`` set (the tutorial): EMA weight, warm-up and cooldown."""

    ema_alpha: float = Field(default=0.2, gt=0, le=1)
    warmup_windows: int = Field(default=5, ge=0)
    cooldown_windows: int = Field(default=10, ge=0)
    max_gap_fill: int = Field(default=0, ge=0, description="the tutorial does not replay silent minutes")


class RuleSettings(SettingsSection):
    """The whole rules file (see services/detector/rules.yaml); defaults = built-in behaviour."""

    rule_set: str = Field(default="default", description="which registered rule set runs: default | classic")
    window_ms: int = Field(default=60_000, gt=0)
    resolve_windows: int = Field(default=3, gt=0, description="in-band windows before an alert resolves")
    default: CountAwareSettings = Field(default_factory=CountAwareSettings)
    classic: ClassicSettings = Field(default_factory=ClassicSettings)
    rules: dict[str, Any] = Field(default_factory=dict, validate_default=True, description="rule id -> its settings")

    @model_validator(mode="before")
    @classmethod
    def _legacy_flat_keys(cls, data: Any) -> Any:
        """Move round-1 flat keys into their sections (see :data:`LEGACY_FLAT_KEYS`)."""
        if not isinstance(data, Mapping):
            return data
        flat = [key for key in data if key in LEGACY_FLAT_KEYS]
        if not flat:
            return data
        out: dict[str, Any] = dict(data)
        for key in flat:
            *sections, name = LEGACY_FLAT_KEYS[key].split(".")
            node = out
            for part in sections:
                child = node.get(part)
                if isinstance(child, SettingsSection):
                    child = child.model_dump(exclude_unset=True)
                elif child is None:
                    child = {}
                elif not isinstance(child, Mapping):
                    raise ValueError(f"{part}: expected a mapping, got {type(child).__name__}")
                node[part] = node = dict(child)
            if name in node:
                raise ValueError(f"{key} (a round-1 key) and {LEGACY_FLAT_KEYS[key]} both given: keep only the latter")
            node[name] = out.pop(key)
        moved = {key: LEGACY_FLAT_KEYS[key] for key in flat}
        logger.warning(
            "rules: %d round-1 top-level keys read in their sections (move them there): %s",
            len(moved),
            ", ".join(f"{old} -> {new}" for old, new in moved.items()),
            extra={"legacy_keys": sorted(moved)},
        )
        return out

    @field_validator("rule_set")
    @classmethod
    def _known_set(cls, value: str) -> str:
        from adwatch_detector.rules.registry import RULE_SETS

        if value not in RULE_SETS:
            raise ValueError(f"expected one of {tuple(RULE_SETS)}, got {value!r}")
        return value

    @field_validator("rules", mode="before")
    @classmethod
    def _rule_sections(cls, value: Any) -> dict[str, SettingsSection]:
        """Every registered rule gets its section (defaults when absent); unknown ids are errors."""
        from adwatch_detector.rules.registry import RENAMED_RULES, RULES

        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping of rule id -> settings, got {type(value).__name__}")
        value = {RENAMED_RULES.get(str(k), k): v for k, v in value.items()}
        unknown = sorted(str(k) for k in value if k not in RULES)
        if unknown:
            raise ValueError(f"unknown rule {unknown[0]!r} (known: {', '.join(sorted(RULES))})")
        out: dict[str, SettingsSection] = {}
        for rule_id, rule in RULES.items():
            section = value.get(rule_id)
            if isinstance(section, rule.settings_model):
                out[rule_id] = section
                continue
            try:
                out[rule_id] = rule.settings_model.model_validate(section or {})
            except ValidationError as exc:
                raise ValueError(_describe(exc, prefix=f"rules.{rule_id}")) from None
        return out

    def section(self, rule_id: str, model: type[M]) -> M:
        """Rule ``rule_id``'s validated settings, typed."""
        value = self.rules.get(rule_id) if self.rules else None
        if value is None:  # built with model_construct or an empty mapping
            return model()
        if not isinstance(value, model):
            raise TypeError(f"rules.{rule_id} holds {type(value).__name__}, not {model.__name__}")
        return value

    @property
    def set_settings(self) -> CountAwareSettings | ClassicSettings:
        """The section shared by the rules of the running rule set."""
        section: CountAwareSettings | ClassicSettings = getattr(self, self.rule_set)
        return section

    def with_expected_segments(self, tests: int) -> RuleSettings:
        """These settings with the alert budget spread over ``tests`` tests per window."""
        return self.model_copy(update={"default": self.default.model_copy(update={"expected_segments": tests})})

    @property
    def windows_per_day(self) -> float:
        return 86_400_000.0 / self.window_ms

    @property
    def z_threshold(self) -> float:
        """Single-window z threshold from the alert budget (count-aware rules)."""
        d = self.default
        share = 1.0 - d.cusum_budget_share
        return z_from_p(budget_alpha(d.alert_budget_per_day * share, d.expected_segments, self.windows_per_day))

    @property
    def cusum_h(self) -> float:
        """CUSUM alarm level from the alert budget (ARL0 >= e^h)."""
        d = self.default
        share = d.cusum_budget_share
        return cusum_threshold(budget_alpha(d.alert_budget_per_day * share, d.expected_segments, self.windows_per_day))


def _describe(exc: ValidationError, prefix: str = "") -> str:
    """'key.path: message (got value)' for each error: names the key a user has to fix."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"].startswith("value_error"):
            msg = msg.removeprefix("Value error, ")
        got = f" (got {err['input']!r})" if err["type"] not in ("extra_forbidden", "missing") else ""
        if err["type"] == "value_error" and "rules." in msg:
            got = ""
        parts.append(f"{loc}: {msg}{got}" if loc else f"{msg}{got}")
    return "; ".join(parts)


def make_rules(**values: Any) -> RuleSettings:
    """Validated RuleSettings from the rules file's structure; ConfigError names the bad key."""
    try:
        return RuleSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"rules: {_describe(exc)}") from None


def load_rules(path: str | None = None) -> RuleSettings:
    """RuleSettings from a YAML file (see rules.yaml); None or an empty file -> defaults."""
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
    try:
        return RuleSettings.model_validate({str(k): v for k, v in data.items()})
    except ValidationError as exc:
        raise ConfigError(f"rules: {path}: {_describe(exc)}") from None
