"""The NAB scorer on hand-made cases, and the univariate detector's causality."""

from __future__ import annotations

import numpy as np
import pytest

from adwatch_detector.detection_nab import PROFILES, file_rows, file_score, probation, sweep
from adwatch_detector.univariate import score_series

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


def test_univariate_score_is_causal_and_bounded() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(10, 1, 600)
    values[400] = 30
    full = score_series(values)
    prefix = score_series(values[:450])
    assert np.array_equal(full[:450], prefix)
    assert ((full >= 0) & (full <= 1)).all()
    assert full[400] == full.max() and full[400] > 5 * np.median(full[100:])
