"""adwatch generator: realistic ad events with injected anomalies and their ground truth.

Pure API (no Kafka): :class:`TrafficModel`, :class:`Scenario`, :func:`parse_scenario`,
:func:`truth_record`; the CLI and Kafka/file I/O live in ``__main__``, ``runner`` and ``sink``.
"""

from adwatch_generator.model import EventBatch, ExpectedVolumes, MinuteTotals, TrafficModel, minute_totals
from adwatch_generator.scenarios import Scenario, ScenarioError, make_scenario, parse_scenario, truth_record

__all__ = [
    "EventBatch",
    "ExpectedVolumes",
    "MinuteTotals",
    "Scenario",
    "ScenarioError",
    "TrafficModel",
    "make_scenario",
    "minute_totals",
    "parse_scenario",
    "truth_record",
]
