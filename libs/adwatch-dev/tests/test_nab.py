"""The NAB scorer on hand-made cases, and the production rules' scores of a series (benchmarks/nab.py)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from adwatch_detector.rules import RuleEngine, RuleSettings
from adwatch_dev.nab import PROFILES, file_rows, file_score, probation, rule_scores, sweep, value_windows

N = 1000
WINDOWS = [(300, 339), (700, 719)]


def rows_for(scores: np.ndarray, windows: list[tuple[int, int]] = WINDOWS, offset: int = 0):  # type: ignore[no-untyped-def]
    return file_rows(scores, windows, offset)


@pytest.mark.parametrize("profile", PROFILES, ids=[p.name for p in PROFILES])
def test_perfect_detector_scores_100_and_null_scores_0(profile) -> None:  # type: ignore[no-untyped-def]
    perfect = np.zeros(N)
    for left, _ in WINDOWS:
        perfect[left] = 1.0
    assert sweep([rows_for(perfect)], len(WINDOWS), profile).normalized == pytest.approx(100.0)
    result = sweep([rows_for(np.zeros(N))], len(WINDOWS), profile)
    assert result.normalized == pytest.approx(0.0)


def test_late_detection_and_false_positives_cost_as_specified() -> None:
    standard = PROFILES[0]
    scores = np.zeros(N)
    scores[319] = 1.0  # middle of the first window (W=40): tanh(2.5*21/40)/tanh(2.5)
    scores[200] = 1.0  # before any window: -fpWeight
    rows = rows_for(scores)
    expected = np.tanh(2.5 * 21 / 40) / np.tanh(2.5) - 1.0 - 0.11
    assert file_score(rows, [0, 1], 1.0, standard) == pytest.approx(expected)
    assert sweep([rows], 2, standard).raw == pytest.approx(max(expected, -2.0))


def test_rows_in_probation_are_not_scored() -> None:
    assert probation(1000) == 150 and probation(10_000) == 750
    scores = np.zeros(N)
    scores[10] = 1.0  # a detection in probation costs nothing
    scores[300] = 1.0
    scores[700] = 1.0
    assert sweep([rows_for(scores)], 2, PROFILES[0]).normalized == pytest.approx(100.0)


def test_fp_just_after_a_window_is_almost_free() -> None:
    scores = np.zeros(N)
    scores[300] = scores[700] = 1.0
    scores[340] = 1.0  # right after the first window
    raw = sweep([rows_for(scores)], 2, PROFILES[0]).raw
    assert 2.0 - 0.11 * 0.1 < raw < 2.0


STEP = 300_000
BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "nab.py"


def series(n: int, spike_at: int, seed: int = 2) -> np.ndarray:
    """A noisy daily cycle (5-minute readings) with one spike."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    values = 50.0 + 10.0 * np.sin(2 * math.pi * i / 288) + rng.normal(0.0, 1.0, n)
    values[spike_at] += 40.0
    return values


def scores_of(values: np.ndarray, chunk: int = 1) -> np.ndarray:
    windows = value_windows("synthetic.csv", [i * STEP for i in range(len(values))], values.tolist(), 60_000)
    return rule_scores(windows, RuleEngine.build(RuleSettings()), chunk=chunk)


def test_rule_scores_are_causal_bounded_and_rank_the_spike_first() -> None:
    values = series(1200, spike_at=900)
    full = scores_of(values)
    assert ((full >= 0) & (full <= 1)).all()
    assert int(np.argmax(full[300:])) + 300 == 900  # the spike outranks every other row after warm-up
    assert full[901:905].max() == 0.0  # the alert fires on the spike: no second page right after
    assert np.array_equal(scores_of(values[:950])[:950], full[:950])  # a row's score uses rows before it only
    assert np.array_equal(scores_of(values, chunk=97), full)  # micro-batch size does not matter


def test_the_benchmark_scores_a_tiny_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/nab.py end to end on two synthetic files: the spike's window is found."""
    data = tmp_path / "data" / "synthetic"
    data.mkdir(parents=True)
    labels = {}
    stamps = pd_stamps(1200)
    for k, name in enumerate(("a.csv", "b.csv")):
        values = series(1200, spike_at=900, seed=k)
        (data / name).write_text(
            "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, values, strict=True))
        )
        labels[f"synthetic/{name}"] = [[stamps[880], stamps[940]]]
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    spec = importlib.util.spec_from_file_location("nab_benchmark", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "out"
    argv = ["--data", str(tmp_path / "data"), "--labels", str(tmp_path / "labels.json"), "--out", str(out)]
    assert bench.main([*argv, "--profiles", str(tmp_path / "none.json")]) == 0
    printed = capsys.readouterr().out
    assert "files 2  rows 2400  windows 2" in printed and "rules [" in printed and "value]" in printed
    standard = next(line for line in printed.splitlines() if line.startswith("standard"))
    assert float(standard.split()[-1]) > 90.0
    assert (out / "synthetic" / "a.csv").read_text().startswith("timestamp,value,anomaly_score")


def pd_stamps(n: int) -> list[str]:
    import pandas as pd

    return [str(t) for t in pd.date_range("2024-01-01", periods=n, freq="5min")]
