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

import itertools
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from locust import FastHttpUser, between, constant, constant_throughput, events, task
from locust.env import Environment
from payloads import BATCH_FORMS, DEFAULT_ROWS, batch_body, forecast_body, mlflow_body, windows

#: Seconds to wait for readiness before giving up (a cold start takes ~2 s).
READY_TIMEOUT = 120.0

_state: dict[str, Any] = {"log": [], "single": [], "batch": [], "mlflow": []}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--windows-csv", default="", help="Traffic CSV to take windows from.")
    parser.add_argument("--window-rows", type=int, default=DEFAULT_ROWS, help="Rows per window.")
    parser.add_argument("--batch-size", type=int, default=32, help="Windows per batch request.")
    parser.add_argument("--batch-form", default="rows", choices=BATCH_FORMS, help="Batch form.")
    parser.add_argument(
        "--forecast-mix", default="mixed", choices=["single", "batch", "mixed"], help="Tasks."
    )
    parser.add_argument("--identifier", default="", help="Identifier to forecast for.")
    parser.add_argument("--rate-per-user", type=float, default=0.0, help="0: closed loop.")
    parser.add_argument("--think-time", type=float, default=0.0, help="Max random pause (s).")
    parser.add_argument("--request-log", default="", help="Write per-request records here.")
    parser.add_argument("--skip-ready-wait", action="store_true", help="Do not wait for ready.")


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
    histories = windows(options.windows_csv, options.window_rows)
    extra = {"identifier": options.identifier} if options.identifier else {}
    _state["single"] = [forecast_body(h, extra) for h in histories]
    size = max(1, options.batch_size)
    cycle = itertools.cycle(histories)
    _state["batch"] = [
        batch_body([next(cycle) for _ in range(size)], extra, options.batch_form)
        for _ in range(min(16, len(histories)))
    ]
    _state["mlflow"] = [mlflow_body(h) for h in histories]
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


#: FLTS_API_KEY (a key with the forecast scope) is sent as a bearer token when set: an
#: inference API with a keys file refuses requests without one (docs/security.md).
_JSON_HEADERS = {"content-type": "application/json"} | (
    {"authorization": f"Bearer {os.environ['FLTS_API_KEY']}"}
    if os.environ.get("FLTS_API_KEY")
    else {}
)


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
