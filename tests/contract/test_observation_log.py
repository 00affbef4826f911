"""The observation log on the real backends: a local folder and an S3 server (SeaweedFS).
Appends from two threads, re-sends, compaction and a fresh reader see the same rows."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pandas as pd
import pytest

from flts.data import FeatureSpec
from flts.data.reader import validate_rows
from flts.data.synthetic import synthetic_traffic
from flts.live.observations import ObservationLog
from flts.storage import ObjectStore
from servers.s3 import SeaweedFS

from .conftest import CONTRACT_BUCKET

SPEC = FeatureSpec()
SERIES = validate_rows(synthetic_traffic(400, seed=9), SPEC)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return ObjectStore(f"file://{tmp_path / 'store'}")
    seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
    url = f"s3://{CONTRACT_BUCKET}/observations-{uuid.uuid4().hex}"
    return ObjectStore(url, **seaweedfs.credentials.storage_options())


def test_concurrent_appends_resends_and_compaction_keep_every_row_once(
    store: ObjectStore,
) -> None:
    log = ObservationLog(store, SPEC, compact_after_parts=8)
    log.append("S1", SERIES.iloc[:1])  # anchors the grid
    chunks = [SERIES.iloc[i : i + 5] for i in range(1, 400, 5)]
    errors: list[BaseException] = []

    def send(part: list[pd.DataFrame]) -> None:
        try:
            for chunk in part:
                log.append("S1", chunk)
                log.append("S1", chunk)  # a client retrying after a lost answer
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(chunks[k::2],)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    assert errors == []
    keys = list(store.list("observations/S1"))
    assert any("/compacted-" in key for key in keys)
    fresh = ObservationLog(store, SPEC)
    pd.testing.assert_frame_equal(fresh.read("S1"), SERIES, check_freq=False)
    assert fresh.newest("S1") == SERIES.index[-1]
    assert fresh.append("S1", SERIES.iloc[100:200]).duplicates == 100
