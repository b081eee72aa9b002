"""The default, count-aware rule set.

Per window and metric: a baseline *before* the update, a tail p-value at the window's volume with
an over-dispersed variance, a one-window alarm at the budget's z and a log-likelihood-ratio CUSUM
for evidence that builds up over windows (sparse segments). Baselines do not learn from windows
that look anomalous or from metrics that are firing (up to ``max_freeze_windows``).
"""

from __future__ import annotations

import math

from adwatch.contracts import SegmentWindow, deviation_pct
from adwatch_detector.rules_check import Check, orphan_check
from adwatch_detector.rules_model import ALERT_ORDER, Lifecycle, RuleSettings, SegmentState
from adwatch_detector.stats import (
    bernoulli_llr,
    binom_tail,
    cusum_step,
    gauss_llr,
    halflife_decay,
    norm_sf,
    poisson_llr,
    poisson_tail,
    z_from_p,
)

_IDX = {name: i for i, name in enumerate(ALERT_ORDER)}


def _severity(z: float, cusum: float, dev_pct: float, rules: RuleSettings) -> str:
    strong = z >= rules.z_threshold + 2.0 or cusum >= 2.0 * rules.cusum_h
    size = abs(dev_pct)
    if size >= 50.0 and strong:
        return "high"
    if size >= 25.0:
        return "medium"
    return "low"


def _advance(life: Lifecycle, llr: float, warm: bool) -> None:
    """CUSUM for the shift and a reverse CUSUM (evidence of recovery) used while firing."""
    life.cusum = cusum_step(life.cusum, llr) if warm and not life.firing else 0.0
    life.recovery = cusum_step(life.recovery, -llr) if life.firing else 0.0


def _decide(life: Lifecycle, z: float, p: float, gate: bool, practical: bool, rules: RuleSettings,
            *fields: float | int | str) -> Check:  # fmt: skip
    """Turn the window's z and the CUSUM into a Check (breach / in band / recovered)."""
    alert_type, metric, current, expected, low, high, volume = fields
    seq = life.cusum >= rules.cusum_h
    breach = practical and ((gate and z >= rules.z_threshold) or seq)
    p_report = min(p, math.exp(-life.cusum)) if seq else p  # Ville: P(sup LR >= 1/a) <= a
    dev = deviation_pct(float(current), float(expected))
    return Check(
        alert_type=str(alert_type),
        metric=str(metric),
        current=float(current),
        expected=float(expected),
        band_low=float(low),
        band_high=float(high),
        volume=int(volume),
        p_value=p_report,
        z_score=z_from_p(p_report),
        breach=breach,
        in_band=z < rules.z_resolve,
        recovered=life.recovery >= rules.resolve_evidence,
        severity=_severity(z, life.cusum, dev, rules),
    )


def _frozen(lives: tuple[Lifecycle, ...], anomalous: bool, run: int, warm: bool, rules: RuleSettings) -> bool:
    """Hold the baseline still while a window looks anomalous or an alert fires, but never while
    warming up: a young baseline is not yet to be trusted, so it must keep learning."""
    return warm and (anomalous or any(life.firing for life in lives)) and run < rules.max_freeze_windows


def _traffic(state: SegmentState, window: SegmentWindow, rules: RuleSettings) -> Check | None:
    """Impressions against a damped-Holt forecast with negative-binomial variance lam (1 + phi lam)."""
    x = float(window.impressions)
    life = state.life[_IDX["traffic_spike"]]
    a, damp = rules.count_alpha, rules.count_damping
    if state.windows_seen <= 1:
        # The first window of a new stream is usually partial (it started mid-window): the
        # second, first complete one, sets the level again.
        state.cnt_level, state.cnt_trend = x, 0.0
        w0 = 5.0 * max(x, 1.0) ** 2
        state.phi_num, state.phi_den = rules.count_phi_prior * w0, w0
        return None
    raw = state.cnt_level + damp * state.cnt_trend
    lam = max(raw, 0.05)
    phi = max(0.0, state.phi_num / state.phi_den) if state.phi_den > 0 else rules.count_phi_prior
    warm = state.windows_seen >= rules.warmup_windows
    design = (1.0 + phi * lam) * (1.0 + a / (2.0 - a)) * (1.0 + 2.0 / state.windows_seen)
    p_up = poisson_tail(x, lam, "upper", design)
    p_low = poisson_tail(x, lam, "lower", design)
    z_up, z_low = z_from_p(p_up), z_from_p(p_low)
    llr = poisson_llr(x, lam, rules.traffic_spike_ratio) / design
    _advance(life, llr, warm)
    sd = math.sqrt(lam * design)  # bands at z_resolve: inside them counts towards resolving
    check = _decide(life, z_up, p_up, warm and lam >= rules.min_expected_count,
                    warm and x >= rules.traffic_min_ratio * lam, rules,
                    "traffic_spike", "impressions", x, lam, max(0.0, lam - rules.z_resolve * sd),
                    lam + rules.z_resolve * sd, window.impressions)  # fmt: skip
    anomalous = max(z_up, z_low) > rules.z_freeze
    if _frozen((life,), anomalous, state.cnt_frozen, warm, rules):
        state.cnt_level, state.cnt_trend = max(0.0, raw), damp * state.cnt_trend
        state.cnt_frozen += 1
    else:
        e = x - raw
        state.cnt_level = max(0.0, raw + a * e)
        state.cnt_trend = damp * state.cnt_trend + a * rules.count_beta * e
        state.cnt_frozen = 0
        if not anomalous:
            cap = 5.0 * math.sqrt(lam * (1.0 + phi * lam))
            e = max(-cap, min(cap, e))
            dec = halflife_decay(rules.count_var_halflife)
            state.phi_num = dec * state.phi_num + (e * e - lam)
            state.phi_den = dec * state.phi_den + lam * lam
    return check


def _ctr(state: SegmentState, window: SegmentWindow, rules: RuleSettings) -> list[Check]:
    """Clicks | impressions against a decayed beta baseline: beta-binomial tails via the design effect."""
    n, x = float(window.impressions), float(max(0, min(window.clicks - window.orphan_clicks, window.impressions)))
    drop, spike = state.life[_IDX["ctr_drop"]], state.life[_IDX["ctr_spike"]]
    a0 = rules.ctr_prior * rules.ctr_prior_n
    p0 = (state.ctr_clicks + a0) / (state.ctr_imps + rules.ctr_prior_n)
    p0 = min(max(p0, 1e-6), 0.999)
    if state.rho_den <= 0:
        w0 = 10.0 * n * max(n - 1.0, 1.0) * p0 * (1.0 - p0)
        state.rho_num, state.rho_den = rules.rho_prior * w0, w0
    rho = min(max(state.rho_num / state.rho_den, 1e-7), 0.2)
    m_eff = min(state.ctr_imps + rules.ctr_prior_n, (1.0 - rho) / rho, rules.ctr_max_effective_n)
    design = 1.0 + (n - 1.0) * rho + n / m_eff
    warm = state.ctr_windows >= rules.warmup_windows
    p_low, p_up = binom_tail(x, n, p0, "lower", design), binom_tail(x, n, p0, "upper", design)
    z_drop, z_spike = z_from_p(p_low), z_from_p(p_up)
    _advance(drop, bernoulli_llr(x, n, p0, p0 * rules.ctr_drop_ratio) / design, warm)
    _advance(spike, bernoulli_llr(x, n, p0, min(p0 * rules.ctr_spike_ratio, 0.999)) / design, warm)
    gate = warm and n >= rules.min_impressions and n * p0 >= rules.min_expected_clicks
    ctr = x / n
    sd = math.sqrt(p0 * (1.0 - p0) * design / n)
    low, high = max(0.0, p0 - rules.z_resolve * sd), min(1.0, p0 + rules.z_resolve * sd)
    checks = [
        _decide(drop, z_drop, p_low, gate, warm and ctr <= rules.ctr_drop_min_ratio * p0, rules,
                "ctr_drop", "ctr", ctr, p0, low, high, window.impressions),
        _decide(spike, z_spike, p_up, gate, warm and ctr >= rules.ctr_spike_min_ratio * p0, rules,
                "ctr_spike", "ctr", ctr, p0, low, high, window.impressions),
    ]  # fmt: skip
    anomalous = max(z_drop, z_spike) > rules.z_freeze
    if _frozen((drop, spike), anomalous, state.ctr_frozen, warm, rules):
        state.ctr_frozen += 1
    else:
        dec = halflife_decay(rules.ctr_halflife)
        state.ctr_clicks = dec * state.ctr_clicks + x
        state.ctr_imps = dec * state.ctr_imps + n
        state.ctr_frozen = 0
        state.ctr_windows += 1
        if not anomalous and n > 1:
            dec_r = halflife_decay(rules.rho_halflife)
            resid = (x - n * p0) ** 2 - n * p0 * (1.0 - p0) * (1.0 + n / m_eff)
            state.rho_num = dec_r * state.rho_num + resid
            state.rho_den = dec_r * state.rho_den + n * (n - 1.0) * p0 * (1.0 - p0)
    return checks


def _ecpm(state: SegmentState, window: SegmentWindow, rules: RuleSettings) -> Check | None:
    """log(eCPM / baseline) with variance scale * (sigma1^2 / n + tau^2)."""
    n = float(window.impressions)
    ecpm = window.ecpm
    life = state.life[_IDX["ecpm_drop"]]
    if state.ecpm_windows == 0:
        if ecpm <= 0:
            return None
        state.ecpm_mu, state.ecpm_windows = math.log(ecpm), 1
        return None
    expected = math.exp(state.ecpm_mu)
    y = math.log(max(ecpm, 0.01 * expected) / expected)
    shape = rules.ecpm_sigma1_sq / n + rules.ecpm_tau_sq
    a = rules.ecpm_alpha
    var = state.ecpm_scale * shape * (1.0 + a / (2.0 - a)) * (1.0 + 2.0 / state.ecpm_windows)
    z = -y / math.sqrt(var)
    p = norm_sf(z)
    warm = state.ecpm_windows >= rules.warmup_windows
    _advance(life, gauss_llr(y, math.log(rules.ecpm_drop_ratio), var), warm)
    half = rules.z_resolve * math.sqrt(var)
    check = _decide(life, z, p, warm and n >= rules.min_impressions_ecpm,
                    warm and ecpm <= rules.ecpm_drop_min_ratio * expected, rules,
                    "ecpm_drop", "ecpm", ecpm, expected, expected * math.exp(-half), expected * math.exp(half),
                    window.impressions)  # fmt: skip
    anomalous = abs(z) > rules.z_freeze
    if _frozen((life,), anomalous, state.ecpm_frozen, warm, rules):
        state.ecpm_frozen += 1
    else:
        state.ecpm_mu += a * y
        state.ecpm_windows += 1
        state.ecpm_frozen = 0
        if not anomalous:
            r = min(y * y / shape, 25.0 * state.ecpm_scale)
            dec = halflife_decay(rules.ecpm_var_halflife)
            state.ecpm_scale = dec * state.ecpm_scale + (1.0 - dec) * r
    return check


def default_checks(state: SegmentState, window: SegmentWindow, rules: RuleSettings) -> list[Check]:
    """Evaluate every count-aware rule on one window (a zero-traffic window only feeds the count model)."""
    checks = [orphan_check(window, rules)]
    traffic = _traffic(state, window, rules)
    if traffic is not None:
        checks.append(traffic)
    if window.impressions > 0:
        checks.extend(_ctr(state, window, rules))
        ecpm = _ecpm(state, window, rules)
        if ecpm is not None:
            checks.append(ecpm)
    state.windows_seen += 1
    return checks
