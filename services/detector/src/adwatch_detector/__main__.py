"""``adwatch-detector [run|backtest] [OPTIONS]``: the commands are in :mod:`adwatch_detector.runner`."""

from __future__ import annotations

from adwatch_detector.runner import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
