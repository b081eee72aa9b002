"""Generator throughput of this checkout against another commit's, in one run (a ratio, not two numbers).

Run: .venv/bin/python benchmarks/bench_generator_compare.py [--against main] [--rounds 5] [--seconds 5]

The other commit's ``services/generator/src`` is exported to a temporary directory and put first
on ``PYTHONPATH``; the two alternate round by round (``bench_generator.py --no-kafka``, generate
+ encode to /dev/null), so a busy machine slows both alike. Prints each side's median and the ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_generator.py"
_ROW = re.compile(r"/dev/null \| ([\d,]+) \| ([\d,]+) \|")


def _export(ref: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "services/generator/src"], check=True, capture_output=True
    ).stdout
    tar = into / "src.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into / "services" / "generator" / "src"


def _once(seconds: float, src: Path | None) -> float:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    out = subprocess.run(
        [sys.executable, str(BENCH), "--no-kafka", "--seconds", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    match = _ROW.search(out)
    if match is None:
        raise RuntimeError(f"no /dev/null row in:\n{out}")
    return float(match.group(2).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", default="main", help="git ref to compare with (default main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        other = _export(args.against, Path(tmp))
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(args.rounds):
            theirs.append(_once(args.seconds, other))
            ours.append(_once(args.seconds, None))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"| checkout | events/s (median of {args.rounds}) | rounds |")
    print("|---|---:|---|")
    print(f"| {args.against} | {b:,.0f} | {', '.join(f'{x:,.0f}' for x in theirs)} |")
    print(f"| this checkout | {a:,.0f} | {', '.join(f'{x:,.0f}' for x in ours)} |")
    print(f"\nratio this / {args.against}: {a / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
