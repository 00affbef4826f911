"""Load test of an FLTS inference deployment (embedded, compose, Kubernetes) or, for the
comparison, of the same model behind ``mlflow models serve``.

Real windows: ``--windows-csv`` names a traffic CSV (e.g. ``PobleSec_test.csv``); consecutive
``--window-rows`` rows become one request's history, exactly as a client would send them.
Before any user starts, the test waits for readiness (``/readyz`` 200 for FLTS, ``/ping`` for
MLflow), so model loading never counts as failures.

User classes (pick one on the command line; see docs/performance.md for scenarios):

* ``FltsUser``: ``POST /v1/forecast`` and ``POST /v1/forecast/batch`` (``--batch-size``
  windows per request in the form ``--batch-form`` names: ``rows``, the ``requests`` of one
  history each; ``windows``, the tensor form as JSON numbers; ``encoded``, the tensor form as
  base64 float64 bytes), mixed by ``--forecast-mix`` (``single``, ``batch`` or ``mixed``: 9
  to 1).
* ``MlflowUser``: the same histories in MLflow's input format (``dataframe_records``) to
  ``POST /invocations``.

``--rate-per-user R`` paces each user at R requests/s (open-loop-like load at a chosen
throughput); 0 (default) sends the next request as soon as the previous answer arrives.
``--request-log FILE`` writes every request's (start time, latency ms, ok, run id) as JSON at
the end, for exact percentiles and swap timing (latencies in Locust's own stats are rounded
to whole milliseconds).

Examples::

    locust -f loadtest/locustfile.py --headless -u 20 -r 20 -t 1m -H http://127.0.0.1:8000 \\
        --windows-csv ../shared/datasets/PobleSec_test.csv FltsUser
"""

from __future__ import annotations

import base64
import csv
import itertools
import json
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, constant, constant_throughput, events, task
from locust.env import Environment

#: Seconds to wait for readiness before giving up (a cold start takes ~2 s).
READY_TIMEOUT = 120.0
#: Distinct payloads built from the CSV and reused round-robin.
MAX_PAYLOADS = 512
#: Rows per window of synthetic traffic when no CSV is given (FLTS's default lags).
DEFAULT_ROWS = 10

_state: dict[str, Any] = {"log": [], "single": [], "batch": [], "mlflow": []}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--windows-csv", default="", help="Traffic CSV to take windows from.")
    parser.add_argument("--window-rows", type=int, default=DEFAULT_ROWS, help="Rows per window.")
    parser.add_argument("--batch-size", type=int, default=32, help="Windows per batch request.")
    parser.add_argument(
        "--batch-form", default="rows", choices=["rows", "windows", "encoded"], help="Batch form."
    )
    parser.add_argument(
        "--forecast-mix", default="mixed", choices=["single", "batch", "mixed"], help="Tasks."
    )
    parser.add_argument("--identifier", default="", help="Identifier to forecast for.")
    parser.add_argument("--rate-per-user", type=float, default=0.0, help="0: closed loop.")
    parser.add_argument("--think-time", type=float, default=0.0, help="Max random pause (s).")
    parser.add_argument("--request-log", default="", help="Write per-request records here.")
    parser.add_argument("--skip-ready-wait", action="store_true", help="Do not wait for ready.")


def _windows(path: str, rows: int) -> list[list[dict[str, Any]]]:
    """Consecutive ``rows``-row histories from a CSV (numbers as JSON numbers)."""
    if not path:
        return [_synthetic_window(rows, offset) for offset in range(64)]
    with Path(path).open(newline="") as handle:
        records = list(csv.DictReader(handle))
    out: list[list[dict[str, Any]]] = []
    for start in range(0, len(records) - rows + 1, rows):
        out.append([_typed(r) for r in records[start : start + rows]])
        if len(out) >= MAX_PAYLOADS:
            break
    if not out:
        raise SystemExit(f"{path} has fewer than {rows} rows")
    return out


def _typed(record: dict[str, str]) -> dict[str, Any]:
    return {k: (v if k == "time" else float(v or 0.0)) for k, v in record.items()}


def _synthetic_window(rows: int, offset: int) -> list[dict[str, Any]]:
    columns = (
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
    start = 1_517_788_800 + offset * rows * 120
    return [
        {
            "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + 120 * i)),
            **{c: float(1 + (i + offset + k) % 7) for k, c in enumerate(columns)},
        }
        for i in range(rows)
    ]


def _compact(document: Any) -> bytes:
    """JSON without optional spaces, as client libraries send it."""
    return json.dumps(document, separators=(",", ":")).encode()


def _batch_body(
    histories: list[list[dict[str, Any]]], extra: dict[str, Any], form: str
) -> dict[str, Any]:
    """One batch request in ``form`` (see the module doc)."""
    if form == "rows":
        return {"requests": [{**extra, "history": history} for history in histories]}
    columns = [name for name in histories[0][0] if name != "time"]
    windows = [[[row[c] for c in columns] for row in history] for history in histories]
    body = {**extra, "columns": columns, "end_times": [h[-1]["time"] for h in histories]}
    if form == "windows":
        return {**body, "windows": windows}
    values = [value for window in windows for row in window for value in row]
    data = struct.pack(f"<{len(values)}d", *values)
    shape = [len(windows), len(windows[0]), len(columns)]
    encoded = {"dtype": "float64", "shape": shape, "base64": base64.b64encode(data).decode()}
    return {**body, "encoded_windows": encoded}


def _wait_ready(host: str, path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(host.rstrip("/") + path, timeout=2.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{host}{path} was not ready within {READY_TIMEOUT:.0f} s")
        time.sleep(0.1)


@events.test_start.add_listener
def _prepare(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    assert options is not None
    windows = _windows(options.windows_csv, options.window_rows)
    extra = {"identifier": options.identifier} if options.identifier else {}
    _state["single"] = [_compact({**extra, "history": w}) for w in windows]
    size = max(1, options.batch_size)
    cycle = itertools.cycle(windows)
    _state["batch"] = [
        _compact(_batch_body([next(cycle) for _ in range(size)], extra, options.batch_form))
        for _ in range(min(16, len(windows)))
    ]
    _state["mlflow"] = [_compact({"dataframe_records": w}) for w in windows]
    if not options.skip_ready_wait and environment.host:
        mlflow = any(cls.__name__ == "MlflowUser" for cls in environment.user_classes)
        _wait_ready(environment.host, "/ping" if mlflow else "/readyz")


@events.request.add_listener
def _log(
    request_type: str,
    name: str,
    response_time: float,
    response: Any,
    exception: Any,
    start_time: float,
    **_: Any,
) -> None:
    if _state.get("log_path"):
        run_id = ""
        if response is not None and getattr(response, "headers", None) is not None:
            run_id = response.headers.get("X-Model-Run-Id") or ""
        _state["log"].append((start_time, response_time, exception is None, run_id))


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    _state["log_path"] = options.request_log if options is not None else ""


@events.quitting.add_listener
def _write_log(environment: Environment, **_: Any) -> None:
    path = _state.get("log_path")
    if path:
        Path(path).write_text(json.dumps(_state["log"]))


def _wait_time(user: Any) -> float:
    options = user.environment.parsed_options
    if options.rate_per_user > 0:
        return float(constant_throughput(options.rate_per_user)(user))
    if options.think_time > 0:
        return float(between(0.0, options.think_time)(user))
    return float(constant(0)(user))


_JSON_HEADERS = {"content-type": "application/json"}


class FltsUser(FastHttpUser):
    """Forecasts from an FLTS inference API."""

    wait_time = _wait_time

    def on_start(self) -> None:
        self._single = itertools.cycle(_state["single"])
        self._batch = itertools.cycle(_state["batch"])
        self._mix = self.environment.parsed_options.forecast_mix

    @task(9)
    def single(self) -> None:
        if self._mix == "batch":
            self.batch()
            return
        self.client.post("/v1/forecast", data=next(self._single), headers=_JSON_HEADERS)

    @task(1)
    def batch(self) -> None:
        if self._mix == "single":
            self.single()
            return
        self.client.post(
            "/v1/forecast/batch",
            data=next(self._batch),
            headers=_JSON_HEADERS,
            name="/v1/forecast/batch",
        )


class MlflowUser(FastHttpUser):
    """The same histories to ``mlflow models serve`` (``dataframe_records``)."""

    wait_time = _wait_time

    def on_start(self) -> None:
        self._payloads = itertools.cycle(_state["mlflow"])

    @task
    def invocations(self) -> None:
        self.client.post("/invocations", data=next(self._payloads), headers=_JSON_HEADERS)
