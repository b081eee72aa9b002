"""adwatch generator: realistic ad events with injected anomalies and their ground truth.

Pure API (no Kafka): :class:`TrafficModel` (``traffic``), :class:`EventBatch` (``events``),
:class:`Scenario`, :func:`parse_scenario`, :func:`truth_record` (``scenarios``); the CLI and
Kafka/file I/O live in ``__main__``, ``runner`` and ``sink``. Measuring generated traffic
(expected volumes, minute totals) is a development tool: ``adwatch_dev.traffic``.
"""

from adwatch_generator.events import EventBatch
from adwatch_generator.scenarios import Scenario, ScenarioError, make_scenario, parse_scenario, truth_record
from adwatch_generator.traffic import TrafficModel

__all__ = [
    "EventBatch",
    "Scenario",
    "ScenarioError",
    "TrafficModel",
    "make_scenario",
    "parse_scenario",
    "truth_record",
]
