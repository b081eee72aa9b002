"""The application file spark-submit runs (spark-operator's ``mainApplicationFile``).

``spark-submit ... local:///opt/adwatch/app/launcher.py [run|backtest ...]``: the driver runs
the same ``adwatch-detector`` command as the Deployment, with the master and every other
Spark setting taken from what spark-submit was given (``spark.master`` wins over local[N]).
"""

from __future__ import annotations

import sys

from adwatch_detector.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["run"]))
