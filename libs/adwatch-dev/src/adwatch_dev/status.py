"""The live status of ``make run``, read from the services' own ``/metrics`` (no second bookkeeping).

Pure part: Prometheus text -> :class:`Samples` (:func:`parse_metrics`), two scrapes ->
:class:`Status` (:func:`build_status`), a status -> lines (:func:`status_lines`, one-line
:func:`status_line`). The I/O part, :class:`StatusBoard`, scrapes the services every few
seconds and shows a refreshing ``rich`` panel on a terminal, or prints a plain line every
``plain_interval_s`` when the output is a file or a pipe; alert boxes from the console
notifier are printed above the panel through :meth:`StatusBoard.print`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

# sample name -> [(labels, value)]
Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse_metrics(text: str) -> Samples:
    """Prometheus exposition text -> samples by sample name (``..._total`` included)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def total(samples: Samples | None, name: str, **labels: str) -> float | None:
    """Sum of the samples named ``name`` whose labels include ``labels``; None when absent."""
    if not samples or name not in samples:
        return None
    values = [v for lbl, v in samples[name] if all(lbl.get(k) == want for k, want in labels.items())]
    return sum(values) if values else 0.0


def by_label(samples: Samples | None, name: str, label: str, **labels: str) -> dict[str, float]:
    """``{label value: summed value}`` of the samples named ``name``."""
    out: dict[str, float] = {}
    for lbl, v in (samples or {}).get(name, []):
        if all(lbl.get(k) == want for k, want in labels.items()):
            out[lbl.get(label, "")] = out.get(lbl.get(label, ""), 0.0) + v
    return out


@dataclass(frozen=True)
class Snapshot:
    """One scrape of every service: ``services[name]`` is None when its endpoint did not answer."""

    at_s: float
    services: Mapping[str, Samples | None]


@dataclass(frozen=True)
class Status:
    """What the panel shows; None means "not known yet" (a service still starting)."""

    elapsed_s: float
    phase: str
    events_in_per_s: float | None = None
    events_processed_per_s: float | None = None
    events_in: float | None = None
    events_processed: float | None = None
    batch_duration_s: float | None = None
    trigger_s: float | None = None
    watermark_delay_s: float | None = None
    windows_closed: float | None = None
    segments_tracked: float | None = None
    segments_warming: float | None = None
    alerts_firing: float | None = None
    alerts_resolved: float | None = None
    deliveries: dict[str, float] = field(default_factory=dict)  # channel -> delivered
    dead_letters: dict[str, float] = field(default_factory=dict)  # detector|<channel> -> parked
    down: tuple[str, ...] = ()


def _rate(cur: float | None, prev: float | None, dt: float) -> float | None:
    if cur is None or prev is None or dt <= 0:
        return None
    return max(0.0, cur - prev) / dt


def _phase(s: dict[str, Any], down: tuple[str, ...], batched: bool = True) -> str:
    """One sentence on what the pipeline is doing now, so no minute is silent."""
    if "detector" in down:
        return "starting: the detector boots Spark"
    if not s["events_in"]:
        return "starting: the generator is connecting to Kafka"
    if not batched and not s["events_processed"]:
        return "starting: Spark starts the query and reads the backfilled history (1-2 min on 2 cores)"
    if not s["windows_closed"]:
        return "replaying history: waiting for the first 1-minute window to close"
    if s["segments_warming"]:
        return f"learning baselines: {s['segments_warming']:.0f} segments still warming up"
    if s["watermark_delay_s"] is not None and s["watermark_delay_s"] > 300:
        return f"catching up on the backfill: {s['watermark_delay_s'] / 60:.0f} min of event time behind"
    if s["alerts_firing"]:
        return "watching live traffic; alerts fired (boxes above)"
    return "watching live traffic: the first alert follows about a minute after the scenario starts"


def build_status(prev: Snapshot | None, cur: Snapshot, started_s: float, trigger_s: float | None = None) -> Status:
    """The status from the latest scrape and the one before (for the rates)."""
    gen, det = cur.services.get("generator"), cur.services.get("detector")
    pgen = prev.services.get("generator") if prev else None
    pdet = prev.services.get("detector") if prev else None
    dt = cur.at_s - prev.at_s if prev else 0.0
    notifiers = {name.removeprefix("notifier-"): s for name, s in cur.services.items() if name.startswith("notifier-")}
    deliveries = {
        ch: total(s, "adwatch_notifier_notifications_total", outcome="delivered") or 0.0
        for ch, s in notifiers.items()
        if s is not None
    }
    dead = {"detector": total(det, "adwatch_detector_dead_letters_total") or 0.0} if det is not None else {}
    dead |= {ch: total(s, "adwatch_notifier_dead_letters_total") or 0.0 for ch, s in notifiers.items() if s is not None}
    down = tuple(sorted(name for name, s in cur.services.items() if s is None))
    batched = bool(total(det, "adwatch_detector_last_batch_timestamp_seconds"))  # gauges mean nothing before

    def gauge(name: str) -> float | None:
        return total(det, name) if batched else None

    values: dict[str, Any] = {
        "events_in": total(gen, "adwatch_generator_events_produced_total"),
        "events_processed": total(det, "adwatch_detector_events_total"),
        "batch_duration_s": gauge("adwatch_detector_batch_duration_seconds"),
        "watermark_delay_s": gauge("adwatch_detector_watermark_delay_seconds"),
        "windows_closed": total(det, "adwatch_detector_windows_closed_total"),
        "segments_tracked": gauge("adwatch_detector_state_rows"),
        "segments_warming": gauge("adwatch_detector_segments_warming"),
        "alerts_firing": total(det, "adwatch_detector_alerts_total", status="firing"),
        "alerts_resolved": total(det, "adwatch_detector_alerts_total", status="resolved"),
    }
    processed = _rate(values["events_processed"], total(pdet, "adwatch_detector_events_total"), dt)
    if not processed and batched:  # no per-event count from this source: the last batch's own rate
        processed = gauge("adwatch_detector_processed_rows_per_second")
    return Status(
        elapsed_s=cur.at_s - started_s,
        phase=_phase(values, down, batched),
        events_in_per_s=_rate(values["events_in"], total(pgen, "adwatch_generator_events_produced_total"), dt),
        events_processed_per_s=processed,
        # the detector's own cadence (time between batch starts); a configured value only before it
        trigger_s=gauge("adwatch_detector_trigger_interval_seconds") or trigger_s,
        deliveries=deliveries,
        dead_letters=dead,
        down=down,
        **values,
    )


def _n(value: float | None, fmt: str = "{:.0f}", unit: str = "") -> str:
    return "–" if value is None else fmt.format(value) + unit


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}"


def status_rows(st: Status) -> list[tuple[str, str]]:
    """(label, value) rows of the panel, in display order."""
    deliveries = ", ".join(f"{ch} {v:.0f}" for ch, v in sorted(st.deliveries.items())) or "–"
    dead = ", ".join(f"{k} {v:.0f}" for k, v in sorted(st.dead_letters.items())) or "–"
    batch = f"{_n(st.batch_duration_s, '{:.1f}', ' s')} (trigger {_n(st.trigger_s, '{:.1f}', ' s')})"
    rows = [
        (
            "events/s",
            f"in {_n(st.events_in_per_s)} · processed {_n(st.events_processed_per_s)}"
            f"   (total {_n(st.events_in)} / {_n(st.events_processed)})",
        ),
        ("detector batch", f"{batch} · watermark delay {_n(st.watermark_delay_s, '{:.0f}', ' s')}"),
        ("windows closed", _n(st.windows_closed)),
        ("segments", f"{_n(st.segments_tracked)} tracked · {_n(st.segments_warming)} warming up"),
        ("alerts", f"{_n(st.alerts_firing)} firing · {_n(st.alerts_resolved)} resolved"),
        ("deliveries", deliveries),
        ("dead letters", dead),
    ]
    if st.down:
        rows.append(("not answering", ", ".join(st.down)))
    return rows


def status_lines(st: Status) -> list[str]:
    """The panel as plain text lines (title, phase, rows)."""
    width = max(len(label) for label, _ in status_rows(st))
    head = f"adwatch {_clock(st.elapsed_s)} · {st.phase}"
    return [head, *(f"  {label:<{width}}  {value}" for label, value in status_rows(st))]


def status_line(st: Status) -> str:
    """One line for logs and pipes (printed every few seconds when stdout is not a terminal)."""
    deliveries = " ".join(f"{ch}={v:.0f}" for ch, v in sorted(st.deliveries.items())) or "-"
    dead = sum(st.dead_letters.values())
    return (
        f"adwatch {_clock(st.elapsed_s)} | in {_n(st.events_in_per_s)}/s processed {_n(st.events_processed_per_s)}/s"
        f" | batch {_n(st.batch_duration_s, '{:.1f}', 's')}/{_n(st.trigger_s, '{:.1f}', 's')}"
        f" wm-delay {_n(st.watermark_delay_s, '{:.0f}', 's')} | windows {_n(st.windows_closed)}"
        f" | segments {_n(st.segments_tracked)} ({_n(st.segments_warming)} warming)"
        f" | alerts {_n(st.alerts_firing)} firing {_n(st.alerts_resolved)} resolved"
        f" | sent {deliveries} | dead letters {dead:.0f} | {st.phase}"
    )


def status_panel(st: Status) -> Any:
    """The panel as a ``rich`` renderable (a table in a box)."""
    from rich.panel import Panel
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for label, value in status_rows(st):
        table.add_row(label, value)
    title = f"[bold]adwatch[/] {_clock(st.elapsed_s)}"
    return Panel(table, title=title, subtitle=st.phase, subtitle_align="left", expand=False)


class StatusBoard:
    """Scrapes ``ports`` every ``scrape_interval_s`` and shows the status (rich Live or plain lines)."""

    def __init__(
        self,
        ports: Callable[[], Mapping[str, int]],
        *,
        stream: IO[str] | None = None,
        terminal: bool | None = None,
        trigger_s: float | None = None,
        scrape_interval_s: float = 2.0,
        plain_interval_s: float = 10.0,
        fetch: Callable[[int], str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import sys

        from rich.console import Console

        self.ports = ports
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream, force_terminal=terminal, highlight=False, soft_wrap=True)
        self.terminal = self.console.is_terminal if terminal is None else terminal
        self.trigger_s = trigger_s
        self.scrape_interval_s = scrape_interval_s
        self.plain_interval_s = plain_interval_s
        self.fetch = fetch or _fetch_metrics
        self.clock = clock
        self.started_s = clock()
        self.prev: Snapshot | None = None
        self.status: Status | None = None
        self._live: Any = None
        self._lock = threading.Lock()
        self._last_plain = -1e18
        self.listeners: list[Callable[[Status], None]] = []

    def scrape(self) -> Status:
        """Read every endpoint once and update :attr:`status`."""
        services: dict[str, Samples | None] = {}
        for name, port in dict(self.ports()).items():
            try:
                services[name] = parse_metrics(self.fetch(port))
            except Exception:  # a starting or dead service: shown as "not answering"
                services[name] = None
        snap = Snapshot(self.clock(), services)
        status = build_status(self.prev, snap, self.started_s, self.trigger_s)
        # keep the previous snapshot for rates only once it has data: rates need two good scrapes
        self.prev = snap
        self.status = status
        for listener in self.listeners:
            listener(status)
        return status

    def show(self, status: Status) -> None:
        with self._lock:
            if self._live is not None:
                self._live.update(status_panel(status))
            elif status.elapsed_s - self._last_plain >= self.plain_interval_s:
                self._last_plain = status.elapsed_s
                self.stream.write(status_line(status) + "\n")
                self.stream.flush()

    def print(self, text: str) -> None:
        """Print text (an alert box) above the panel, or as it is when not on a terminal."""
        with self._lock:
            if self._live is not None:
                from rich.text import Text

                self._live.console.print(Text.from_ansi(text))
            else:
                self.stream.write(text if text.endswith("\n") else text + "\n")
                self.stream.flush()

    def __enter__(self) -> StatusBoard:
        if self.terminal:
            from rich.live import Live
            from rich.text import Text

            self._live = Live(
                Text("adwatch: starting ..."),
                console=self.console,
                refresh_per_second=2,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None

    def run(self, stopping: threading.Event, tick: Callable[[], bool] | None = None) -> None:
        """Scrape and show until ``stopping`` is set or ``tick()`` returns False."""
        while not stopping.is_set():
            self.show(self.scrape())
            if tick is not None and not tick():
                return
            stopping.wait(self.scrape_interval_s)


def _fetch_metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        body: bytes = resp.read()
        return body.decode()
