"""A poison pill on Kafka: a message whose handler kills its consumer process, every time.

Each consumer is its own OS process (``python -c``) on the session's real Kafka-API broker;
the handler calls ``os._exit`` on the poison message, so nothing is committed, nothing is
handed back and no group is left cleanly: exactly what a segfault or the OOM killer leaves.
The delivery count must survive those processes (it is in ``__flts_deliveries``), so after
``LIMIT`` deaths the next consumer dead-letters the message without running the handler and
goes on with the messages behind it on the same partition.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from contract.bus_suite import training_event
from flts.bus import open_bus
from servers import Server

#: Deliveries a message may have without a commit before it is dead-lettered.
LIMIT = 3
#: Short sessions: a killed member is only evicted (and its partition handed over) after
#: ``session.timeout.ms``, and Tansu completes joins after about half of it.
OPTIONS = (
    "partitions=1&replication_factor=1&session_timeout_ms=1000"
    "&heartbeat_interval_ms=250&static_membership=false"
)
POISON = 1

CONSUMER = """
import os, sys
from flts.bus import RetryPolicy, open_bus

url, topic, group, out, limit, poison = sys.argv[1:7]

def handle(event):
    n = int(event.payload.model_type[1:])
    if n == int(poison):
        os._exit(17)  # dies mid-handler: no commit, no hand-back, no leave-group
    with open(out, "a") as sink:
        sink.write(f"{n}\\n")

bus = open_bus(url)
stats = bus.consume(
    topic, group, handle, max_idle=1.0, poll_timeout=0.2,
    retry=RetryPolicy(max_deliveries=int(limit)),
)
bus.close()
print(f"dead-lettered {stats.dead_lettered} handled {stats.handled}", flush=True)
"""


def test_a_message_that_kills_its_consumer_ends_in_the_dlq_and_its_partition_moves_on(
    kafka_server: Server, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    topic, group = f"poison-{tag}", f"workers-{tag}"
    url = f"{kafka_server.url}?{OPTIONS}"
    with open_bus(url) as bus:
        for n in range(4):  # one key, so one partition: 0, the poison, then 2 and 3 behind it
            bus.publish(topic, training_event(n, key="PobleSec"))
    out = tmp_path / "handled.txt"
    argv = [sys.executable, "-c", CONSUMER, url, topic, group, str(out), str(LIMIT)]
    codes: list[int] = []
    started = time.monotonic()
    last = ""
    while (not codes or codes[-1] != 0) and len(codes) <= LIMIT + 2:
        child = subprocess.run(
            [*argv, str(POISON)], capture_output=True, text=True, timeout=60, check=False
        )
        codes.append(child.returncode)
        last = child.stdout + child.stderr
    took = time.monotonic() - started

    assert codes == [17] * LIMIT + [0], last  # LIMIT deaths, then a consumer that lives
    assert "dead-lettered 1 handled 2" in last
    assert out.read_text().split() == ["0", "2", "3"]  # the partition moved on, in order
    with open_bus(url) as bus:
        [letter] = bus.dead_letters(topic)
        assert letter.error == (
            f"BusError: delivered {LIMIT} times without a commit (its consumer keeps dying?)"
        )
        assert letter.attempts == LIMIT
        assert letter.group == group
        assert bus.pending(group, topic) == 0
    print(f"poison pill dead-lettered after {LIMIT} killed consumers in {took:.1f}s")
