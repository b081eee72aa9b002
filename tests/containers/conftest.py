"""Fixtures of the container tests: the Docker engine, the images (built once), an OTLP receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.containers.docker import Docker, build_images, start_docker, stop_docker
from tests.containers.otlp import OtlpReceiver


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    engine = start_docker()
    try:
        yield engine
    finally:
        stop_docker(engine)


@pytest.fixture(scope="session")
def images(docker: Docker) -> dict[str, str]:
    return build_images(docker)


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver
