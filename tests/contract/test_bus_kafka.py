"""The bus contract on ``kafka://``, against a real Kafka-protocol broker (Tansu, started once
per session on loopback); topics and groups are unique per test, so tests never mix.

Fixture adaptations (the assertions are the suite's, unchanged):

* ``session_timeout_ms=2000``: Tansu completes a group join after about half the session
  timeout, so short sessions keep the suite fast; ``heartbeat_interval_ms=500``.
* ``static_membership=false``: Tansu does not expire a closed static member (its partitions
  stayed assigned for more than 15 s with a 2 s session), and the suite reopens groups with
  new buses all the time. Static membership itself is covered in
  ``tests/integration/test_kafka_specifics.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flts.bus import Bus, open_bus
from servers import Server

from .bus_suite import BusContract, BusFactory

#: Test-friendly consumer timings for Tansu (see the module docstring).
OPTIONS = (
    "partitions=3&replication_factor=1&session_timeout_ms=2000"
    "&heartbeat_interval_ms=500&max_poll_interval_ms=10000&static_membership=false"
)


class TestKafkaBus(BusContract):
    @pytest.fixture
    def bus_factory(self, kafka_server: Server) -> Iterator[BusFactory]:
        opened: list[Bus] = []

        def factory() -> Bus:
            opened.append(open_bus(f"{kafka_server.url}?{OPTIONS}"))
            return opened[-1]

        yield factory
        for bus in opened:
            bus.close()
