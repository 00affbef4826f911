"""The fleet benchmark's fleet: stations that differ, one bulk CSV pair with an identifier
column, and one upload call that announces every station."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd

from benchmarks.fleet_training import (
    IDENTIFIER_COLUMN,
    TEST_ROWS,
    TRAIN_ROWS,
    station_name,
    station_shape,
    upload_fleet,
    write_fleet,
)
from flts.events import DATASET_UPLOADED, DatasetUploadedEvent, Event
from flts.services.context import ServiceContext


def test_stations_differ_and_come_back_the_same() -> None:
    assert station_shape(3) == station_shape(3)
    assert station_shape(3) != station_shape(4)
    assert station_shape(3, seed=1) != station_shape(3)


def test_one_upload_announces_every_station_of_the_bulk_csv(
    tmp_path: Path, context: ServiceContext
) -> None:
    train_csv, test_csv = write_fleet(tmp_path, 2)
    train, test = pd.read_csv(train_csv), pd.read_csv(test_csv)
    assert train.columns[0] == IDENTIFIER_COLUMN
    names = [station_name(0), station_name(1)]
    assert train[IDENTIFIER_COLUMN].value_counts().to_dict() == dict.fromkeys(names, TRAIN_ROWS)
    assert test[IDENTIFIER_COLUMN].value_counts().to_dict() == dict.fromkeys(names, TEST_ROWS)
    first, second = (train[train[IDENTIFIER_COLUMN] == n]["down"].mean() for n in names)
    assert first != second

    announced = upload_fleet(context, train_csv, test_csv)
    assert sorted(announced) == names
    seen: list[Event] = []
    context.bus.consume(
        DATASET_UPLOADED, f"reader-{uuid.uuid4().hex[:8]}", seen.append, max_idle=0.05
    )
    uploads = [e for e in seen if isinstance(e, DatasetUploadedEvent)]
    assert {e.identifier: e.correlation_id for e in uploads} == announced
