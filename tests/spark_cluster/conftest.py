"""The standalone cluster (a master and two 1-core workers on 127.0.0.1), started once per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .cluster import StandaloneCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    c = StandaloneCluster(tmp_path_factory.mktemp("spark-cluster"), workers=2)
    try:
        yield c.start()
    finally:
        c.stop()
