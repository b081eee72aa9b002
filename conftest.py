"""Root conftest: fixtures shared by every test folder.

The embedded broker and Redis come from :mod:`adwatch_dev.testing`; one SparkSession serves
the whole run (it takes 6-7 s to start), for the detector's and the end-to-end tests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

pytest_plugins = ["adwatch_dev.testing"]


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from adwatch_detector.spark import build_spark

    # py4j logs at INFO from __del__ at interpreter exit, after pytest closed its streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    session = build_spark(master="local[2]", app_name="adwatch-tests", shuffle_partitions=2)
    try:
        yield session
    finally:
        session.stop()
