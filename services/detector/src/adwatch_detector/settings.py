"""Detector settings (env prefix ``ADWATCH_DETECTOR_``), built once in the entry point."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from adwatch.config import ServiceSettings
from adwatch.contracts import TOPIC_AD_EVENTS, TOPIC_AD_EVENTS_DLQ, TOPIC_ALERTS
from adwatch.errors import ConfigError
from adwatch_detector.hierarchy import Hierarchy

SourceKind = Literal["auto", "kafka", "python"]
StartingOffsets = Literal["earliest", "latest"]


class DetectorSettings(ServiceSettings):
    """Everything the Spark job needs besides the shared :class:`adwatch.config.CommonSettings`."""

    model_config = SettingsConfigDict(env_prefix="ADWATCH_DETECTOR_", frozen=True, extra="ignore")

    checkpoint_dir: str = Field("./.adwatch/detector-checkpoint", description="Spark checkpoint (offsets + state)")
    window_seconds: int = Field(60, gt=0, description="Tumbling event-time window length")
    watermark_seconds: int = Field(5, ge=0, description="How late an event may arrive before its window closes")
    trigger_seconds: float = Field(
        2.0, gt=0, description="Micro-batch trigger interval (batches run back to back when busy)"
    )
    max_future_skew_seconds: int = Field(
        300,
        ge=0,
        description="An event stamped more than this after its Kafka record's timestamp is dead-lettered "
        "(a producer's clock or unit bug would push the global watermark ahead; 0: no check)",
    )
    max_event_age_seconds: int = Field(
        0,
        ge=0,
        description="An event stamped more than this before its Kafka record's timestamp is dead-lettered "
        "(a misdated event no open window can take; e.g. 86400 on a live stream; 0: no check, the default, "
        "because a backfill produced today carries record timestamps long after its events)",
    )
    max_offsets_per_trigger: int = Field(500_000, ge=0, description="Rows per micro-batch at most (0: no limit)")
    rules_file: str | None = Field(None, description="YAML rule settings (None: built-in defaults)")
    source: SourceKind = Field("auto", description="kafka (spark-sql-kafka connector), python (Data Source API), auto")
    starting_offsets: StartingOffsets = Field("earliest", description="Where a new query (no checkpoint) starts")
    input_topic: str = TOPIC_AD_EVENTS
    alerts_topic: str = TOPIC_ALERTS
    dlq_topic: str = TOPIC_AD_EVENTS_DLQ
    spark_master: str | None = Field(
        None, description="Spark master (unset: Spark's own spark.master, e.g. from spark-submit, else local[2])"
    )
    shuffle_partitions: int = Field(4, gt=0, description="spark.sql.shuffle.partitions (state store partitions)")
    segment_sets: str = Field(
        "country,ad_format",
        description="Watched segment sets, ';'-separated, each a comma-separated list of dimensions ('*' is all "
        "traffic), e.g. '*;country;country,ad_format;app_id;campaign_id'. A set's parents are the sets it "
        "contains (drill-down); an unbounded field (user_hash, event_id) is refused",
    )
    min_segment_volume: float = Field(
        0.0,
        ge=0,
        description="Events per window (smoothed) a segment needs to be tracked by the rules; below it a "
        "segment only counts in its parents (the long tail is rolled up)",
    )
    max_tracked_segments: int = Field(
        250_000, gt=0, description="Segments tracked by the rules at most; new segments past it are rolled up"
    )
    segment_idle_seconds: int = Field(
        6 * 3600, gt=0, description="A segment with no event for this long (event time) is evicted from state"
    )
    drilldown_top: int = Field(5, ge=0, le=20, description="Child segments named in a parent's alert")
    trace_samples: int = Field(4, ge=0, le=64, description="Event traceparents kept per segment-window for links")
    redis_enabled: bool = True
    redis_key_prefix: str = "adwatch:segment:"
    redis_ttl_seconds: int = Field(3600, gt=0)
    clickhouse_enabled: bool = True
    metrics_table: str = "ad_metrics"
    alerts_table: str = "ad_alerts"
    bands_table: str = Field("ad_bands", description="Each rule's expected value and band per window")
    query_name: str = "adwatch_detector"
    flush_timeout_seconds: float = Field(30.0, gt=0, description="Producer flush deadline per micro-batch")
    liveness_stall_triggers: int = Field(
        150,
        gt=0,
        description="/healthz fails once the query reported no progress for this many triggers, and at least "
        "5 minutes (a wedged query: the kubelet restarts the driver, which resumes from its checkpoint)",
    )

    no_data_seconds: int = Field(
        120,
        ge=0,
        description="A no_data alert (critical) fires when no record was read on the input topic for this long "
        "in processing time, the watermark frozen or not; it resolves on the next record (0: off)",
    )
    partition_lag_seconds: int = Field(
        60,
        ge=0,
        description="A partition_lagging alert (high) fires when a partition's newest event time trails the "
        "newest partition's by more than this (its events fall behind the watermark and are dropped as "
        "late), or when most of its events in a batch were dropped as late; it resolves back within half "
        "of it, dropping none (0: off)",
    )

    @property
    def liveness_stall_seconds(self) -> float:
        return max(self.liveness_stall_triggers * self.trigger_seconds, 300.0)

    @field_validator("segment_sets")
    @classmethod
    def _bounded_sets(cls, value: str) -> str:
        try:
            Hierarchy.parse(value)  # refuses an unbounded or malformed dimension at start-up
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def hierarchy(self) -> Hierarchy:
        return Hierarchy.parse(self.segment_sets)
