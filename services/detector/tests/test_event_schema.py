"""The job's from_json schema is derived from the AdEvent contract (no Spark session needed)."""

from __future__ import annotations

import msgspec
from pyspark.sql.types import DoubleType, LongType, MapType, StringType, StructField, StructType

from adwatch.contracts import AdEvent
from adwatch_detector.job import EVENT_SCHEMA, REQUIRED_FIELDS


def test_event_schema_matches_the_contract() -> None:
    fields = msgspec.structs.fields(AdEvent)
    assert [f.name for f in EVENT_SCHEMA.fields] == [f.name for f in fields] + ["_corrupt_record"]
    assert tuple(f.name for f in fields if f.required) == REQUIRED_FIELDS
    # the hand-written schema the job used before it was derived
    assert (
        StructType(
            [StructField(n, StringType()) for n in ("event_id",)]
            + [StructField("event_time_ms", LongType())]
            + [
                StructField(n, StringType())
                for n in ("event_type", "country", "ad_format", "app_id", "placement_id", "campaign_id", "user_hash")
            ]
            + [StructField("revenue_usd", DoubleType()), StructField("impression_id", StringType())]
            + [StructField("dimensions", MapType(StringType(), StringType()))]  # schema version 2: open dimensions
            + [StructField("schema_version", LongType()), StructField("_corrupt_record", StringType())]
        )
        == EVENT_SCHEMA
    )
