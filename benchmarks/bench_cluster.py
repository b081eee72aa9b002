"""Detector events/s on a two-worker Spark standalone cluster beside local[2], in the same run.

``.venv/bin/python benchmarks/bench_cluster.py --minutes 30 --per-min 3000``: the embedded broker,
one 6-partition topic of synthetic events, then the detector job (``availableNow``, the
Python Kafka reader, state, sinks to the broker) as a driver subprocess on ``local[2]`` and
on ``spark://`` with two 1-core executors (the helpers of ``tests/spark_cluster``). Events/s
is input rows over the query's wall time (SparkSession start excluded). On one 2-core machine
the cluster can't win: master, workers, executors and their Python workers share the cores;
the ratio measures the overhead of distribution, not its gain.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adwatch.kafka import ensure_topics  # noqa: E402
from adwatch_dev.infra import EmbeddedInfra  # noqa: E402
from tests.spark_cluster.cluster import (  # noqa: E402
    TEST_RULES,
    StandaloneCluster,
    produce_round_robin,
    run_driver,
    synth_input,
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=int, default=30)
    p.add_argument("--per-min", type=int, default=3000, help="impressions per minute per segment (2 segments)")
    p.add_argument("--max-offsets", type=int, default=50_000)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    infra = EmbeddedInfra(work / "infra").start()
    cluster = StandaloneCluster(work / "cluster", workers=2)
    try:
        bootstrap = infra.kafka_bootstrap
        values = synth_input(minutes=a.minutes, per_min=a.per_min, drop_from=a.minutes - 3)
        topics = {"in": "bench-events", "alerts": "bench-alerts-local", "dlq": "bench-dlq"}
        ensure_topics(
            bootstrap, {"bench-events": 6, "bench-alerts-local": 1, "bench-alerts-cluster": 1, "bench-dlq": 1}
        )
        produce_round_robin(bootstrap, topics["in"], values)
        rules = work / "rules.yaml"
        rules.write_text(TEST_RULES)
        extra = ("--rules", str(rules), "--max-offsets", str(a.max_offsets))
        local = run_driver(work / "local", "local[2]", bootstrap, topics, work / "ck-local", *extra, timeout_s=600)
        cluster.start()
        topics["alerts"] = "bench-alerts-cluster"
        remote = run_driver(
            work / "cluster-run", cluster.url, bootstrap, topics, work / "ck-cluster", *extra, timeout_s=600
        )
        rows = {}
        for name, r in (("local[2]", local), ("standalone 2 x 1 core", remote)):
            assert r.get("error") is None and r["input_rows"] == len(values), r
            rows[name] = r["input_rows"] / r["seconds"]
            print(f"{name:>24}: {r['input_rows']:,} events in {r['seconds']:.1f} s = {rows[name]:,.0f} events/s")
        ratio = rows["standalone 2 x 1 core"] / rows["local[2]"]
        print(f"cluster / local[2] = {ratio:.2f}")
        print(json.dumps({"events": len(values), "events_per_s": rows, "ratio": ratio}))
    finally:
        cluster.stop()
        infra.stop()


if __name__ == "__main__":
    main()
