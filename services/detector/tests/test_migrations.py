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
