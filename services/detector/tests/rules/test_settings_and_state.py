"""rules.yaml validation, the registry's invariants and the per-segment state format."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import get_args

import msgspec
import pytest
import yaml

from adwatch.contracts import STREAM_ALERT_TYPES, AlertType
from adwatch.errors import ConfigError
from adwatch_detector.rules import (
    RULE_SETS,
    RULES,
    STATE_VERSION,
    RuleSettings,
    SegmentState,
    StateError,
    detect_windows,
    load_rules,
)
from adwatch_detector.rules.settings import LEGACY_FLAT_KEYS, RETIRED_KEYS
from adwatch_detector.rules.state import RuleSlot

RULES_YAML = Path(__file__).parents[2] / "rules.yaml"
ROUND1_YAML = Path(__file__).parent / "round1_rules.yaml"  # services/detector/rules.yaml as round 1 shipped it


def test_the_shipped_rules_file_is_the_built_in_defaults() -> None:
    assert load_rules(str(RULES_YAML)) == RuleSettings()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param("rules:\n  ctr:\n    halflife: -1\n", "rules.ctr.halflife", id="out-of-range-in-a-rule"),
        pytest.param("rules:\n  ctr:\n    half_life: 60\n", "rules.ctr.half_life: unknown key", id="unknown-rule-key"),
        pytest.param("rules:\n  ctr_fancy: {}\n", "unknown rule 'ctr_fancy'", id="unknown-rule-id"),
        pytest.param("default:\n  cusum_budget_share: 1.0\n", "default.cusum_budget_share", id="share-below-1"),
        pytest.param("classic:\n  ema_alpha: 0\n", "classic.ema_alpha", id="alpha-positive"),
        pytest.param("classic:\n  warmup: 3\n", "classic.warmup: unknown key", id="unknown-set-key"),
        pytest.param("alert_budget: 1.0\n", "alert_budget: unknown key", id="unknown-top-level-key"),
        pytest.param(
            "min_impressions: 5\nrules:\n  ctr:\n    min_impressions: 9\n",
            "min_impressions (a round-1 key) and rules.ctr.min_impressions both given",
            id="flat-and-sectioned-key",
        ),
        pytest.param("ctr_halflife: -1\n", "rules.ctr.halflife", id="flat-key-bounded-in-its-section"),
        pytest.param("rules:\n  traffic:\n    alpha: 1.5\n", "rules.traffic.alpha", id="unit-interval"),
        pytest.param("window_ms: 0\n", "window_ms", id="window-positive"),
    ],
)
def test_a_bad_rules_file_names_the_file_and_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_rules(str(path))
    assert str(path) in str(caught.value) and named in str(caught.value)


def test_a_round_1_flat_rules_file_loads_into_the_sections(caplog: pytest.LogCaptureFixture) -> None:
    """The round-1 rules.yaml (every key at the top level, as shipped) still reads, as the same settings."""
    with caplog.at_level(logging.WARNING, logger="adwatch_detector.rules.settings"):
        assert load_rules(str(ROUND1_YAML)) == load_rules(str(RULES_YAML))
    (record,) = [r for r in caplog.records if hasattr(r, "legacy_keys")]
    assert "alert_budget_per_day" in record.legacy_keys and "default.alert_budget_per_day" in record.getMessage()
    (retired,) = [r for r in caplog.records if hasattr(r, "retired_keys")]
    assert "no longer used" in retired.getMessage(), "round 1's resolve_evidence is read, ignored and said so"


@pytest.mark.parametrize(
    ("flat", "where"),
    [
        pytest.param("alert_budget_per_day: 0.5", ("default", "alert_budget_per_day"), id="set-wide"),
        pytest.param("classic_cooldown_windows: 3", ("classic", "cooldown_windows"), id="classic-set"),
        pytest.param("count_alpha: 0.3", ("traffic", "alpha"), id="traffic-rule"),
        pytest.param("min_impressions_ecpm: 50", ("ecpm_drop", "min_impressions"), id="ecpm-rule"),
        pytest.param("orphan_abs_tolerance: 7", ("click_without_impression", "abs_tolerance"), id="orphan-rule"),
        pytest.param("classic_traffic_spike: 4.0", ("classic_traffic", "spike_ratio"), id="classic-rule"),
    ],
)
def test_each_round_1_key_lands_in_its_section(tmp_path: Path, flat: str, where: tuple[str, str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(f"{flat}\nrules:\n  ctr:\n    halflife: 30\n")  # mixed with a sectioned key
    rules = load_rules(str(path))
    section, key = where
    holder = getattr(rules, section) if section in ("default", "classic") else rules.rules[section]
    assert getattr(holder, key) == yaml.safe_load(flat)[flat.split(":")[0]]
    assert rules.rules["ctr"].halflife == 30


def test_every_round_1_key_has_a_place() -> None:
    assert set(yaml.safe_load(ROUND1_YAML.read_text())) - {"rule_set", "window_ms", "resolve_windows"} == set(
        LEGACY_FLAT_KEYS
    )
    for key, place in LEGACY_FLAT_KEYS.items():
        if key in RETIRED_KEYS:
            continue
        *sections, name = place.split(".")
        model = (
            type(getattr(RuleSettings(), sections[0])) if sections[0] != "rules" else RULES[sections[1]].settings_model
        )
        assert name in model.model_fields, f"{key} -> {place}: no such field"


def test_a_rule_section_overrides_only_that_rule(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  ecpm_drop:\n    min_impressions: 50\n")
    rules = load_rules(str(path))
    assert rules.rules["ecpm_drop"].min_impressions == 50
    assert rules.rules["ctr"] == RuleSettings().rules["ctr"]


def test_registry_ids_sections_and_alert_types() -> None:
    known = set(get_args(AlertType)) - set(STREAM_ALERT_TYPES)  # the stream's own are the driver's
    for rule_id, rule in RULES.items():
        assert rule.id == rule_id and set(rule.alert_types) <= known
        assert isinstance(RuleSettings().rules[rule_id], rule.settings_model)
    for name, ids in RULE_SETS.items():
        assert hasattr(RuleSettings(), name), f"rule set {name} has a settings section"
        raised = [t for i in ids for t in RULES[i].alert_types]
        assert sorted(raised) == sorted(known), f"{name} raises every alert type exactly once"


def _windows() -> list:  # type: ignore[type-arg]
    from adwatch.contracts import SegmentWindow

    return [
        SegmentWindow(
            window_start_ms=i * 60_000,
            window_end_ms=(i + 1) * 60_000,
            country="US",
            ad_format="banner",
            impressions=500,
            clicks=10,
            revenue_usd=1.0,
        )
        for i in range(30)
    ]


def test_state_is_a_mapping_keyed_by_rule_id() -> None:
    state, _ = detect_windows(None, _windows(), RuleSettings(), 0)
    version, last, slots = msgspec.msgpack.decode(state.to_bytes())
    assert (version, last) == (STATE_VERSION, 29 * 60_000)
    # a count segment carries no slot of the lazy value rule (it never read a value window)
    assert list(slots) == [i for i in RULE_SETS["default"] if not RULES[i].lazy] and "value" not in slots
    assert set(slots["ctr"][1]) == {"ctr_drop", "ctr_spike"}, "lifecycles keyed by alert type within the rule"


def test_other_rules_state_survives_untouched() -> None:
    """A rule of another set (or a removed one) keeps its bytes; switching sets never shifts a slot."""
    default, _ = detect_windows(None, _windows(), RuleSettings(), 0)
    foreign = SegmentState.from_bytes(default.to_bytes())
    foreign.others["retired_rule"] = msgspec.Raw(msgspec.msgpack.encode([1, 2, 3]))
    data = foreign.to_bytes()
    classic, _ = detect_windows(SegmentState.from_bytes(data), _windows()[:0], RuleSettings(rule_set="classic"), 0)
    again = SegmentState.from_bytes(classic.to_bytes())
    assert again.rules["ctr"] == default.rules["ctr"], "the default rules' state is kept"
    assert bytes(again.others["retired_rule"]) == msgspec.msgpack.encode([1, 2, 3])
    assert "classic_ctr" in again.rules


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(msgspec.msgpack.encode([1, -1, 0, 0.0]), "state_version 1", id="version-1-positional"),
        pytest.param(msgspec.msgpack.encode([3, -1, {}]), "state_version 3", id="newer-version"),
        pytest.param(b"\xc1garbage", "unknown bytes", id="garbage"),
        pytest.param(msgspec.msgpack.encode([2, -1, {"ctr": [["x"], {}]}]), "rule 'ctr'", id="rule-state-mismatch"),
    ],
)
def test_unreadable_state_fails_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(StateError, match=message) as caught:
        SegmentState.from_bytes(data)
    if "version" in message or "unknown" in message:
        assert "ADWATCH_DETECTOR_CHECKPOINT_DIR at a new, empty directory" in str(caught.value)


def test_a_rule_slot_round_trips() -> None:
    state, _ = detect_windows(None, _windows(), RuleSettings(), 0)
    assert isinstance(state.rules["traffic"], RuleSlot)
    assert SegmentState.from_bytes(state.to_bytes()) == state


def test_a_renamed_rule_keeps_its_state_and_its_rules_file_section(tmp_path: Path) -> None:
    """``traffic_spike`` became ``traffic`` (it alerts drops too): old checkpoints and rules files still read."""
    state, _ = detect_windows(None, _windows(), RuleSettings(), 0)
    envelope = msgspec.msgpack.decode(state.to_bytes())
    envelope[2] = {("traffic_spike" if k == "traffic" else k): v for k, v in envelope[2].items()}
    old = SegmentState.from_bytes(msgspec.msgpack.encode(envelope))
    assert old.rules["traffic"] == state.rules["traffic"] and "traffic_spike" not in old.others
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  traffic_spike:\n    spike_ratio: 3.0\n")
    assert load_rules(str(path)).rules["traffic"].spike_ratio == 3.0


def test_a_checkpoint_written_before_seasons_and_episodes_still_reads() -> None:
    """Fields were appended (a traffic profile, an episode per lifecycle): state bytes of before
    decode with their defaults, and an alert firing then is still firing, to resolve honestly."""
    import msgspec

    from adwatch_detector.rules.lifecycle import Lifecycle
    from adwatch_detector.rules.state import STATE_VERSION, SegmentState

    old_traffic = [100, 600.0, 0.0, 0.64, 100.0, 0]  # windows, level, trend, phi_num, phi_den, frozen
    old_life = [True, 0.0, 0.0, 0, 5, 60_000, -1]  # firing since window 1, no episode yet
    quiet = [False, 0.0, 0.0, 0, 0, -1, -1]
    data = msgspec.msgpack.encode(
        [STATE_VERSION, 120_000, {"traffic": [old_traffic, {"traffic_spike": quiet, "traffic_drop": old_life}]}]
    )
    state = SegmentState.from_bytes(data)
    slot = state.rules["traffic"]
    assert slot.state.level == 600.0 and slot.state.season == [] and slot.state.dark == b""
    drop = slot.lives["traffic_drop"]
    assert isinstance(drop, Lifecycle) and drop.firing and drop.episode is None and drop.anchor == -1.0
