"""The NAB scorer on hand-made cases, and the univariate detector's pieces and causality."""

from __future__ import annotations

import numpy as np
import pytest

from adwatch_dev.nab import PROFILES, file_rows, file_score, probation, sweep
from adwatch_dev.univariate import (
    UnivariateSettings,
    combine,
    novel_transitions,
    score_series,
    surprise_scores,
)

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


def test_novel_transitions_flag_each_new_bin_to_bin_step_once() -> None:
    cycle = [0.0, 1.0, 2.0, 3.0]
    values = np.array(cycle * 5 + [0.0, 3.0] + cycle * 2)  # 0 -> 3 is a step never seen before
    novel = novel_transitions(values, bins=4)
    assert novel[1:4].all() and novel[4]  # the first cycle and its wrap-around 3 -> 0 are new
    assert not novel[5:20].any()  # a repeated pattern is never novel
    assert novel[21] and not novel[22:].any()  # 0 -> 3 once; 3 -> 0 was already seen


def test_novel_transitions_rebin_history_when_the_range_widens() -> None:
    values = np.array([0.0, 1.0] * 10 + [10.0, 0.0, 1.0])
    novel = novel_transitions(values, bins=2)
    # on the widened grid 0 and 1 share a bin, so 0 -> 1 is the old step "bin 0 -> bin 0"
    assert novel[20] and novel[21] and not novel[22]


def test_combine_silences_rows_after_an_alarm() -> None:
    cfg = UnivariateSettings(refractory=3, surprise_weight=0.25, alarm_vote=0.5)
    vote = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    surprise = np.full(8, 0.4)
    out = combine(vote, surprise, cfg)
    # row 1 alarms; rows 2-4 are silent and row 2's alarm extends the silence to row 5
    assert out.tolist() == pytest.approx([0.1, 0.85, 0.0, 0.0, 0.0, 0.0, 0.1, 0.85])


def test_surprise_ranks_a_spike_above_plain_noise() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(100, 5, 800)
    values[600] = 160
    s = surprise_scores(values)
    assert ((s >= 0) & (s <= 1)).all()
    assert s[600] == s.max() and s[600] > 10 * np.median(s[100:])


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        UnivariateSettings(bin_counts=())
    with pytest.raises(ValueError):
        UnivariateSettings(surprise_weight=1.0)
    with pytest.raises(ValueError):
        score_series([1.0, float("nan")])
    assert score_series([]).shape == (0,)


def test_score_is_deterministic_and_a_level_shift_alarms_once() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(10, 1, 500), rng.normal(25, 1, 200)])
    a, b = score_series(values), score_series(values)
    assert np.array_equal(a, b)
    top = a[100:].max()
    assert a[500] == top  # the first row of the shift scores highest ...
    assert (a[501:521] == 0).all()  # ... and the refractory period keeps the rows after it quiet
