"""Dashboards as code: writes dashboards/adwatch-segment.json (``make dashboards``).

The segment dashboard reads the detector's ClickHouse tables through Grafana's ClickHouse data
source (``grafana-clickhouse-datasource``, provisioned by the chart): one segment's metric
with the detector's expected value and band (``ad_bands``) and its alerts as annotations, the drill-down (the segments sharing its
country or ad format), and the top alerting segments. Notifications link here with the
segment and the alert's time range (``var-country``, ``var-ad_format``, ``from``, ``to``).
``tests/deploy/test_dashboards.py`` checks the file is what this writes and runs every query
against the real tables (chdb) with the macros filled in.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "dashboards" / "adwatch-segment.json"
DS = {"type": "grafana-clickhouse-datasource", "uid": "${datasource}"}
SEGMENT = "segment = '${country}|${ad_format}'"
# The metric picked by $metric, per window (CTR in percent, as people read it).
METRIC = "multiIf('${metric}' = 'ctr', ctr * 100, '${metric}' = 'ecpm', ecpm, toFloat64(impressions))"
SCALE = "if('${metric}' = 'ctr', 100, 1)"

QUERIES: dict[str, str] = {
    "metric": f"""SELECT m.window_start AS time, m.value AS "${{metric}}", b.expected AS expected,
  b.low AS "band low", b.high AS "band high"
FROM (SELECT window_start_ms, window_start, {METRIC} AS value FROM ad_metrics FINAL
      WHERE {SEGMENT} AND $__timeFilter(window_start)) AS m
LEFT JOIN (SELECT window_start_ms, {SCALE} * avg(expected) AS expected, {SCALE} * min(band_low) AS low,
             {SCALE} * max(band_high) AS high
           FROM ad_bands FINAL WHERE {SEGMENT} AND metric = '${{metric}}' AND $__timeFilter(window_start)
           GROUP BY window_start_ms) AS b USING window_start_ms
ORDER BY time
SETTINGS join_use_nulls = 1""",
    "alerts": f"""SELECT fromUnixTimestamp64Milli(window_start_ms, 'UTC') AS time, status, severity, alert_type, rule,
  current, expected, band_low, band_high, p_value, message
FROM ad_alerts FINAL
WHERE {SEGMENT} AND $__timeFilter(time)
ORDER BY time DESC""",
    "drilldown": f"""SELECT segment, if(country = '${{country}}', 'country', 'ad_format') AS shares,
  avgIf({METRIC}, $__timeFilter(window_start)) AS in_range,
  avgIf({METRIC}, window_start < $__fromTime AND window_start >= $__fromTime - ($__toTime - $__fromTime)) AS range_before,
  round(100 * (in_range - range_before) / nullIf(range_before, 0), 1) AS change_pct
FROM ad_metrics FINAL
WHERE (country = '${{country}}' OR ad_format = '${{ad_format}}') AND NOT ({SEGMENT})
  AND window_start >= $__fromTime - ($__toTime - $__fromTime) AND window_start <= $__toTime
GROUP BY segment, country
ORDER BY abs(change_pct) DESC
LIMIT 12""",
    "top": """SELECT segment, count() AS firing, groupUniqArray(alert_type) AS types,
  ['low', 'medium', 'high', 'critical'][max(indexOf(['low', 'medium', 'high', 'critical'], severity))] AS worst
FROM ad_alerts FINAL
WHERE status = 'firing' AND $__timeFilter(fromUnixTimestamp64Milli(window_start_ms, 'UTC'))
GROUP BY segment
ORDER BY firing DESC
LIMIT 10""",
    "annotations": f"""SELECT fromUnixTimestamp64Milli(window_start_ms, 'UTC') AS time, message AS text,
  concat(alert_type, ',', status, ',', severity) AS tags
FROM ad_alerts FINAL
WHERE {SEGMENT} AND $__timeFilter(time)""",
}
VARIABLE_QUERIES = {
    "country": "SELECT DISTINCT country FROM ad_metrics ORDER BY country",
    "ad_format": "SELECT DISTINCT ad_format FROM ad_metrics WHERE country = '${country}' ORDER BY ad_format",
}


def _target(ref: str, sql: str, query_type: str) -> dict[str, Any]:
    return {"refId": ref, "datasource": DS, "editorType": "sql", "queryType": query_type, "rawSql": sql}


def _panel(
    pid: int, kind: str, title: str, desc: str, pos: tuple[int, int, int, int], target: dict[str, Any]
) -> dict[str, Any]:
    x, y, w, h = pos
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [target],
    }


def dashboard() -> dict[str, Any]:
    metric = _panel(
        1,
        "timeseries",
        "${metric} of ${country} ${ad_format}, its expected band and its alerts",
        "Per 1-minute window, with the detector's own expected value and band for it (ad_bands: the rules' "
        "evidence, widest band of the rules on this metric). Annotations: alerts fired and resolved.",
        (0, 0, 24, 10),
        _target("A", QUERIES["metric"], "timeSeries"),
    )
    metric["fieldConfig"] = {
        "defaults": {"custom": {"lineWidth": 1}},
        "overrides": [
            {
                "matcher": {"id": "byRegexp", "options": "band.*"},
                "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [4, 4]}}],
            }
        ],
    }
    return {
        "uid": "adwatch-segment",
        "title": "adwatch segment",
        "tags": ["adwatch", "segments"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": DS["type"], "label": "ClickHouse"},
                *(
                    {
                        "name": name,
                        "type": "query",
                        "label": name.replace("_", " "),
                        "datasource": DS,
                        "query": sql,
                        "definition": sql,
                        "refresh": 2,
                    }
                    for name, sql in VARIABLE_QUERIES.items()
                ),
                {
                    "name": "metric",
                    "type": "custom",
                    "label": "metric",
                    "query": "ctr,ecpm,impressions",
                    "current": {"text": "ctr", "value": "ctr"},
                },
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "alerts",
                    "enable": True,
                    "iconColor": "red",
                    "datasource": DS,
                    "target": _target("Anno", QUERIES["annotations"], "table"),
                }
            ]
        },
        "panels": [
            metric,
            _panel(
                2,
                "table",
                "Alerts of ${country} ${ad_format}",
                "Each alert with its evidence: the detector's expected value and band, p-value, rule.",
                (0, 10, 24, 7),
                _target("A", QUERIES["alerts"], "table"),
            ),
            _panel(
                3,
                "table",
                "Drill-down: ${metric} in the segments sharing its country or format",
                "Mean over the time range against the range of equal length before it: one segment's problem, "
                "or its whole country's / format's.",
                (0, 17, 12, 9),
                _target("A", QUERIES["drilldown"], "table"),
            ),
            _panel(
                4,
                "table",
                "Top alerting segments",
                "Firing alerts per segment in the time range.",
                (12, 17, 12, 9),
                _target("A", QUERIES["top"], "table"),
            ),
        ],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
