"""Terminal progress: the familiar ``Sent ... | Rate: ... | Total ...`` line and a backfill bar."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from adwatch_generator.metrics import GeneratorMetrics


def format_progress(sent: int, rate: float, total: int) -> str:
    return f"Sent {sent:,} events | Rate: {rate:,.0f} events/sec | Total {total:,}"


def format_bar(fraction: float, total: int, rate: float, width: int = 30) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:5.1f}% | {total:,} events | {rate:,.0f} events/sec"
    )


class Progress:
    """Counts events and prints a line (or redraws a bar) every ``interval_s`` seconds; sets the rate gauge."""

    def __init__(
        self,
        out: TextIO | None,
        metrics: GeneratorMetrics,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.metrics = metrics
        self.interval_s = interval_s
        self.clock = clock
        self.total = 0
        self._since = 0
        self._started = self._last = clock()
        self._bar_drawn = False

    def add(self, n: int, fraction: float | None = None) -> None:
        """Count ``n`` events; ``fraction`` (0-1) switches to the backfill bar."""
        self.total += n
        self._since += n
        now = self.clock()
        if now - self._last < self.interval_s and fraction != 1.0:
            return
        rate = self._since / max(now - self._last, 1e-9)
        self.metrics.rate_events_per_second.set(rate)
        if self.out is not None:
            if fraction is None:
                print(format_progress(self._since, rate, self.total), file=self.out, flush=True)
            else:
                tty = self.out.isatty()
                end = "\r" if tty and fraction < 1.0 else "\n"
                overall = self.total / max(now - self._started, 1e-9)
                print(format_bar(fraction, self.total, overall), end=end, file=self.out, flush=True)
                self._bar_drawn = end == "\r"
        self._since, self._last = 0, now

    def overall_rate(self) -> float:
        return self.total / max(self.clock() - self._started, 1e-9)

    def close(self) -> None:
        if self._bar_drawn and self.out is not None:
            print(file=self.out, flush=True)
