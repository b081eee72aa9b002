"""A clean run as long as the fault run (about half an hour of event time, every segment,
the same rate) produces no alert: real generator and detector processes, nothing injected.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adwatch.contracts import TOPIC_ALERTS, Alert
from adwatch.kafka import ensure_topics
from adwatch_dev.infra import EmbeddedInfra
from adwatch_dev.pipeline import LocalPipeline
from adwatch_dev.testing import TopicReader, poll_until

from .test_pipeline import RATE

pytestmark = pytest.mark.e2e

MINUTES = 30


def _closed_windows(pipeline: LocalPipeline) -> float:
    try:
        text = pipeline.metrics("detector")
    except OSError:  # not serving yet
        return 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "adwatch_detector_windows_closed":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


def test_clean_traffic_of_the_same_length_raises_no_alert(tmp_path: Path) -> None:
    infra = EmbeddedInfra(tmp_path / "infra").start()
    pipeline = LocalPipeline(infra, tmp_path)
    reader = TopicReader(infra.kafka_bootstrap, TOPIC_ALERTS)
    try:
        ensure_topics(infra.kafka_bootstrap)
        generator = pipeline.start(
            "generator", ["adwatch-generator", "backfill", "--hours", str(MINUTES / 60), "--rate", str(RATE),
                          "--seed", "8", "--quiet"],
        )  # fmt: skip
        assert generator.popen.wait(timeout=240) == 0, pipeline.log("generator")
        pipeline.processes.pop("generator")  # done: only the detector must keep running
        pipeline.start("detector", ["adwatch-detector", "run"], ADWATCH_DETECTOR_TRIGGER_SECONDS="2",
                       ADWATCH_DETECTOR_CHECKPOINT_DIR=str(tmp_path / "checkpoint"))  # fmt: skip
        segments = 60  # at this rate nearly all 64 segments see traffic every minute
        poll_until(
            lambda: pipeline.assert_running() or _closed_windows(pipeline) >= segments * (MINUTES - 2),
            "the detector to close every window of the run",
            timeout_s=420,
            interval_s=2,
        )
        alerts = reader.decoded(Alert, seconds=3)
        assert alerts == [], [a.message for a in alerts]
    finally:
        reader.close()
        pipeline.stop()
        infra.stop()
