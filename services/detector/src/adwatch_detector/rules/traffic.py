"""``traffic``: impressions against a seasonal damped-Holt forecast with negative-binomial variance.

Counts wobble more than Poisson: the variance is lam (1 + phi lam) with phi fitted on history.
The forecast is level x hour-of-day factor (rules/season.py: weekday and weekend profiles learnt
online, or a parent's while the segment is young), so nightly troughs, dark nights and the morning
return are expected, not alerts. Both tails alert: ``traffic_spike`` (bots, floods) and
``traffic_drop`` (an outage, a broken tag, lost supply). Persistence: a spike or drop needs two
breaching windows of three unless it is extreme (a flood, a blackout), so one-minute bursts that
return at once do not page. Runs on every window, zero-traffic ones included (a silent minute is
information for a count; the job emits empty windows for a tracked segment that goes dark).
"""

from __future__ import annotations

import math

import msgspec
from pydantic import Field

from adwatch.contracts import AlertType, SegmentWindow
from adwatch_detector.rules import season
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
from adwatch_detector.rules.lifecycle import Lifecycle, Policy
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import halflife_decay, poisson_llr, poisson_tail, z_from_p


class TrafficSettings(Persistence):
    alpha: float = Field(default=0.15, gt=0, le=1, description="level smoothing")
    beta: float = Field(default=0.05, ge=0, le=1, description="trend smoothing (times alpha)")
    damping: float = Field(default=0.95, gt=0, le=1, description="trend damping per window")
    phi_prior: float = Field(default=0.01, ge=0, allow_inf_nan=False, description="NB dispersion before any history")
    var_halflife: float = Field(default=240.0, gt=0, allow_inf_nan=False, description="windows")
    min_expected_count: float = Field(default=5.0, ge=0, allow_inf_nan=False, description="one-window alarm needs this")
    spike_ratio: float = Field(default=2.0, gt=0, allow_inf_nan=False, description="CUSUM design alternative")
    min_ratio: float = Field(default=1.5, gt=0, allow_inf_nan=False, description="never page on a smaller spike")
    drop_ratio: float = Field(default=0.3, gt=0, lt=1, allow_inf_nan=False, description="drop CUSUM alternative")
    drop_max_ratio: float = Field(
        default=0.5, gt=0, lt=1, allow_inf_nan=False, description="never page on a drop to more than this share"
    )
    confirm_windows: int = Field(default=2, ge=1, le=16, description="breaching windows that confirm an alert...")
    confirm_of: int = Field(default=3, ge=1, le=16, description="...among the last this many")
    spike_extreme_ratio: float = Field(
        default=5.0, gt=1, allow_inf_nan=False, description="a spike this large fires without confirmation"
    )
    drop_extreme_ratio: float = Field(
        default=0.2, ge=0, lt=1, allow_inf_nan=False, description="a drop to this share fires without confirmation"
    )
    extreme_min_expected: float = Field(
        default=100.0,
        ge=0,
        allow_inf_nan=False,
        description="...on a segment expecting this many a window (a small app's one-minute SDK flush is no flood)",
    )
    equivalence_margin: float | None = Field(
        default=0.35,
        ge=0,
        allow_inf_nan=False,
        description="recovery margin: counts move with the hour more than rates (inside min_ratio and drop_max_ratio)",
    )
    seasonal: bool = Field(default=True, description="expect hour-of-day (weekday, weekend) profiles")
    season_halflife_days: float = Field(default=3.0, gt=0, allow_inf_nan=False, description="profile memory")
    season_ready_hours: float = Field(
        default=24.0, ge=0, allow_inf_nan=False, description="learn this long before expecting the profile"
    )
    daily_halflife_hours: float = Field(
        default=12.0, gt=0, allow_inf_nan=False, description="the mean the profile is learnt against"
    )


class TrafficState(msgspec.Struct, array_like=True):
    windows: int = 0  # windows seen, zero-traffic ones included
    level: float = 0.0
    trend: float = 0.0
    phi_num: float = 0.0  # NB dispersion phi = phi_num / phi_den
    phi_den: float = 0.0
    frozen: int = 0  # windows the baseline has been held still
    daily: float = 0.0  # slow deseasonalized mean (about a day): what the profile is learnt against
    season: list[int] = msgspec.field(default_factory=list)  # weekday hour-of-day profile (season.py)
    weekend: list[int] = msgspec.field(default_factory=list)  # weekend profile (empty: none yet)
    season_windows: int = 0  # windows the profile has learnt from
    season_since_ms: int = -1  # when it started learning (a parent's profile: ready at once)
    dark: bytes = b""  # quarter-hours silent the last time they were seen (season.py)
    quarter_ms: int = -1  # start of the quarter-hour being counted...
    quarter_count: int = 0  # ...and its impressions so far


class Traffic(BaseRule[TrafficState]):
    id = "traffic"
    alert_types = ("traffic_spike", "traffic_drop")
    settings_model = TrafficSettings
    state_type = TrafficState

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.own = s = settings.section(self.id, TrafficSettings)
        self.t = Thresholds.of(settings, s.confirm_windows)
        self.var_decay = halflife_decay(s.var_halflife)
        self.window_ms = settings.window_ms
        per_hour = season.HOUR_MS / settings.window_ms
        self.windows_per_day = round(24 * per_hour)
        self.per_hour = per_hour
        self.season_rate = 1.0 - halflife_decay(per_hour * 24.0 * s.season_halflife_days)
        self.daily_rate = 1.0 - halflife_decay(per_hour * s.daily_halflife_hours)
        self.ready_ms = round(s.season_ready_hours * season.HOUR_MS)

    def policy(self) -> Policy:
        return policy(self.settings, self.own)

    def seed(self, state: TrafficState, prior: SegmentPrior) -> None:
        if self.own.seasonal and prior.season and not state.season:
            state.season, state.season_since_ms = list(prior.season), 0

    def on_silence(self, state: TrafficState, skipped_windows: int, first_skipped_ms: int) -> None:
        """Teach the profile the silent hours. A silence the profile expected (a dark night) leaves
        the level as it was; one it did not (a first dark night, a paused campaign) leaves nothing
        to forecast from: the next window restarts the level, as a new stream's does, and the
        rule warms up again rather than page on the return."""
        span = min(skipped_windows, self.windows_per_day)
        expected = 0.0
        for k in range(span):
            ms = first_skipped_ms + k * self.window_ms
            f = self.factor(state, ms)
            expected += 0.0 if self.expects_dark(state, ms, f) else f * max(state.level, 0.0)
            self.learn_season(state, 0.0, ms)
            self.count_quarter(state, 0, ms)
        if expected >= self.own.min_expected_count * self.t.warmup_windows:
            state.windows = min(state.windows, 1)
        state.trend = 0.0

    def on_recovered(self, state: TrafficState, alert_type: AlertType, anchor: float) -> None:
        """Back within the margin of the anchor: so is the level (it may have learnt an outage's zeros)."""
        state.level, state.trend, state.frozen = anchor, 0.0, 0

    def windows_seen(self, state: TrafficState) -> int:
        return state.windows

    def factor(self, state: TrafficState, ms: int) -> float:
        """The expected share of the segment's mean at ``ms``: 1.0 until a profile has learnt for
        half of ``season_ready_hours``, then blended in over the other half (a switch at once would
        move the expectation in one window, which the level cannot follow)."""
        if not self.own.seasonal or state.season_since_ms < 0:
            return 1.0
        half = self.ready_ms / 2.0
        blend = min(1.0, max(0.0, (ms - state.season_since_ms - half) / half)) if half > 0 else 1.0
        if blend <= 0.0:
            return 1.0
        weekend = season.is_weekend(ms) and bool(state.weekend)
        f = season.factor(state.weekend if weekend else state.season, ms)
        return 1.0 + blend * (f - 1.0)

    def count_quarter(self, state: TrafficState, x: int, ms: int) -> None:
        """Count the window into its quarter-hour; on a new quarter, mark the last one dark or not."""
        start = ms - ms % season.QUARTER_MS
        if start != state.quarter_ms:
            if state.quarter_ms >= 0:
                state.dark = season.mark(state.dark, season.quarter_of(state.quarter_ms), state.quarter_count == 0)
            state.quarter_ms, state.quarter_count = start, 0
        state.quarter_count += x

    def expects_dark(self, state: TrafficState, ms: int, f: float) -> bool:
        """A silent window is expected: its quarter-hour, or the next (a schedule switches off at any
        minute of the quarter before its first dark one), was dark last time, at an hour below the
        day's mean (a dark quarter at the day's peak is an outage that happened, not a plan)."""
        return self.own.seasonal and f <= 1.0 and season.is_dark(state.dark, ms, ahead=1)

    def learn_season(self, state: TrafficState, x: float, ms: int) -> None:
        if not self.own.seasonal or state.daily <= 0.0:
            return
        if not state.season:
            state.season, state.season_since_ms = list(season.FLAT), ms
        weekend = season.is_weekend(ms)
        if weekend and not state.weekend:
            state.weekend = list(state.season)
        days = state.season_windows // max(self.windows_per_day, 1)
        rate = max(self.season_rate, 1.0 / (self.per_hour * (days + 1)))
        # a flood teaches the profile no more than 3x what it expects; a dip, a dark hour, all of it
        season.learn(state.weekend if weekend else state.season, x / state.daily, ms, rate, cap=3.0)
        state.season_windows += 1

    def evaluate(self, state: TrafficState, lives: Lives, window: SegmentWindow) -> list[Check]:
        try:
            return self._evaluate(state, lives, window)
        finally:
            state.windows += 1

    def _evaluate(self, state: TrafficState, lives: Lives, window: SegmentWindow) -> list[Check]:
        s, t = self.own, self.t
        x = float(window.impressions)
        ms = window.window_start_ms
        spike, drop = lives["traffic_spike"], lives["traffic_drop"]
        a, damp = s.alpha, s.damping
        f = self.factor(state, ms)
        dark = self.expects_dark(state, ms, f)
        self.count_quarter(state, window.impressions, ms)
        if state.windows <= 1:
            # The first window of a new stream is usually partial (it started mid-window): the
            # second, first complete one, sets the level again (so does a return from a silence
            # nobody expected: on_silence).
            state.level, state.trend = x / max(f, season.FLOOR), 0.0
            if state.daily <= 0.0:
                state.daily = state.level
            if state.phi_den <= 0.0:
                w0 = 5.0 * max(x, 1.0) ** 2
                state.phi_num, state.phi_den = s.phi_prior * w0, w0
            return []
        raw = state.level + damp * state.trend  # deseasonalized forecast
        lam = max(raw * f, 0.05)
        phi = max(0.0, state.phi_num / state.phi_den) if state.phi_den > 0 else s.phi_prior
        warm = state.windows >= t.warmup_windows
        inflate = (1.0 + a / (2.0 - a)) * (1.0 + 2.0 / state.windows)
        # while one tail fires, the other measures against its anchor too: the return from an
        # outage is its recovery, not a spike (nor the end of a flood a drop)
        checks = [
            self._check("traffic_spike", spike, x, anchored(drop, raw), f, phi, inflate, warm, window),
            # a quarter-hour that was dark last time expects no traffic (the spike side still
            # expects the profile's: traffic that starts earlier than yesterday is no flood)
            self._check("traffic_drop", drop, x, anchored(spike, raw), 0.0 if dark else f, phi, inflate, warm, window),
        ]
        up, low = checks
        anomalous = (up.z_score > t.z_freeze and x >= s.min_ratio * up.expected) or (
            low.z_score > t.z_freeze and x <= s.drop_max_ratio * low.expected
        )
        if warm:  # every window, anomalous or not: a recurring dip at the same hour is seasonality
            self.learn_season(state, x, ms)
        if frozen((spike, drop), anomalous, state.frozen, warm, t):
            state.level, state.trend = max(0.0, raw), damp * state.trend
            state.frozen += 1
            return checks
        # a trough's few counts say little about the day's level, an expected dark quarter nothing
        weight = 0.0 if dark else min(1.0, f / 0.5)
        xd = x / max(f, season.FLOOR)
        e = xd - raw
        state.level = max(0.0, raw + a * weight * e)
        state.trend = damp * state.trend + a * s.beta * weight * e
        state.frozen = 0
        state.daily += max(self.daily_rate, 1.0 / state.windows) * weight * (xd - state.daily)
        if not anomalous and not spike.firing and not drop.firing:
            cap = 5.0 * math.sqrt(lam * (1.0 + phi * lam))
            er = max(-cap, min(cap, x - lam))
            state.phi_num = self.var_decay * state.phi_num + (er * er - lam)
            state.phi_den = self.var_decay * state.phi_den + lam * lam
        if ms % season.DAY_MS < self.window_ms and state.season:
            mean = season.normalize(state.season, state.weekend)
            state.level, state.trend, state.daily = state.level * mean, state.trend * mean, state.daily * mean
        return checks

    def _check(
        self,
        alert_type: AlertType,
        life: Lifecycle,
        x: float,
        raw: float,
        f: float,
        phi: float,
        inflate: float,
        warm: bool,
        window: SegmentWindow,
    ) -> Check:
        """One tail's verdict, measured against the episode's anchor while it fires."""
        s, t = self.own, self.t
        base = anchored(life, raw)
        lam = max(base * f, 0.05)
        design = (1.0 + phi * lam) * inflate
        sd = math.sqrt(lam * design)  # bands at z_resolve: inside them counts towards resolving
        band = (max(0.0, lam - t.z_resolve * sd), lam + t.z_resolve * sd)
        gate = warm and lam >= s.min_expected_count
        big = lam >= s.extreme_min_expected  # only a big segment's one window can be a flood for sure
        if alert_type == "traffic_spike":
            p = poisson_tail(x, lam, "upper", design)
            advance(life, poisson_llr(x, lam, s.spike_ratio) / design, warm, t, base)
            practical, extreme = x >= s.min_ratio * lam, big and x >= s.spike_extreme_ratio * lam
            reading = Reading("traffic_spike", "impressions", x, lam, *band, window.impressions)
        else:
            p = poisson_tail(x, lam, "lower", design)
            advance(life, poisson_llr(x, lam, s.drop_ratio) / design, warm, t, base)
            practical, extreme = x <= s.drop_max_ratio * lam, big and x <= s.drop_extreme_ratio * lam
            reading = Reading("traffic_drop", "impressions", x, lam, *band, window.impressions)
        evidence = lam / design  # the pooled ratio's information: var(x / lam) = design / lam
        return judge(reading, life, z_from_p(p), p, gate, warm and practical, t, extreme, base, evidence)
