"""Every rule by id, and the rule sets (which rules run, in which order).

Adding a rule: write its module (a :class:`BaseRule` subclass with its settings and state), add
the class to ``RULES`` and its id to a set. Ids are stable: they key the rule's section in
rules.yaml and its slot in the checkpointed state, so a renamed rule keeps its old id in
``RENAMED_RULES`` (read as the new one) or loses its history.
"""

from __future__ import annotations

from typing import Any

from adwatch_detector.rules.base import BaseRule
from adwatch_detector.rules.classic_ctr import ClassicCtr
from adwatch_detector.rules.classic_ecpm import ClassicEcpmDrop
from adwatch_detector.rules.classic_traffic import ClassicTraffic
from adwatch_detector.rules.ctr import Ctr
from adwatch_detector.rules.ecpm import EcpmDrop
from adwatch_detector.rules.orphan import OrphanClicks
from adwatch_detector.rules.traffic import Traffic
from adwatch_detector.rules.value import Value

RULES: dict[str, type[BaseRule[Any]]] = {
    rule.id: rule for rule in (OrphanClicks, Traffic, Ctr, EcpmDrop, Value, ClassicCtr, ClassicTraffic, ClassicEcpmDrop)
}

# Old id -> new id: checkpointed state and rules files written under the old id keep working.
RENAMED_RULES: dict[str, str] = {"traffic_spike": "traffic", "classic_traffic_spike": "classic_traffic"}  # + drops

# Rule set -> rule ids in evaluation order (= the order of their alerts within a window). The set's
# shared settings are the rules.yaml section of the same name (RuleSettings.default / .classic).
# ``value`` (gauge streams) runs in both: the tutorial has no fixed-ratio rule for a value stream,
# and a segment fed by one must be watched whichever set runs (it skips count windows).
RULE_SETS: dict[str, tuple[str, ...]] = {
    "default": ("click_without_impression", "traffic", "ctr", "ecpm_drop", "value"),
    "classic": ("click_without_impression", "classic_ctr", "classic_traffic", "classic_ecpm_drop", "value"),
}


def _check_registry() -> None:
    """Fail at import on a misregistration: unknown id, or two rules of a set raising one alert type."""
    for name, ids in RULE_SETS.items():
        seen: dict[str, str] = {}
        for rule_id in ids:
            if rule_id not in RULES:
                raise RuntimeError(f"rule set {name!r} names unknown rule {rule_id!r}")
            for alert_type in RULES[rule_id].alert_types:
                if alert_type in seen:
                    raise RuntimeError(f"rule set {name!r}: {alert_type} raised by {seen[alert_type]} and {rule_id}")
                seen[alert_type] = rule_id


_check_registry()
