"""``ecpm_drop``: log(eCPM / baseline) with variance scale x (sigma1^2 / n + tau^2).

The shape of the variance (per-impression price noise sigma1^2, window-to-window tau^2) comes from
the settings, its scale is fitted on history. Windows without impressions are skipped.
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
from adwatch_detector.stats import gauss_llr, halflife_decay, norm_sf


class EcpmDropSettings(Persistence):
    alpha: float = Field(default=0.05, gt=0, le=1, description="EWMA weight of the log-scale baseline")
    sigma1_sq: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="per-impression log-price variance")
    tau_sq: float = Field(default=0.005, ge=0, allow_inf_nan=False, description="window-to-window variance")
    var_halflife: float = Field(default=240.0, gt=0, allow_inf_nan=False)
    min_impressions: int = Field(default=20, ge=0, description="one-window alarm needs this")
    drop_ratio: float = Field(default=0.6, gt=0, allow_inf_nan=False, description="CUSUM design alternative")
    drop_min_ratio: float = Field(default=0.8, gt=0, allow_inf_nan=False, description="never page on a smaller drop")
    parent_prior_n: int = Field(
        default=200, ge=0, description="impressions a parent segment's eCPM weighs in a new segment's first price"
    )
    drop_extreme_ratio: float = Field(
        default=0.3, ge=0, lt=1, allow_inf_nan=False, description="with persistence: fires at once below this"
    )


class EcpmState(msgspec.Struct, array_like=True):
    mu: float = 0.0  # log-scale mean
    scale: float = 1.0  # fitted variance scale
    windows: int = 0  # windows learnt from
    frozen: int = 0
    prior_n: int = 0  # impressions behind a parent's price seeded into mu (until the first window)


class EcpmDrop(BaseRule[EcpmState]):
    id = "ecpm_drop"
    alert_types = ("ecpm_drop",)
    settings_model = EcpmDropSettings
    state_type = EcpmState

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.own = settings.section(self.id, EcpmDropSettings)
        self.t = Thresholds.of(settings, self.own.confirm_windows)
        self.var_decay = halflife_decay(self.own.var_halflife)
        self.log_drop = math.log(self.own.drop_ratio)

    def seed(self, state: EcpmState, prior: SegmentPrior) -> None:
        if prior.ecpm > 0 and state.windows == 0:
            state.mu, state.prior_n = math.log(prior.ecpm), self.own.parent_prior_n

    def policy(self) -> Policy:
        return policy(self.settings, self.own)

    def windows_seen(self, state: EcpmState) -> int:
        return state.windows

    def evaluate(self, state: EcpmState, lives: Lives, window: SegmentWindow) -> list[Check]:
        if window.impressions <= 0:
            return []
        s, t = self.own, self.t
        n = float(window.impressions)
        ecpm = window.ecpm
        life = lives["ecpm_drop"]
        if state.windows == 0:
            if ecpm > 0:  # the first price, blended with the parent's when seeded (a small segment's is noisy)
                w = float(state.prior_n)
                state.mu = (w * state.mu + n * math.log(ecpm)) / (w + n)
                state.windows, state.prior_n = 1, 0
            return []
        mu = anchored(life, state.mu)  # the episode's anchor while it fires
        expected = math.exp(mu)
        y = math.log(max(ecpm, 0.01 * expected) / expected)
        shape = s.sigma1_sq / n + s.tau_sq
        a = s.alpha
        var = state.scale * shape * (1.0 + a / (2.0 - a)) * (1.0 + 2.0 / state.windows)
        z = -y / math.sqrt(var)
        p = norm_sf(z)
        warm = state.windows >= t.warmup_windows
        advance(life, gauss_llr(y, self.log_drop, var), warm, t, mu)
        half = t.z_resolve * math.sqrt(var)
        reading = Reading(
            "ecpm_drop",
            "ecpm",
            ecpm,
            expected,
            expected * math.exp(-half),
            expected * math.exp(half),
            window.impressions,
        )
        check = judge(
            reading,
            life,
            z,
            p,
            warm and n >= s.min_impressions,
            warm and ecpm <= s.drop_min_ratio * expected,
            t,
            ecpm <= s.drop_extreme_ratio * expected,
            mu,
            1.0 / var,  # the pooled ratio's information (var of the log price ratio)
        )
        # a whale bid's spike teaches the baseline no more than a drop does
        anomalous = abs(z) > t.z_freeze and abs(y) >= -math.log(s.drop_min_ratio)
        if frozen((life,), anomalous, state.frozen, warm, t):
            state.frozen += 1
        else:
            if mu != state.mu:  # firing: learn against the own baseline, not the anchor
                own = math.exp(state.mu)
                y = math.log(max(ecpm, 0.01 * own) / own)
            state.mu += a * y
            state.windows += 1
            state.frozen = 0
            if not anomalous:
                r = min(y * y / shape, 25.0 * state.scale)
                state.scale = self.var_decay * state.scale + (1.0 - self.var_decay) * r
        return [check]
