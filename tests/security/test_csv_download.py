"""Dataset downloads escape spreadsheet formulas (CSV injection) and leave numbers, negative
ones included, exactly as uploaded."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from flts.data.synthetic import synthetic_traffic
from flts.security.spreadsheet import escape_formulas, needs_escape
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from helpers import memory_settings

from .support import AsgiClient, Keys, make_keys


@pytest.mark.parametrize(
    ("cell", "escaped"),
    [
        ('=HYPERLINK("http://x")', True),
        ("+cmd|' /C calc'!A0", True),
        ("-2+3+cmd|' /C calc'!A0", True),
        ("@SUM(A1:A2)", True),
        ("\t=1", True),
        ("-2.5", False),
        ("+1e3", False),
        ("-inf", False),
        ("-0", False),
        ("2018-02-05 00:00:00", False),
        ("plain", False),
        ("", False),
    ],
)
def test_needs_escape(cell: str, escaped: bool) -> None:
    assert needs_escape(cell) is escaped


def test_escape_formulas_keeps_numbers_and_untouched_files() -> None:
    clean = b"time,down\n2018-01-01 00:00:00,-1.5\n2018-01-01 00:02:00,+2\n"
    assert escape_formulas(clean) is clean  # nothing to escape: the stored bytes
    hostile = b'time,note,down\n2018,"=1+1",-1.5\n2018,"@x, y",3\n'
    rows = list(pd.read_csv(io.BytesIO(escape_formulas(hostile)), dtype=str).itertuples())
    assert [(r.note, r.down) for r in rows] == [("'=1+1", "-1.5"), ("'@x, y", "3")]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[AsgiClient, Keys]]:
    keys = make_keys(tmp_path)
    context = ServiceContext(memory_settings(tmp_path, security={"keys_file": keys.path}))
    yield AsgiClient(create_gateway_app(context)), keys
    context.close()


def test_download_escapes_formula_cells(gateway: tuple[AsgiClient, Keys]) -> None:
    client, keys = gateway
    frame = synthetic_traffic(300, seed=3)
    frame["note"] = ['=HYPERLINK("http://evil","x")', "-3.25", "@SUM(1)", "ok"] * 75
    frame.loc[0, "down"] = -1.5  # a negative number stays a number
    body = frame.to_csv(index=False).encode()
    headers = keys.header(keys.upload)
    uploaded = client.request(
        "POST", "/v1/datasets", files={"train": ("t.csv", body, "text/csv")}, headers=headers
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()["dataset_id"]
    answer = client.request("GET", f"/v1/datasets/{dataset}/train.csv", headers=headers)
    assert answer.status_code == 200
    assert answer.headers["x-content-type-options"] == "nosniff"
    served = pd.read_csv(io.BytesIO(answer.content), dtype=str)
    assert list(served["note"][:4]) == [
        '\'=HYPERLINK("http://evil","x")',
        "-3.25",
        "'@SUM(1)",
        "ok",
    ]
    original = pd.read_csv(io.BytesIO(body), dtype=str)
    assert served.drop(columns="note").equals(original.drop(columns="note"))
    assert served["down"][0] == "-1.5"
