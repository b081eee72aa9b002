"""``value``: a gauge reading (eCPM, CPC, latency series fed without counts) against a robust seasonal baseline.

A value stream has no volume, so nothing tells how noisy a reading may be but the series itself.
The expected value is a level (EWMA) or, once the series spans ``season_min_days`` and the profile
predicts better, a per-slot profile of the day (or week) plus today's offset from it. Level and
offset are Huber-updated (a residual is clipped at ``huber_k`` scales before it teaches anything);
the profile learns every reading so a shape that comes back daily stops looking anomalous. The
scale is robust and heavy-tail aware: the largest of a MAD-like EWMA of clipped |residual|, a
running ``tail_quantile`` of |residual| and a share of the long-run scale (a quiet stretch cannot
shrink it to 0). The surprise log1p|z| is then judged against this series' own surprises (HTM's
anomaly likelihood), so a spiky series needs a bigger spike. Both tails alert as
``value_anomaly``: a window against the budget's z, or two CUSUMs (up, down) for a persistent
shift. A context-novelty vote (CAD-OSE's idea: on a few grids over the range seen so far, is the
transition bin(previous) -> bin(now) new?) adds ``novelty_decades`` x vote decades to the
surprise's evidence, and a window that may page with a vote >= ``refractory_vote`` silences the
next ``refractory_windows``. Context gate: once the vote counts, a reading in a known context
(vote 0) is no one-window alarm however far it is (its p is 1); the CUSUMs still add it up, so a
shift pages within a few readings and a lone blip the series has made before does not (on NAB
87 % of such one-window pages were false). The baseline holds still while anomalous or firing, and after a
resolve the rule does not page again for ``cooldown_windows``. Windows without a value (count
segments) are skipped.
"""

from __future__ import annotations

import math

import msgspec
from pydantic import Field
from scipy import special

from adwatch.contracts import SegmentWindow
from adwatch_detector.rules._count_aware import Reading, Thresholds, frozen, judge
from adwatch_detector.rules.base import BaseRule, Check, Lives, SettingsSection
from adwatch_detector.rules.lifecycle import Lifecycle
from adwatch_detector.rules.settings import RuleSettings
from adwatch_detector.stats import Z_CAP, cusum_step, norm_sf

DAY_MS = 86_400_000
SIGMA_PER_MAD = 1.2533  # E|X - mu| = sigma sqrt(2 / pi) for a normal X: sigma = 1.2533 x mean absolute deviation


class ValueSettings(SettingsSection):
    alpha: float = Field(default=0.05, gt=0, le=1, description="level smoothing, per reading")
    scale_alpha: float = Field(default=0.02, gt=0, le=1, description="smoothing of the absolute residuals")
    huber_k: float = Field(default=2.0, gt=0, allow_inf_nan=False, description="residuals clipped at k scales")
    season_slots: int = Field(default=24, ge=0, description="profile slots per season (0: no profile)")
    season_days: int = Field(default=1, gt=0, description="the season's length: 1 a daily profile, 7 a weekly one")
    season_gamma: float = Field(default=0.1, ge=0, le=1, description="profile smoothing, per reading of the slot")
    season_min_days: float = Field(
        default=2.0, ge=0, allow_inf_nan=False, description="the profile applies once the series spans this long"
    )
    tail_quantile: float = Field(
        default=0.99, gt=0.5, lt=1, description="the scale also covers this quantile of |residual| (heavy tails)"
    )
    tail_rate: float = Field(default=0.1, gt=0, le=1, description="relative step of the tail quantile")
    floor_share: float = Field(
        default=0.5, ge=0, allow_inf_nan=False, description="scale >= this share of the long-run scale"
    )
    floor_alpha: float = Field(default=0.002, gt=0, le=1, description="smoothing of the long-run scale")
    calibrate: bool = Field(default=True, description="judge the surprise against the series' own surprises")
    calibration_alpha: float = Field(default=0.003, gt=0, le=1, description="smoothing of the surprise's mean/var")
    shift_sigmas: float = Field(default=3.0, gt=0, allow_inf_nan=False, description="CUSUM design shift, in scales")
    cooldown_windows: int = Field(
        default=120,
        ge=0,
        description="after a resolve, no new page for this long (on top of the set's cooldown; 2 h: with the context"
        " gate NAB scores 240 and 720 lower, 59.5 and 56.8 against 63.4)",
    )
    min_change: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="never page on a change smaller than this share"
    )
    novelty_bins: tuple[int, ...] = Field(
        default=(5, 6, 7, 8, 9, 10), description="context novelty: grids of this many bins over the range seen"
    )
    novelty_warmup: int = Field(
        default=200, ge=0, description="the vote counts from this many readings on (the grids learn from the first)"
    )
    novelty_decades: float = Field(
        default=23.0, ge=0, allow_inf_nan=False, description="evidence (decades of p) of a unanimous novelty vote"
    )
    surprise_decades: float = Field(
        default=33.0, gt=0, allow_inf_nan=False, description="the surprise's evidence is capped at this many decades"
    )
    refractory_vote: float = Field(
        default=0.5, ge=0, le=1, allow_inf_nan=False, description="a vote this high starts a refractory period..."
    )
    refractory_windows: int = Field(default=20, ge=0, description="...of this many windows without a page")
    context_gate: bool = Field(
        default=True,
        description="a one-window alarm needs a new context (vote > 0); in a known one only the CUSUMs page"
        " (from novelty_warmup on, with novelty grids)",
    )


class ValueState(msgspec.Struct, array_like=True):
    windows: int = 0  # readings learnt from
    level: float = 0.0  # EWMA of the value: the expectation without a profile
    offset: float = 0.0  # EWMA of value - profile: how far today runs from the usual day
    mad: float = 0.0  # EWMA of clipped |residual| of the expectation in use
    plain_err: float = 0.0  # EWMA of |value - level|...
    season_err: float = 0.0  # ...and of |value - profile - offset|: the profile is used when it predicts better
    tail: float = 0.0  # running tail_quantile of |residual| (stochastic approximation)
    slow_mad: float = 0.0  # long-run EWMA of clipped |residual|: a quiet stretch cannot shrink the scale to 0
    first_ms: int = -1  # start of the first reading (how long the series spans)
    profile: list[float] = msgspec.field(default_factory=list)  # per time-of-day slot: EWMA of the value
    visits: list[int] = msgspec.field(default_factory=list)  # readings per slot
    surprise_mean: float = 0.0  # EWMA mean and variance of log1p(|z|): how surprising this series usually is
    surprise_var: float = 0.0
    up: float = 0.0  # CUSUM of an upward shift
    down: float = 0.0
    frozen: int = 0
    lo: float = 0.0  # range seen so far (the novelty grids span it)
    hi: float = 0.0
    prev: float = 0.0  # the previous reading
    seen: list[int] = msgspec.field(
        default_factory=list
    )  # per grid, per bin of the previous reading: bitset of next bins
    alarm_ms: int = -1  # the last window whose novelty vote started a refractory period


class Value(BaseRule[ValueState]):
    id = "value"
    alert_types = ("value_anomaly",)
    settings_model = ValueSettings
    state_type = ValueState
    lazy = True  # count segments never carry a value slot

    def __init__(self, settings: RuleSettings) -> None:
        super().__init__(settings)
        self.own = settings.section(self.id, ValueSettings)
        self.t = Thresholds.of(settings)
        self.season_ms = self.own.season_min_days * DAY_MS
        self.period_ms = self.own.season_days * DAY_MS
        self.cooldown_ms = self.own.cooldown_windows * settings.window_ms
        self.refractory_ms = self.own.refractory_windows * settings.window_ms
        self.z_tail = -float(special.ndtri((1.0 - self.own.tail_quantile) / 2.0))  # that quantile of |N(0, 1)|

    def windows_seen(self, state: ValueState) -> int:
        return state.windows

    def reads(self, window: SegmentWindow) -> bool:
        return window.value is not None

    def evaluate(self, state: ValueState, lives: Lives, window: SegmentWindow) -> list[Check]:
        x = window.value
        if x is None or not math.isfinite(x):
            return []
        s, t = self.own, self.t
        slot = self._slot(window.window_start_ms)
        if state.windows == 0:
            state.level, state.first_ms = x, window.window_start_ms
            state.profile, state.visits = [x] * s.season_slots, [0] * s.season_slots
            state.lo = state.hi = state.prev = x
            state.seen = [0] * sum(s.novelty_bins)
            state.windows = 1
            return []
        vote = self._novelty(state, x)
        gated = s.context_gate and bool(s.novelty_bins) and state.windows >= s.novelty_warmup
        if state.windows < s.novelty_warmup:
            vote = 0.0  # every transition is new while the range and the grids are young
        seasonal = state.profile[slot] + state.offset if slot >= 0 else state.level
        expected = seasonal if self._seasonal(state, window.window_start_ms) else state.level
        sigma = self._sigma(state)
        r = x - expected
        z = r / sigma
        surprise = self._surprise(state, z)
        p = 1.0 if gated and vote <= 0.0 else self._evidence(min(1.0, 2.0 * norm_sf(surprise)), vote)
        warm = state.windows >= t.warmup_windows
        life = lives["value_anomaly"]
        self._advance(state, life, z, warm)
        band = (expected - t.z_resolve * sigma, expected + t.z_resolve * sigma)
        practical = (
            warm and abs(r) >= s.min_change * abs(expected) and self.may_page(life, window.window_start_ms, state)
        )
        if practical and vote >= s.refractory_vote:
            state.alarm_ms = window.window_start_ms  # this window may page: the next refractory_windows may not
        check = judge(Reading("value_anomaly", "value", x, expected, *band, 0), life, _z2(p), p, warm, practical, t)
        self._compare(state, x, seasonal, s.huber_k * sigma if warm else math.inf)
        anomalous = surprise > t.z_freeze
        if frozen((life,), anomalous, state.frozen, warm, t):
            state.frozen += 1
            self._learn_profile(state, slot, x)
            return [check]
        state.frozen = 0
        self._learn(state, slot, x, r, sigma if warm else math.inf, anomalous and warm)
        return [check]

    def may_page(self, life: Lifecycle, start_ms: int, state: ValueState | None = None) -> bool:
        """Whether a breach on this window could page: not already firing, not cooling down after a
        resolve (a gauge that wobbles back and forth is one incident, not one per wobble), not in
        the refractory period after a novelty vote (``state``'s, when given)."""
        if state is not None and state.alarm_ms >= 0 and 0 < start_ms - state.alarm_ms <= self.refractory_ms:
            return False
        return not life.firing and (life.resolved_ms < 0 or start_ms - life.resolved_ms >= self.cooldown_ms)

    def _evidence(self, p_surprise: float, vote: float) -> float:
        """The window's p: the surprise's and the novelty vote's evidence in decades of p,
        -log10 p = min(-log10 p_surprise, surprise_decades) + novelty_decades x vote (the surprise
        alone when no grid calls the transition new). A new context is evidence the surprise cannot see (a value inside
        the usual band reached from an unusual place) and ranks a change's first rows first."""
        s = self.own
        if vote <= 0.0:
            return p_surprise
        decades = min(-math.log10(max(p_surprise, 1e-300)), s.surprise_decades)
        return float(10.0 ** -min(decades + s.novelty_decades * vote, 300.0))

    def _novelty(self, state: ValueState, x: float) -> float:
        """The share of grids on which the transition bin(previous) -> bin(x) is new (CAD-OSE's
        context novelty). Each grid cuts the range seen so far (x included) into B equal bins and
        keeps, per bin, a bitset of the bins that followed it: sum(B) small ints per segment.
        When the range widens the seen transitions move to the new bins their old bins overlap
        (the history itself is not kept: a conservative stand-in for re-binning it). Learns
        every reading."""
        bins = self.own.novelty_bins
        if not bins:
            return 0.0
        lo, hi = state.lo, state.hi
        nlo, nhi = min(lo, x), max(hi, x)
        base = 0
        novel = 0
        for b in bins:
            if nlo < lo or nhi > hi:
                _rebin(state.seen, base, b, lo, hi, nlo, nhi)
            a, c = _bin(state.prev, nlo, nhi, b), _bin(x, nlo, nhi, b)
            row = state.seen[base + a]
            if not row >> c & 1:
                novel += 1
                state.seen[base + a] = row | 1 << c
            base += b
        state.lo, state.hi, state.prev = nlo, nhi, x
        return novel / len(bins)

    def _surprise(self, state: ValueState, z: float) -> float:
        """|z| judged against this series' own surprises (HTM's anomaly likelihood, on log1p |z|):
        a heavy-tailed series needs a larger z before a reading is unusual for it. Learns every
        reading (a surprise is data about surprises)."""
        if not self.own.calibrate:
            return abs(z)
        u = math.log1p(min(abs(z), 1e6))
        a = max(self.own.calibration_alpha, 1.0 / (state.windows + 1))
        sd = math.sqrt(state.surprise_var) if state.windows > 2 else 1.0
        out = (u - state.surprise_mean) / max(sd, 0.05)
        d = u - state.surprise_mean
        state.surprise_mean += a * d
        state.surprise_var = (1.0 - a) * (state.surprise_var + a * d * d)
        return out

    def _seasonal(self, state: ValueState, start_ms: int) -> bool:
        """The profile is in use once the series spans season_min_days and it has predicted better
        than the plain level (a series without a daily cycle keeps the level)."""
        return (
            self.own.season_slots > 0
            and start_ms - state.first_ms >= self.season_ms
            and state.season_err < state.plain_err
        )

    def _slot(self, start_ms: int) -> int:
        """The reading's slot in the season (-1 without a profile)."""
        slots = self.own.season_slots
        return (start_ms % self.period_ms) * slots // self.period_ms if slots else -1

    def _sigma(self, state: ValueState) -> float:
        """The robust scale, inflated while young (the baseline itself is uncertain), floored so a
        flat or quantised series does not turn its first wobble into an infinite z."""
        floor = self.own.floor_share * SIGMA_PER_MAD * state.slow_mad + 1e-9
        bulk = SIGMA_PER_MAD * state.mad * (1.0 + 2.0 / state.windows)
        return max(bulk, state.tail / self.z_tail, floor)

    def _advance(self, state: ValueState, life: Lifecycle, z: float, warm: bool) -> None:
        """Two CUSUMs (up, down) at the design shift; the lifecycle carries the larger, and while
        firing a reverse CUSUM gathers evidence that |z| is back near 0."""
        d = self.own.shift_sigmas
        firing = life.firing
        zc = max(-self.own.huber_k * 2.0, min(self.own.huber_k * 2.0, z))  # one wild reading is not a shift
        state.up = cusum_step(state.up, d * zc - 0.5 * d * d) if warm and not firing else 0.0
        state.down = cusum_step(state.down, -d * zc - 0.5 * d * d) if warm and not firing else 0.0
        life.cusum = max(state.up, state.down)
        life.recovery = cusum_step(life.recovery, 0.5 * d * d - d * abs(zc)) if firing else 0.0

    def _tail_step(self, state: ValueState, size: float, sigma: float) -> float:
        """One step of a multiplicative stochastic quantile of |residual|: up by tail_rate x q when
        exceeded, down by tail_rate x (1 - q) otherwise, so it settles where P(|r| > tail) = 1 - q
        and moves at a speed relative to itself (a flat stretch cannot pin it at 0). While young
        (``sigma`` inf) it is the bulk scale's quantile."""
        if math.isinf(sigma):
            return self.z_tail * SIGMA_PER_MAD * state.mad
        q, eta = self.own.tail_quantile, self.own.tail_rate
        tail = max(state.tail, 1e-9)
        return tail * (1.0 + eta * q) if size > tail else tail * (1.0 - eta * (1.0 - q))

    def _compare(self, state: ValueState, x: float, seasonal: float, cap: float) -> None:
        """Track both expectations' clipped errors on every reading (frozen or not): which one the
        rule uses is decided by how they did, anomalies included."""
        b = max(self.own.scale_alpha, 1.0 / (state.windows + 1))
        state.plain_err += b * (min(abs(x - state.level), cap) - state.plain_err)
        state.season_err += b * (min(abs(x - seasonal), cap) - state.season_err)

    def _learn_profile(self, state: ValueState, slot: int, x: float) -> None:
        """The profile learns every reading, unclipped and even while frozen: a shape that comes back
        every day at the same time is the profile's to learn, however anomalous it looked the first
        time (one reading moves its slot by season_gamma of the difference)."""
        if slot < 0:
            return
        state.visits[slot] += 1
        g = max(self.own.season_gamma, 1.0 / state.visits[slot])
        state.profile[slot] += g * (x - state.offset - state.profile[slot])

    def _learn(self, state: ValueState, slot: int, x: float, r: float, sigma: float, anomalous: bool) -> None:
        """Huber updates: every expectation learns from the value clipped to ``huber_k`` scales of
        it, the scale only from normal-looking readings (an outlier must not widen the band it is
        judged against). A young baseline (``sigma`` inf) learns from every reading unclipped."""
        s = self.own
        young = 1.0 / (state.windows + 1)  # a plain mean until the EWMA's own memory is shorter
        a, b = max(s.alpha, young), max(s.scale_alpha, young)
        cap = s.huber_k * sigma
        plain = x - state.level
        state.level += a * _clip(plain, cap)
        if slot >= 0:
            self._learn_profile(state, slot, x)
            state.offset += a * _clip(x - state.profile[slot] - state.offset, cap)
        if not anomalous:
            state.mad += b * (min(abs(r), cap) - state.mad)
        state.tail = self._tail_step(state, abs(r), sigma)
        state.slow_mad += max(s.floor_alpha, young) * (min(abs(r), 10.0 * cap) - state.slow_mad)
        state.windows += 1


def _z2(p: float) -> float:
    """The two-sided z of p (|Z| >= z with probability p), capped at Z_CAP."""
    return Z_CAP if p <= 0.0 else min(Z_CAP, -float(special.ndtri(p / 2.0)))


def _bin(x: float, lo: float, hi: float, bins: int) -> int:
    """x's bin on the grid of ``bins`` equal bins over [lo, hi] (0 when flat)."""
    return min(bins - 1, int((x - lo) / (hi - lo) * bins)) if hi > lo else 0


def _rebin(seen: list[int], base: int, bins: int, lo: float, hi: float, nlo: float, nhi: float) -> None:
    """Move one grid's seen transitions (``seen[base : base + bins]``) from [lo, hi] to [nlo, nhi]:
    an old bin stands for every new bin it overlaps (its readings, not kept, were somewhere in
    it), so a transition seen before is still seen; all of a flat grid's go to bin 0's. (Mapping
    an old bin to its centre's new bin only scored higher on NAB, 55.4 vs 50.9, but makes a clean
    daily cycle page: its own old transitions look new.)"""
    width = (hi - lo) / bins
    spans = [(_bin(lo + i * width, nlo, nhi, bins), _bin(lo + (i + 1) * width, nlo, nhi, bins)) for i in range(bins)]
    masks = [((1 << (last + 1)) - 1) ^ ((1 << first) - 1) for first, last in spans]
    new = [0] * bins
    for a, row in enumerate(seen[base : base + bins]):
        if not row:
            continue
        mask = 0
        for c in range(bins):
            if row >> c & 1:
                mask |= masks[c]
        for na in range(spans[a][0], spans[a][1] + 1):
            new[na] |= mask
    seen[base : base + bins] = new


def _clip(value: float, cap: float) -> float:
    return max(-cap, min(cap, value))
