"""The rule protocol: what every detection rule is, and what it concludes about a window.

A rule is plain Python (no Spark, no Kafka, no clock). It has a stable string ``id`` (the key of
its settings section in rules.yaml, of its slot in the per-segment state and the ``rule`` log
field), the alert types it can raise, a frozen settings slice and a small serialisable state.
The engine (engine.py) owns the firing/resolved lifecycles; a rule only says, per window, what
it saw (:class:`Check`). Adding a rule = one module + one line in registry.py.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar, cast

import msgspec
from pydantic import BaseModel, ConfigDict

from adwatch.contracts import AlertType, Metric, SegmentWindow, Severity
from adwatch_detector.rules.lifecycle import Lifecycle, Policy

if TYPE_CHECKING:
    from adwatch_detector.rules.settings import RuleSettings


class SettingsSection(BaseModel):
    """Base of every rules.yaml section: frozen, and a typo is an error rather than a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoSettings(SettingsSection):
    """For rules that have nothing to tune."""


class NoState(msgspec.Struct, array_like=True):
    """For stateless rules."""


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1 us per object, per window
class Check:
    """Evidence of one alert type on one window of one segment.

    ``breach``: the rule would fire on this window; ``in_band``: the metric is inside its band
    (counts towards resolving); ``recovered``: enough evidence that the shift is over; ``extreme``:
    a breach so large that it fires without waiting for confirmation (persistence); ``baseline``:
    the rule's baseline parameter before this window (frozen as the episode's anchor when it fires;
    < 0: the rule keeps none). While an episode fires, a rule measures against its anchor.
    """

    alert_type: AlertType
    metric: Metric
    current: float
    expected: float
    band_low: float
    band_high: float
    volume: int
    p_value: float
    z_score: float
    breach: bool
    in_band: bool
    recovered: bool
    severity: Severity
    extreme: bool = False
    baseline: float = -1.0
    evidence: float = math.inf
    """Expected events behind the window's value (impressions, clicks): how much a pooled
    recovery test learns from it; inf: the rule judges recovery window by window."""


class SegmentPrior(msgspec.Struct, frozen=True, array_like=True):
    """A parent segment's long-run CTR and eCPM (and impressions per window behind them), and its
    hour-of-day traffic profile once learnt (rules/season.py; empty: none): what a young child
    segment starts from instead of the global prior. Children of one country share its daily shape."""

    ctr: float
    ecpm: float
    impressions: float
    season: tuple[int, ...] = ()


Lives = dict[str, Lifecycle]
"""A rule's lifecycles, keyed by alert type (one fingerprint per segment and alert type)."""

S = TypeVar("S", bound=msgspec.Struct)


class BaseRule(ABC, Generic[S]):
    """One detection rule. Subclasses set the class attributes and implement :meth:`evaluate`.

    A rule object is built once per :class:`RuleSettings` and shared by every segment: it holds
    only settings; per-segment state is passed in (and mutated in place, for speed).
    """

    id: ClassVar[str]
    alert_types: ClassVar[tuple[AlertType, ...]]
    settings_model: ClassVar[type[SettingsSection]] = NoSettings
    state_type: ClassVar[type[msgspec.Struct]] = NoState
    lazy: ClassVar[bool] = False
    """The rule reads only some windows (:meth:`reads`): its slot in a segment's state is made on
    the first window it reads, so segments it never reads carry no bytes of it."""

    def __init__(self, settings: RuleSettings) -> None:
        self.settings = settings

    def new_state(self) -> S:
        """The state of a segment this rule has never seen."""
        # state_type is S's class (a ClassVar cannot name the type variable, so say it once here)
        return cast(S, self.state_type())

    @abstractmethod
    def evaluate(self, state: S, lives: Lives, window: SegmentWindow) -> list[Check]:
        """Checks for one closed window (windows arrive in start order, zero-traffic ones included),
        then learn from it. ``lives`` may be read (e.g. do not learn while firing) and carries the
        rule's CUSUM evidence; the engine moves the firing/resolved state afterwards."""

    def policy(self) -> Policy:
        """How this rule's alerts fire and resolve (default: the rule set's resolve and cooldown)."""
        shared = self.settings.set_settings
        return Policy(
            resolve_windows=self.settings.resolve_windows,
            cooldown_ms=shared.cooldown_windows * self.settings.window_ms,
        )

    def reads(self, window: SegmentWindow) -> bool:
        """Whether :meth:`evaluate` would look at this window (a lazy rule's slot waits for one)."""
        return True

    def seed(self, state: S, prior: SegmentPrior) -> None:
        """Start a new segment's baseline from its parent's (default: the rule's own prior)."""

    def windows_seen(self, state: S) -> int:
        """How many windows this rule's baseline has seen (0 if it keeps none): tells warm-up."""
        return 0

    def on_recovered(self, state: S, alert_type: AlertType, anchor: float) -> None:
        """An episode resolved as recovered, measured against ``anchor``: a rule whose baseline
        learnt the shift after max_freeze_windows may return it to the anchor (default: keep it)."""

    def on_silence(self, state: S, skipped_windows: int, first_skipped_ms: int) -> None:
        """A segment was silent for longer than the gap the engine replays (``skipped_windows`` from
        ``first_skipped_ms`` on): age the baseline in bulk."""
