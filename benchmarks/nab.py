"""NAB benchmark: feed each NAB series through the detector's production rules and score it.

    python benchmarks/nab.py [--data DIR] [--labels FILE] [--profiles FILE] [--rules FILE] [--set KEY=VALUE ...]
                             [--out DIR]

Each data file is one value-stream segment: its rows become SegmentWindows with ``value=`` (at
the file's own timestamps) and run through ``detect_windows`` with the ``default`` rule set and
ONE rules file for every series (the shipped defaults unless --rules/--set say otherwise; --set
is for sensitivity runs, e.g. ``--set rules.value.alpha=0.1``). The anomaly score of a row is the
``value`` rule's evidence (adwatch_dev.nab.rule_scores). Prints the three normalised scores
(standard, reward_low_FP_rate, reward_low_FN_rate) after NAB's threshold sweep, implemented as
../shared/nab/SCORING.md says (adwatch_dev.nab); --out writes one CSV per file
(timestamp,value,anomaly_score).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from adwatch_detector.rules import RuleEngine, RuleSettings, load_rules, make_rules
from adwatch_dev.nab import PROFILES, FileRows, Profile, file_rows, file_score, rule_scores, sweep, value_windows

SHARED = Path(__file__).resolve().parents[2] / "shared" / "nab"


def load_profiles(path: Path | None) -> tuple[Profile, ...]:
    if path is None or not path.exists():
        return PROFILES
    data = json.loads(path.read_text())
    return tuple(
        Profile(
            name,
            float(c["CostMatrix"]["tpWeight"]),
            float(c["CostMatrix"]["fpWeight"]),
            float(c["CostMatrix"]["fnWeight"]),
        )
        for name, c in data.items()
    )


def with_overrides(rules: RuleSettings, pairs: list[str]) -> RuleSettings:
    """``rules`` with dotted ``key=value`` overrides (values read as YAML), validated like a rules file."""
    if not pairs:
        return rules
    data: dict[str, Any] = rules.model_dump()
    for pair in pairs:
        key, _, raw = pair.partition("=")
        *path, name = key.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[name] = yaml.safe_load(raw)
    return make_rules(**data)


def series_scores(name: str, frame: pd.DataFrame, engine: RuleEngine) -> Any:
    """One file's anomaly scores: its rows as one segment's windows through the rule engine."""
    stamps = pd.to_datetime(frame["timestamp"]).astype("int64") // 1_000_000
    windows = value_windows(name, stamps.tolist(), frame["value"].astype(float).tolist(), engine.settings.window_ms)
    return rule_scores(windows, engine, chunk=1440)


def window_rows(name: str, frame: pd.DataFrame, spans: list[list[str]]) -> list[tuple[int, int]]:
    """Label windows as inclusive row ranges (both ends must be row timestamps, SCORING.md)."""
    index = {ts: i for i, ts in enumerate(pd.to_datetime(frame["timestamp"]))}
    out = []
    for start, end in spans:
        lo, hi = pd.Timestamp(start), pd.Timestamp(end)
        if lo not in index or hi not in index:
            raise SystemExit(f"{name}: window {start}..{end} does not match row timestamps")
        out.append((index[lo], index[hi]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED / "data")
    parser.add_argument("--labels", type=Path, default=SHARED / "labels" / "combined_windows.json")
    parser.add_argument("--profiles", type=Path, default=SHARED / "config" / "profiles.json")
    parser.add_argument("--rules", default=None, help="a rules file (default: the built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="write per-file score CSVs here")
    args = parser.parse_args(argv)

    labels: dict[str, list[list[str]]] = json.loads(args.labels.read_text())
    profiles = load_profiles(args.profiles)
    engine = RuleEngine.build(with_overrides(load_rules(args.rules), args.overrides))
    started = time.perf_counter()
    rows: list[FileRows] = []
    per_file_windows: list[list[int]] = []
    offset = n_rows = 0
    for name in sorted(labels):
        path = args.data / name
        if not path.exists():
            print(f"missing data file {name}", file=sys.stderr)
            continue
        frame = pd.read_csv(path)
        scores = series_scores(name, frame, engine)
        windows = window_rows(name, frame, labels[name])
        rows.append(file_rows(scores, windows, offset))
        per_file_windows.append(list(range(offset, offset + len(windows))))
        offset += len(windows)
        n_rows += len(scores)
        if args.out:
            target = args.out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"timestamp": frame["timestamp"], "value": frame["value"], "anomaly_score": scores}).to_csv(
                target, index=False
            )
    elapsed = time.perf_counter() - started
    rules = ", ".join(rule.id for rule in engine.rules)
    print(f"files {len(rows)}  rows {n_rows}  windows {offset}  rules [{rules}]  detector+IO {elapsed:.1f}s")
    print(f"{'profile':<22}{'threshold':>10}{'raw':>10}{'score':>8}")
    for profile in profiles:
        result = sweep(rows, offset, profile)
        check = sum(file_score(r, w, result.threshold, profile) for r, w in zip(rows, per_file_windows, strict=True))
        assert abs(check - result.raw) < 1e-6, (check, result.raw)
        print(f"{profile.name:<22}{result.threshold:>10.4f}{result.raw:>10.2f}{result.normalized:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
