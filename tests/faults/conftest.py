"""Fault-injection suite (``make faults``): each case breaks something real (a bus row, a
server, a process, an artifact) against the servers the other suites start, and asserts that
nothing accepted is lost and the work completes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from servers.s3 import SeaweedFS, start_seaweedfs

#: The bucket the fault tests write under (each test in its own prefix).
FAULTS_BUCKET = "flts-faults"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A private ``weed mini`` on free loopback ports, started on first use."""
    with start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), [FAULTS_BUCKET]) as server:
        yield server
