"""Detection rules: pure Python over window aggregates plus per-segment state (no Spark, no clock).

Layout: ``base.py`` (the rule protocol, :class:`Check`), one module per rule (``orphan``, ``traffic``, ``value``,
``ctr``, ``ecpm``, ``classic_*``), ``registry.py`` (rules by id, rule sets), ``lifecycle.py``
(firing/resolved), ``settings.py`` (rules.yaml), ``state.py`` (per-segment state bytes),
``engine.py`` (:func:`detect_windows`).
"""

from adwatch_detector.rules.base import BaseRule, Check
from adwatch_detector.rules.engine import RuleEngine, detect_windows
from adwatch_detector.rules.registry import RULE_SETS, RULES
from adwatch_detector.rules.settings import RuleSettings, load_rules, make_rules
from adwatch_detector.rules.state import STATE_VERSION, SegmentState, StateError

__all__ = [
    "RULES",
    "RULE_SETS",
    "STATE_VERSION",
    "BaseRule",
    "Check",
    "RuleEngine",
    "RuleSettings",
    "SegmentState",
    "StateError",
    "detect_windows",
    "load_rules",
    "make_rules",
]
