"""The generator's settings: ``ADWATCH_GENERATOR_*`` from the environment, CLI flags on top."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from adwatch.config import ServiceSettings
from adwatch.contracts import TOPIC_AD_EVENTS, TOPIC_TRUTH


class GeneratorSettings(ServiceSettings):
    """What to generate and where to send it (bootstrap servers come from ``CommonSettings``)."""

    model_config = SettingsConfigDict(env_prefix="ADWATCH_GENERATOR_", frozen=True, extra="ignore")

    rate: float = Field(80.0, gt=0, le=10_000_000, description="ADWATCH_GENERATOR_RATE: mean events/s (all segments)")
    rate_scale: float = Field(1.0, gt=0, le=100_000, description="ADWATCH_GENERATOR_RATE_SCALE: multiplies the rate")
    seed: int = Field(42, ge=0, description="ADWATCH_GENERATOR_SEED: random seed (same seed, same events)")
    output: str = Field(
        "kafka", min_length=1, description="ADWATCH_GENERATOR_OUTPUT: kafka, - (stdout) or a .jsonl path"
    )
    topic: str = Field(TOPIC_AD_EVENTS, min_length=1, description="ADWATCH_GENERATOR_TOPIC: events topic")
    truth_topic: str = Field(TOPIC_TRUTH, min_length=1, description="ADWATCH_GENERATOR_TRUTH_TOPIC: ground truth topic")
    truth_file: str = Field("", description="ADWATCH_GENERATOR_TRUTH_FILE: also append ground truth here (JSONL)")
    trace_sample: float = Field(
        0.001, ge=0, le=1, description="ADWATCH_GENERATOR_TRACE_SAMPLE: events with traceparent"
    )
    warmup_minutes: float = Field(0.0, ge=0, le=7 * 24 * 60, description="ADWATCH_GENERATOR_WARMUP_MINUTES")
    progress_interval_s: float = Field(5.0, gt=0, description="ADWATCH_GENERATOR_PROGRESS_INTERVAL_S")

    @property
    def effective_rate(self) -> float:
        return self.rate * self.rate_scale
