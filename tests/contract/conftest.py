"""Real servers for the contract suites, started once per session and only when a test asks
(so ``pytest tests/unit`` starts nothing): SeaweedFS for the S3 object store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from servers.s3 import SeaweedFS, start_seaweedfs

#: The bucket the S3 contract tests write under (each test in its own prefix).
CONTRACT_BUCKET = "flts-contract"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A private ``weed mini`` on free loopback ports, with :data:`CONTRACT_BUCKET`."""
    with start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), [CONTRACT_BUCKET]) as server:
        yield server
