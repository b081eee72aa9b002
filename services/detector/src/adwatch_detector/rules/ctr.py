"""``ctr``: clicks | impressions against a decayed beta baseline (alerts ``ctr_drop``, ``ctr_spike``).

Both tails share one baseline, so they are one rule: the baseline holds still while either fires.
Beta-binomial tails via a design effect 1 + (n - 1) rho + n / M, with the overdispersion rho
fitted on history and the baseline's effective size M capped (DETECTION.md). Windows without
impressions are skipped.
"""

from __future__ import annotations

import math

import msgspec
from pydantic import Field

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules._count_aware import (
    Persistence,
    Reading,
    Thresholds,
    advance,
    anchored,
    frozen,
    judge,
    policy,
)
from adwatch_detector.rules.base import BaseRule, Check, Lives, SegmentPrior
from adwatch_detector.rules.lifecycle import Policy
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import bernoulli_llr, binom_tail, halflife_decay, z_from_p


class CtrSettings(Persistence):
    halflife: float = Field(default=60.0, gt=0, allow_inf_nan=False, description="baseline half-life, windows")
    prior: float = Field(default=0.01, gt=0, le=1, description="CTR before any history")
    prior_n: float = Field(default=20.0, gt=0, allow_inf_nan=False, description="impressions the prior weighs")
    rho_prior: float = Field(default=0.0005, ge=0, allow_inf_nan=False)
    rho_halflife: float = Field(default=480.0, gt=0, allow_inf_nan=False)
    parent_prior_n: float = Field(
        default=200.0, ge=0, allow_inf_nan=False, description="impressions a parent segment's CTR weighs as prior"
    )
    max_effective_n: float = Field(default=200_000.0, gt=0, allow_inf_nan=False)
    min_expected_clicks: float = Field(
        default=5.0, ge=0, allow_inf_nan=False, description="one-window alarm needs this"
    )
    min_impressions: int = Field(default=20, ge=0)
    drop_ratio: float = Field(default=0.5, gt=0, allow_inf_nan=False, description="CUSUM design alternative (drop)")
    spike_ratio: float = Field(default=2.5, gt=0, allow_inf_nan=False, description="CUSUM design alternative (spike)")
    drop_min_ratio: float = Field(default=0.8, gt=0, allow_inf_nan=False, description="never page on a smaller drop")
    spike_min_ratio: float = Field(default=1.3, gt=0, allow_inf_nan=False, description="never page on a smaller spike")
    drop_extreme_ratio: float = Field(
        default=0.3, ge=0, lt=1, allow_inf_nan=False, description="with persistence: fires at once below this"
    )
    spike_extreme_ratio: float = Field(
        default=3.0, gt=1, allow_inf_nan=False, description="with persistence: fires at once above this"
    )


class CtrState(msgspec.Struct, array_like=True):
    clicks: float = 0.0  # decayed attributed clicks
    imps: float = 0.0  # decayed impressions
    rho_num: float = 0.0  # overdispersion rho = rho_num / rho_den
    rho_den: float = 0.0
    frozen: int = 0
    windows: int = 0  # windows learnt from


class Ctr(BaseRule[CtrState]):
    id = "ctr"
    alert_types = ("ctr_drop", "ctr_spike")
    settings_model = CtrSettings
    state_type = CtrState

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.own = settings.section(self.id, CtrSettings)
        self.t = Thresholds.of(settings, self.own.confirm_windows)
        self.decay = halflife_decay(self.own.halflife)
        self.rho_decay = halflife_decay(self.own.rho_halflife)

    def seed(self, state: CtrState, prior: SegmentPrior) -> None:
        if 0.0 < prior.ctr < 1.0 and state.imps == 0.0:
            state.clicks, state.imps = prior.ctr * self.own.parent_prior_n, self.own.parent_prior_n

    def policy(self) -> Policy:
        return policy(self.settings, self.own)

    def band(self, p: float, n: float, design: float) -> tuple[float, float]:
        """The CTR band at z_resolve around ``p`` for ``n`` impressions."""
        sd = math.sqrt(p * (1.0 - p) * design / n)
        return max(0.0, p - self.t.z_resolve * sd), min(1.0, p + self.t.z_resolve * sd)

    def windows_seen(self, state: CtrState) -> int:
        return state.windows

    def evaluate(self, state: CtrState, lives: Lives, window: SegmentWindow) -> list[Check]:
        if window.impressions <= 0:
            return []
        s, t = self.own, self.t
        n, x = float(window.impressions), float(max(0, min(window.clicks - window.orphan_clicks, window.impressions)))
        drop, spike = lives["ctr_drop"], lives["ctr_spike"]
        a0 = s.prior * s.prior_n
        p0 = (state.clicks + a0) / (state.imps + s.prior_n)
        p0 = min(max(p0, 1e-6), 0.999)
        if state.rho_den <= 0:
            w0 = 10.0 * n * max(n - 1.0, 1.0) * p0 * (1.0 - p0)
            state.rho_num, state.rho_den = s.rho_prior * w0, w0
        rho = min(max(state.rho_num / state.rho_den, 1e-7), 0.2)
        m_eff = min(state.imps + s.prior_n, (1.0 - rho) / rho, s.max_effective_n)
        design = 1.0 + (n - 1.0) * rho + n / m_eff
        warm = state.windows >= t.warmup_windows
        ctr = x / n
        pd, ps = anchored(drop, p0), anchored(spike, p0)  # the episode's anchor while it fires
        p_low, p_up = binom_tail(x, n, pd, "lower", design), binom_tail(x, n, ps, "upper", design)
        z_drop, z_spike = z_from_p(p_low), z_from_p(p_up)
        advance(drop, bernoulli_llr(x, n, pd, pd * s.drop_ratio) / design, warm, t, pd)
        advance(spike, bernoulli_llr(x, n, ps, min(ps * s.spike_ratio, 0.999)) / design, warm, t, ps)
        checks = [
            judge(
                Reading("ctr_drop", "ctr", ctr, pd, *self.band(pd, n, design), window.impressions),
                drop,
                z_drop,
                p_low,
                warm and n >= s.min_impressions and n * pd >= s.min_expected_clicks,
                warm and ctr <= s.drop_min_ratio * pd,
                t,
                ctr <= s.drop_extreme_ratio * pd,
                pd,
                n * pd / ((1.0 - pd) * design),
            ),
            judge(
                Reading("ctr_spike", "ctr", ctr, ps, *self.band(ps, n, design), window.impressions),
                spike,
                z_spike,
                p_up,
                warm and n >= s.min_impressions and n * ps >= s.min_expected_clicks,
                warm and ctr >= s.spike_min_ratio * ps,
                t,
                ctr >= s.spike_extreme_ratio * ps,
                ps,
                n * ps / ((1.0 - ps) * design),
            ),
        ]
        anomalous = (z_drop > t.z_freeze and ctr <= s.drop_min_ratio * p0) or (
            z_spike > t.z_freeze and ctr >= s.spike_min_ratio * p0
        )
        if frozen((drop, spike), anomalous, state.frozen, warm, t):
            state.frozen += 1
        else:
            state.clicks = self.decay * state.clicks + x
            state.imps = self.decay * state.imps + n
            state.frozen = 0
            state.windows += 1
            if not anomalous and n > 1:
                resid = (x - n * p0) ** 2 - n * p0 * (1.0 - p0) * (1.0 + n / m_eff)
                state.rho_num = self.rho_decay * state.rho_num + resid
                state.rho_den = self.rho_decay * state.rho_den + n * (n - 1.0) * p0 * (1.0 - p0)
        return checks
