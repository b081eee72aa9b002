"""`adwatch report`: the report of a `make run` from what the detector stored in ClickHouse (chdb)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from adwatch.storage import make_clickhouse
from adwatch_detector.backtest import run_backtest
from adwatch_detector.migrations import alerts_ddl, metrics_ddl
from adwatch_detector.rules import load_rules
from adwatch_detector.sinks import window_row
from adwatch_dev.cli import main
from adwatch_dev.simulate import sample_counts, to_windows

START = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def test_the_report_shows_the_stored_alerts_with_their_ids_as_anchors(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 6 * 60
    windows = []
    for fmt in ("banner", "native"):
        im, cr, ec = np.full(n, 900.0), np.full(n, 0.03), np.full(n, 2.0)
        if fmt == "banner":
            cr[300:340] *= 0.3
        windows += to_windows("US", fmt, START, *sample_counts(rng, im, cr, ec))
    alerts = run_backtest([(w.segment_key, w) for w in windows], load_rules(None))
    assert any(a.alert_type == "ctr_drop" for a in alerts)

    url = f"chdb://{tmp_path / 'ch'}"
    store = make_clickhouse(url)
    store.command(metrics_ddl("ad_metrics"))
    store.command(alerts_ddl("ad_alerts"))
    store.insert_json_rows("ad_metrics", [window_row(w.segment_key, w, written_at_ms=1) for w in windows])
    # what the detector stored, told apart from a replay by its message
    stored = [msgspec.structs.replace(a, message=f"stored: {a.message}") for a in alerts]
    store.insert_json_rows(
        "ad_alerts",
        [{**msgspec.structs.asdict(a), "trace_id": "", "segment": a.segment_id} for a in stored],
    )
    del store  # chdb: one owner of a data directory at a time (the command reads a snapshot)

    assert main(["report", "--clickhouse", url, "--out", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    for alert in stored:
        assert f"id='{alert.alert_id}'" in page
    assert "stored: " in page  # the stored alerts, not only the replay's
    assert "class='drilldown'" in page  # US native shares the country with US banner
