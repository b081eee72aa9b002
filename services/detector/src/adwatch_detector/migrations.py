"""The detector's ClickHouse schema as versioned migrations, applied at start-up.

Each migration is a list of statements that are safe to run again (``IF NOT EXISTS``,
``MODIFY SETTING``); ``adwatch_schema_migrations`` records what ran, so a restart (or two
detectors starting at once) changes nothing. A new table or column is a new migration at
the end of :data:`MIGRATIONS`, never an edit of an old one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from adwatch.storage import ClickHouse

LEDGER = "adwatch_schema_migrations"
DEDUP_WINDOW = 1000  # inserts remembered per table: far more than the micro-batches a replay repeats


# The first schema, as it was created: later changes are migrations below, not edits here.
def metrics_ddl(table: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    segment String, country LowCardinality(String), ad_format LowCardinality(String),
    window_start_ms Int64, window_end_ms Int64,
    window_start DateTime64(3, 'UTC') MATERIALIZED fromUnixTimestamp64Milli(window_start_ms, 'UTC'),
    impressions UInt64, clicks UInt64, requests UInt64, conversions UInt64,
    revenue_usd Float64, orphan_clicks UInt64, ctr Float64, ecpm Float64, written_at_ms Int64
) ENGINE = ReplacingMergeTree(written_at_ms) ORDER BY (segment, window_start_ms)"""


def alerts_ddl(table: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {table} (
    alert_id String, fingerprint String, status LowCardinality(String), alert_type LowCardinality(String),
    severity LowCardinality(String), country LowCardinality(String), ad_format LowCardinality(String),
    metric LowCardinality(String), current Float64, expected Float64, band_low Float64, band_high Float64,
    deviation_pct Float64, volume UInt64, p_value Float64, z_score Float64,
    window_start_ms Int64, window_end_ms Int64, detected_at_ms Int64, message String, rule_set String,
    schema_version UInt16, trace_id String, segment String
) ENGINE = ReplacingMergeTree ORDER BY alert_id"""


@dataclass(frozen=True)
class Tables:
    metrics: str
    alerts: str
    bands: str = "ad_bands"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: Callable[[Tables], list[str]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "windows and alerts tables", lambda t: [metrics_ddl(t.metrics), alerts_ddl(t.alerts)]),
    Migration(
        2,
        "idempotent inserts: a replayed micro-batch's insert_deduplication_token is recognised",
        lambda t: [
            f"ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW}"
            for table in (t.metrics, t.alerts)
        ],
    ),
    Migration(
        3,
        "alerts carry the id of the rule that raised them",
        lambda t: [f"ALTER TABLE {t.alerts} ADD COLUMN IF NOT EXISTS rule LowCardinality(String) DEFAULT ''"],
    ),
    Migration(
        4,
        "each rule's expected value and band per window (the segment dashboard draws them)",
        lambda t: [
            f"""CREATE TABLE IF NOT EXISTS {t.bands} (
    segment String, alert_type LowCardinality(String), metric LowCardinality(String),
    window_start_ms Int64, window_end_ms Int64,
    window_start DateTime64(3, 'UTC') MATERIALIZED fromUnixTimestamp64Milli(window_start_ms, 'UTC'),
    current Float64, expected Float64, band_low Float64, band_high Float64, volume UInt64, breach Bool,
    written_at_ms Int64
) ENGINE = ReplacingMergeTree(written_at_ms) ORDER BY (segment, alert_type, window_start_ms)
SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"""
        ],
    ),
    Migration(
        5,
        "segments on any dimensions: a segment id and the dimension map; alerts' drill-down",
        lambda t: [
            *(
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}"
                for table in (t.metrics, t.alerts)
                for column in ("segment_id String DEFAULT segment", "dimensions Map(String, String)")
            ),
            f"ALTER TABLE {t.alerts} ADD COLUMN IF NOT EXISTS contributors String DEFAULT '[]'",
            f"ALTER TABLE {t.alerts} ADD COLUMN IF NOT EXISTS folded UInt32 DEFAULT 0",
            f"ALTER TABLE {t.alerts} ADD COLUMN IF NOT EXISTS parent_segment_id String DEFAULT ''",
        ],
    ),
    Migration(
        6,
        "honest lifecycles: an escalation's previous severity, how and after how long an episode ended",
        lambda t: [
            f"ALTER TABLE {t.alerts} ADD COLUMN IF NOT EXISTS previous_severity Nullable(String)",
            f"ALTER TABLE {t.alerts} ADD COLUMN IF NOT EXISTS resolution Nullable(String)",
            f"ALTER TABLE {t.alerts} ADD COLUMN IF NOT EXISTS duration_ms Int64 DEFAULT 0",
        ],
    ),
)


def ledger_ddl() -> str:
    return f"""CREATE TABLE IF NOT EXISTS {LEDGER} (
    version UInt32, description String, tables String, applied_at_ms Int64
) ENGINE = ReplacingMergeTree ORDER BY (tables, version)"""


def applied(ch: ClickHouse, tables: Tables) -> set[int]:
    key = f"{tables.metrics},{tables.alerts}"
    return {int(v) for (v,) in ch.query(f"SELECT version FROM {LEDGER} FINAL WHERE tables = '{key}'")}


def migrate(ch: ClickHouse, tables: Tables, now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> list[int]:
    """Apply the migrations not yet recorded for these tables, in order; the versions applied."""
    ch.command(ledger_ddl())
    done = applied(ch, tables)
    ran = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        for sql in m.statements(tables):
            ch.command(sql)
        ch.insert_json_rows(
            LEDGER,
            [
                {
                    "version": m.version,
                    "description": m.description,
                    "tables": f"{tables.metrics},{tables.alerts}",
                    "applied_at_ms": now_ms(),
                }
            ],
        )
        ran.append(m.version)
    return ran
