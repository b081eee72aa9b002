"""Clean shutdown: SIGTERM (Kubernetes) and SIGINT (Ctrl-C) set a stop event.

Each service's loop checks the event, finishes its batch, flushes its producer and commits
its offsets before it exits; nothing is cut off mid-delivery.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_handlers(stop: threading.Event) -> dict[int, Any]:
    """Make SIGTERM/SIGINT set ``stop``; return the handlers they replace (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    return {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """``install_stop_handlers`` for the duration of a ``with`` block, then the old handlers."""
    previous = install_stop_handlers(stop)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
