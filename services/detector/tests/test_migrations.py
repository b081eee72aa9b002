"""The detector's ClickHouse schema migrations on the real embedded engine (chdb)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adwatch.storage import StorageError, insert_json_sql, make_clickhouse
from adwatch_detector.migrations import LEDGER, MIGRATIONS, Tables, alerts_ddl, metrics_ddl, migrate

TABLES = Tables("ad_metrics", "ad_alerts")
ROW = {"segment": "US|banner", "country": "US", "ad_format": "banner", "window_start_ms": 0, "window_end_ms": 60_000}


def test_migrations_run_once_in_order_and_a_second_start_changes_nothing(tmp_path: Path) -> None:
    ch = make_clickhouse(f"chdb://{tmp_path / 'ch'}")
    assert migrate(ch, TABLES) == [m.version for m in MIGRATIONS]
    assert migrate(ch, TABLES) == []  # the next start-up
    assert ch.query(f"SELECT version FROM {LEDGER} FINAL ORDER BY version") == [(m.version,) for m in MIGRATIONS]
    assert migrate(ch, Tables("m2", "a2")) == [m.version for m in MIGRATIONS]  # other tables, their own ledger


def test_a_round_one_store_is_migrated_in_place_and_its_inserts_become_idempotent(tmp_path: Path) -> None:
    ch = make_clickhouse(f"chdb://{tmp_path / 'ch'}")
    ch.command(metrics_ddl(TABLES.metrics))  # as round 1 created it: no ledger, no deduplication
    ch.insert_json_rows(TABLES.metrics, [{**ROW, "written_at_ms": 1}])
    assert migrate(ch, TABLES) == [m.version for m in MIGRATIONS]
    for written_at in (2, 3):  # one micro-batch, written again by its replay
        ch.insert_json_rows(TABLES.metrics, [{**ROW, "written_at_ms": written_at}], dedup_token="q:7:ad_metrics")
    assert ch.query(f"SELECT written_at_ms FROM {TABLES.metrics} ORDER BY written_at_ms") == [(1,), (2,)]


def test_a_deduplication_token_is_checked_before_it_reaches_sql() -> None:
    assert "insert_deduplication_token = 'q-1:3:ad_alerts'" in insert_json_sql("t", [{"a": 1}], "q-1:3:ad_alerts")
    with pytest.raises(StorageError, match="deduplication token"):
        insert_json_sql("t", [{"a": 1}], "x'; DROP TABLE t; --")


def test_an_alerts_table_of_round_one_gains_the_rule_column(tmp_path: Path) -> None:
    ch = make_clickhouse(f"chdb://{tmp_path / 'ch'}")
    ch.command(alerts_ddl(TABLES.alerts))  # round 1's table: no rule column
    ch.insert_json_rows(TABLES.alerts, [{"alert_id": "before"}])
    migrate(ch, TABLES)
    ch.insert_json_rows(TABLES.alerts, [{"alert_id": "after", "rule": "ctr"}])
    assert ch.query(f"SELECT alert_id, rule FROM {TABLES.alerts} ORDER BY alert_id") == [
        ("after", "ctr"),
        ("before", ""),
    ]


def test_an_episode_reads_back_from_the_alerts_history(tmp_path: Path) -> None:
    """An escalation's previous severity and a resolve's resolution and duration survive the
    round trip through ad_alerts (written by sinks.alert_row, read by sinks.alert_from_row)."""
    from adwatch.contracts import Alert
    from adwatch_detector.sinks import ALERT_COLUMNS, alert_from_row, alert_row

    ch = make_clickhouse(f"chdb://{tmp_path / 'ch'}")
    ch.command(alerts_ddl(TABLES.alerts))  # a store of before the episode columns
    migrate(ch, TABLES)
    common = dict(
        fingerprint="traffic_drop:country=DE",
        alert_type="traffic_drop",
        dimensions={"country": "DE"},
        metric="impressions",
        current=100.0,
        expected=1000.0,
        band_low=900.0,
        band_high=1100.0,
        deviation_pct=-90.0,
        volume=100,
        p_value=1e-9,
        z_score=6.0,
        window_start_ms=60_000,
        window_end_ms=120_000,
        detected_at_ms=130_000,
        message="m",
    )
    alerts = [
        Alert(alert_id="a1", status="firing", severity="high", previous_severity="medium", **common),
        Alert(
            alert_id="a2", status="resolved", severity="high", resolution="new_normal", duration_ms=14_400_000, **common
        ),
        Alert(alert_id="a3", status="firing", severity="low", **common),
    ]
    ch.insert_json_rows(TABLES.alerts, [alert_row(a, a.segment_id, "") for a in alerts])
    rows = ch.query(f"SELECT {', '.join(ALERT_COLUMNS)} FROM {TABLES.alerts} FINAL ORDER BY alert_id")
    assert [alert_from_row(r) for r in rows] == alerts
