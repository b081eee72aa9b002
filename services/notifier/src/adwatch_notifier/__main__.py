"""``adwatch-notifier --channel slack|email|pagerduty|webhook|console``: one channel per process.

Also ``adwatch-notifier replay ...`` (dead letters) and ``adwatch-notifier silence add|list|expire``
(:mod:`adwatch_notifier.cli`).
"""

import sys

from adwatch_notifier.cli import main

if __name__ == "__main__":
    sys.exit(main())
