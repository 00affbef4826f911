"""Request bodies built from real traffic windows, shared by the Locust scenarios
(``locustfile.py``, which imports this file as ``payloads``: Locust puts the locustfile's
directory on the path) and the wrk serving benchmark (``benchmarks/serve.py``, as
``loadtest.payloads`` from the checkout).

A window is ``rows`` consecutive rows of a traffic CSV, exactly as a client would send them as
a forecast's history; without a CSV, small synthetic windows stand in. Bodies are compact JSON
bytes, as client libraries send them.
"""

from __future__ import annotations

import base64
import csv
import json
import struct
import time
from pathlib import Path
from typing import Any

#: Distinct windows taken from a CSV (bodies are reused round-robin).
MAX_WINDOWS = 512
#: Rows per window (FLTS's default lags).
DEFAULT_ROWS = 10
#: Batch body forms of ``POST /v1/forecast/batch``: one history per item (``rows``), the
#: tensor form as JSON numbers (``windows``) and as base64 float64 bytes (``encoded``).
BATCH_FORMS = ("rows", "windows", "encoded")

History = list[dict[str, Any]]

_SYNTHETIC_COLUMNS = (
    "down",
    "up",
    "rnti_count",
    "mcs_down",
    "mcs_down_var",
    "mcs_up",
    "mcs_up_var",
    "rb_down",
    "rb_down_var",
    "rb_up",
    "rb_up_var",
)


def windows(path: str | Path | None, rows: int = DEFAULT_ROWS) -> list[History]:
    """Consecutive, non-overlapping ``rows``-row histories of the CSV at ``path`` (numbers as
    JSON numbers), at most :data:`MAX_WINDOWS`; synthetic ones when ``path`` is empty."""
    if not path:
        return [_synthetic_window(rows, offset) for offset in range(64)]
    with Path(path).open(newline="") as handle:
        records = list(csv.DictReader(handle))
    out: list[History] = []
    for start in range(0, len(records) - rows + 1, rows):
        out.append([_typed(r) for r in records[start : start + rows]])
        if len(out) >= MAX_WINDOWS:
            break
    if not out:
        raise SystemExit(f"{path} has fewer than {rows} rows")
    return out


def compact(document: Any) -> bytes:
    """JSON without optional spaces."""
    return json.dumps(document, separators=(",", ":")).encode()


def forecast_body(history: History, extra: dict[str, Any]) -> bytes:
    """A ``POST /v1/forecast`` body (``extra``: e.g. the identifier)."""
    return compact({**extra, "history": history})


def mlflow_body(history: History) -> bytes:
    """The same history in ``mlflow models serve``'s input format (``POST /invocations``)."""
    return compact({"dataframe_records": history})


def oip_body(history: History, columns: list[str]) -> bytes:
    """The same history as an Open Inference Protocol v2 request
    (``POST /v2/models/{name}/infer``): the input ``window`` ``[rows, features]`` in
    ``columns`` order and the input ``end_time``, the time of its last row."""
    data = [row[c] for row in history for c in columns]
    window = {"name": "window", "shape": [len(history), len(columns)], "datatype": "FP64"}
    end = {"name": "end_time", "shape": [1], "datatype": "BYTES", "data": [history[-1]["time"]]}
    return compact({"inputs": [{**window, "data": data}, end]})


def batch_body(histories: list[History], extra: dict[str, Any], form: str) -> bytes:
    """One ``POST /v1/forecast/batch`` body of ``histories`` in ``form`` (:data:`BATCH_FORMS`)."""
    if form == "rows":
        return compact({"requests": [{**extra, "history": history} for history in histories]})
    columns = [name for name in histories[0][0] if name != "time"]
    tensor = [[[row[c] for c in columns] for row in history] for history in histories]
    body = {**extra, "columns": columns, "end_times": [h[-1]["time"] for h in histories]}
    if form == "windows":
        return compact({**body, "windows": tensor})
    if form != "encoded":
        raise ValueError(f"unknown batch form {form!r}: one of {', '.join(BATCH_FORMS)}")
    values = [value for window in tensor for row in window for value in row]
    data = struct.pack(f"<{len(values)}d", *values)
    shape = [len(tensor), len(tensor[0]), len(columns)]
    encoded = {"dtype": "float64", "shape": shape, "base64": base64.b64encode(data).decode()}
    return compact({**body, "encoded_windows": encoded})


def _typed(record: dict[str, str]) -> dict[str, Any]:
    return {k: (v if k == "time" else float(v or 0.0)) for k, v in record.items()}


def _synthetic_window(rows: int, offset: int) -> History:
    start = 1_517_788_800 + offset * rows * 120
    return [
        {
            "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + 120 * i)),
            **{c: float(1 + (i + offset + k) % 7) for k, c in enumerate(_SYNTHETIC_COLUMNS)},
        }
        for i in range(rows)
    ]
