"""``adwatch-generator [live|backfill|drill|segments] [OPTIONS]``: the commands are in :mod:`adwatch_generator.cli`."""

from __future__ import annotations

from adwatch_generator.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
