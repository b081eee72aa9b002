"""Fixtures of the generator's tests: its metrics on a registry of their own."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from adwatch_generator.metrics import GeneratorMetrics


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> GeneratorMetrics:
    """What the entry point would hand down; read the values back through ``registry``."""
    return GeneratorMetrics(registry)
