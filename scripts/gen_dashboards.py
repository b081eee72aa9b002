"""Dashboards as code: writes dashboards/adwatch-segment.json (``make dashboards``).

The segment dashboard reads the detector's ClickHouse tables through Grafana's ClickHouse data
source (``grafana-clickhouse-datasource``, provisioned by the chart) and works for a segment of any
configured segment set: the segment is picked by its id (``var-segment=ad_format=banner,country=US``,
``campaign_id=c1``, ``*`` for all traffic; see docs/segments.md). It shows the segment's metric with
the detector's expected value and band (``ad_bands``) and its alerts as annotations, the drill-down
(the segments below it: their dimensions contain its dimensions; and the contributors the detector
named in its alerts), and the top alerting segments. Notifications link here with the segment id
and the alert's time range (``var-segment``, ``from``, ``to``).
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
# The selected segment by its id (ad_format=banner,country=US; campaign_id=c1; * for all traffic).
# ${var:sqlstring} is Grafana's quoted and escaped form of a variable ('...', ' doubled).
SELECTED = "${segment:sqlstring}"
SEGMENT = f"segment_id = {SELECTED}"  # ad_alerts (migration 5)
# ad_metrics and ad_bands: their `segment` column holds the segment id and leads their sort key
# (ORDER BY segment, ...), so one segment's rows are read through the primary index.
KEYED_SEGMENT = f"segment = {SELECTED}"
# A row's segment set: its dimension names, sorted as in the segment id ('*': all traffic). Rows
# written before schema v2 have no dimensions: their segment was country x ad_format.
SEGMENT_SET = (
    "multiIf(length(dimensions) > 0, arrayStringConcat(arraySort(mapKeys(dimensions)), ','), "
    "segment_id = '*', '*', 'ad_format,country')"
)
ANY_SET = "(all sets)"
# The selected segment's dimensions, and whether a row's segment lies below it (its dimensions
# contain the selected segment's, plus at least one more): the drill-down.
PARENT = f"(SELECT any(dimensions) FROM ad_metrics WHERE {KEYED_SEGMENT}) AS parent"
BELOW = (
    "length(dimensions) > length(parent) AND arrayAll(k -> mapContains(dimensions, k) AND dimensions[k] = parent[k], "
    "mapKeys(parent))"
)
# The metric picked by $metric, per window (CTR in percent, as people read it).
METRIC = "multiIf('${metric}' = 'ctr', ctr * 100, '${metric}' = 'ecpm', ecpm, toFloat64(impressions))"
SCALE = "if('${metric}' = 'ctr', 100, 1)"
BEFORE = "window_start < $__fromTime AND window_start >= $__fromTime - ($__toTime - $__fromTime)"
SEVERITY_ORDER = "['low', 'medium', 'high', 'critical']"

QUERIES: dict[str, str] = {
    "metric": f"""SELECT m.window_start AS time, m.value AS "${{metric}}", b.expected AS expected,
  b.low AS "band low", b.high AS "band high"
FROM (SELECT window_start_ms, window_start, {METRIC} AS value FROM ad_metrics FINAL
      WHERE {KEYED_SEGMENT} AND $__timeFilter(window_start)) AS m
LEFT JOIN (SELECT window_start_ms, {SCALE} * avg(expected) AS expected, {SCALE} * min(band_low) AS low,
             {SCALE} * max(band_high) AS high
           FROM ad_bands FINAL WHERE {KEYED_SEGMENT} AND metric = '${{metric}}' AND $__timeFilter(window_start)
           GROUP BY window_start_ms) AS b USING window_start_ms
ORDER BY time
SETTINGS join_use_nulls = 1""",
    "alerts": f"""SELECT fromUnixTimestamp64Milli(window_start_ms, 'UTC') AS time, status, severity, alert_type, rule,
  current, expected, band_low, band_high, p_value, folded, parent_segment_id AS folded_into, message
FROM ad_alerts FINAL
WHERE {SEGMENT} AND $__timeFilter(time)
ORDER BY time DESC""",
    # The segments below the selected one, nearest first, each with its change over the time range
    # against the range of equal length before it and its share of the change at its depth, in
    # units that add up (CTR: clicks, eCPM: revenue, impressions: impressions per window).
    "drilldown": f"""WITH {PARENT}
SELECT segment_id AS segment, length(dimensions) - length(parent) AS depth,
  avgIf({METRIC}, $__timeFilter(window_start)) AS in_range,
  avgIf({METRIC}, {BEFORE}) AS range_before,
  round(100 * (in_range - range_before) / nullIf(range_before, 0), 1) AS change_pct,
  sumIf(impressions, $__timeFilter(window_start)) AS volume,
  multiIf('${{metric}}' = 'ctr', (in_range - range_before) / 100 * volume,
          '${{metric}}' = 'ecpm', (in_range - range_before) * volume / 1000, in_range - range_before) AS delta,
  round(100 * delta / nullIf(sum(delta) OVER (PARTITION BY depth), 0), 1) AS share_pct
FROM ad_metrics FINAL
WHERE {BELOW}
  AND window_start >= $__fromTime - ($__toTime - $__fromTime) AND window_start <= $__toTime
GROUP BY segment_id, dimensions
ORDER BY depth, abs(delta) DESC
LIMIT 20""",
    # What the detector itself named: the contributors of the selected segment's firing alerts
    # (the drill-down it computed, children folded into the alert marked alerting).
    "contributors": f"""SELECT fromUnixTimestamp64Milli(window_start_ms, 'UTC') AS time, alert_type,
  JSONExtractString(c, 'segment_id') AS child, round(100 * JSONExtractFloat(c, 'share'), 1) AS share_pct,
  JSONExtractFloat(c, 'expected') AS expected, JSONExtractFloat(c, 'current') AS current,
  JSONExtractUInt(c, 'volume') AS volume, toBool(JSONExtractBool(c, 'alerting')) AS alerting
FROM ad_alerts FINAL
ARRAY JOIN JSONExtractArrayRaw(contributors) AS c
WHERE {SEGMENT} AND status = 'firing' AND $__timeFilter(time)
ORDER BY time DESC, share_pct DESC
LIMIT 50""",
    # The problems paged: alerts folded into a parent's (parent_segment_id set) count in it.
    "top": f"""SELECT segment_id AS segment, {SEGMENT_SET} AS segment_set, count() AS firing,
  groupUniqArray(alert_type) AS types, sum(folded) AS folded_children,
  {SEVERITY_ORDER}[max(indexOf({SEVERITY_ORDER}, severity))] AS worst
FROM ad_alerts FINAL
WHERE status = 'firing' AND parent_segment_id = ''
  AND $__timeFilter(fromUnixTimestamp64Milli(window_start_ms, 'UTC'))
GROUP BY segment_id, segment_set
ORDER BY firing DESC
LIMIT 10""",
    "annotations": f"""SELECT fromUnixTimestamp64Milli(window_start_ms, 'UTC') AS time, message AS text,
  concat(alert_type, ',', status, ',', severity) AS tags
FROM ad_alerts FINAL
WHERE {SEGMENT} AND $__timeFilter(time)""",
}
# The segment picker: a segment set (or all), a substring of the id, then the segment itself
# (segments seen in the time range; a link's segment is kept even when not listed).
VARIABLE_QUERIES = {
    "segment_set": f"""SELECT s FROM (SELECT '{ANY_SET}' AS s, 0 AS o
  UNION ALL SELECT DISTINCT {SEGMENT_SET} AS s, 1 AS o FROM ad_metrics WHERE $__timeFilter(window_start))
ORDER BY o, s""",
    "segment": f"""SELECT DISTINCT segment_id FROM ad_metrics
WHERE $__timeFilter(window_start)
  AND (${{segment_set:sqlstring}} = '{ANY_SET}' OR {SEGMENT_SET} = ${{segment_set:sqlstring}})
  AND position(segment_id, ${{filter:sqlstring}}) > 0
ORDER BY segment_id
LIMIT 1000""",
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


def _query_variable(name: str, label: str, sql: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "query",
        "label": label,
        "datasource": DS,
        "query": sql,
        "definition": sql,
        "refresh": 2,
        **extra,
    }


def dashboard() -> dict[str, Any]:
    metric = _panel(
        1,
        "timeseries",
        "${metric} of ${segment}, its expected band and its alerts",
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
        "version": 2,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": DS["type"], "label": "ClickHouse"},
                _query_variable(
                    "segment_set",
                    "segment set",
                    VARIABLE_QUERIES["segment_set"],
                    current={"text": ANY_SET, "value": ANY_SET},
                ),
                {
                    "name": "filter",
                    "type": "textbox",
                    "label": "segment id contains",
                    "query": "",
                    "current": {"text": "", "value": ""},
                },
                _query_variable(
                    "segment",
                    "segment",
                    VARIABLE_QUERIES["segment"],
                    allowCustomValue=True,  # a link's segment, even when past the list's limit
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
                "Alerts of ${segment}",
                "Each alert with its evidence: the detector's expected value and band, p-value, rule; how many "
                "child alerts were folded into it, or the parent segment it was folded into (not paged on its own).",
                (0, 10, 24, 7),
                _target("A", QUERIES["alerts"], "table"),
            ),
            _panel(
                3,
                "table",
                "Drill-down: ${metric} in the segments below ${segment}",
                "Segments whose dimensions contain this one's (depth 1: one dimension more), mean over the time "
                "range against the range of equal length before it, and each one's share of the change at its "
                "depth (CTR in clicks, eCPM in revenue): one child's problem, or the whole segment's.",
                (0, 17, 12, 9),
                _target("A", QUERIES["drilldown"], "table"),
            ),
            _panel(
                4,
                "table",
                "Top alerting segments",
                "Firing alerts per segment in the time range, as paged: a child alert folded into its parent's "
                "counts in the parent's folded_children.",
                (12, 17, 12, 9),
                _target("A", QUERIES["top"], "table"),
            ),
            _panel(
                5,
                "table",
                "Contributors named by the alerts of ${segment}",
                "The detector's drill-down: the child segments that explain each firing alert's change, with "
                "their share of it; alerting: the child breached too and its alert was folded into this one.",
                (0, 26, 24, 8),
                _target("A", QUERIES["contributors"], "table"),
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
