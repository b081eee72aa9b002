"""The pytest plugin (adwatch_dev.testing) leaves nothing running after pytest's summary line.

A tiny session runs in a subprocess with the plugin's broker and the clients tests leave behind
in practice: closed, dropped, in a reference cycle, held by a failing test's traceback and by a
module global. Its output must end with pytest's own summary line: no librdkafka
``Connection refused`` (a client reconnecting to the stopped broker) after it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SESSION = """
from confluent_kafka import Producer

from adwatch.kafka import make_consumer, make_producer
from adwatch_dev.testing import consume_all, unique

KEPT = []  # a client a module keeps for the whole session


def _produce(kafka, topic, n=3):
    producer = make_producer(kafka)
    for i in range(n):
        producer.produce(topic, value=b"v%d" % i)
    assert producer.flush(10) == 0
    return producer


def test_closed_clients(kafka, topic):
    _produce(kafka, topic)
    assert len(consume_all(kafka, topic, expected=3, timeout_s=20)) == 3


def test_a_dropped_consumer(kafka, topic):
    _produce(kafka, topic)
    consumer = make_consumer(kafka, unique("dropped"))
    consumer.subscribe([topic])
    consumer.poll(1.0)  # never closed


def test_clients_in_a_reference_cycle(kafka, topic):
    class Holder:
        pass

    holder = Holder()
    holder.self = holder
    holder.producer = _produce(kafka, topic)
    holder.consumer = make_consumer(kafka, unique("cycle"))
    holder.consumer.subscribe([topic])
    holder.consumer.poll(1.0)


def test_a_module_global_client(kafka, topic):
    KEPT.append(_produce(kafka, topic))


def test_a_failing_test_holds_its_consumer(kafka, topic):
    consumer = make_consumer(kafka, unique("failing"))
    consumer.subscribe([topic])
    consumer.poll(1.0)
    assert consumer is None, "fails on purpose: its traceback keeps the consumer alive"
"""

SUMMARY = re.compile(r"^(=+ )?\d+ \w+(, \d+ \w+)* in [\d.]+s( \([\d:]+\))?( =+)?$")


def test_a_session_ends_with_pytest_s_summary_line(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["adwatch_dev.testing"]\n')
    (tmp_path / "test_session.py").write_text(SESSION)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-W", "ignore", str(tmp_path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in the order it was written
        text=True,
        timeout=240,
        check=False,
    )
    output = done.stdout
    assert done.returncode == 1, output  # the one failing test, nothing else
    lines = [line for line in output.splitlines() if line.strip()]
    assert "1 failed, 4 passed" in output, output
    after = lines[lines.index(next(line for line in lines if SUMMARY.match(line))) + 1 :]
    assert after == [], "printed after pytest's summary line:\n" + "\n".join(after[:20])
    assert "Connection refused" not in output
