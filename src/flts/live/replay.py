"""Replay a traffic CSV as live observations (``flts replay``, and the end of ``make run``).

Rows are sent to the gateway's ``POST /v1/observations`` at their own cadence sped up by
``speed`` (600: the 2-minute rows of an hour in 6 s): row ``i`` is due ``(t_i - t_0) / speed``
seconds after the start, and every row due by the time a request leaves goes in it, so a fast
replay sends fewer, larger requests instead of falling behind. ``shift_after`` / ``scale``
multiply the chosen columns from that row on: an injected regime change for the drift
detector to find. The rows are checked with the upload's data contract before anything is
sent. A gateway that is unreachable or answers 503 is retried with backoff (re-sending is
harmless: the observation log counts a row once); any other refusal stops the replay with
the gateway's reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from flts.data.reader import read_traffic_csv
from flts.data.spec import FeatureSpec
from flts.exceptions import ConfigurationError, DataValidationError, FLTSError, UnavailableError
from flts.live.observations import cell_value

log = logging.getLogger(__name__)

#: Longest wait between two attempts while the gateway is down.
MAX_BACKOFF_SECONDS = 10.0


@dataclass
class ReplayReport:
    """What a replay did."""

    rows: int = 0
    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    retries: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "requests": self.requests,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
        }


def replay_rows(
    csv: Path,
    spec: FeatureSpec,
    *,
    shift_after: int | None = None,
    scale: float = 1.0,
    columns: tuple[str, ...] = ("down", "up"),
) -> list[dict[str, Any]]:
    """The CSV's rows as observation records, ``columns`` times ``scale`` from row
    ``shift_after`` (0-based) on; a file that breaks the data contract is refused whole."""
    frame = read_traffic_csv(csv, spec, min_rows=1).frame
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        raise DataValidationError(f"cannot scale unknown columns {unknown}")
    if shift_after is not None and scale != 1.0:
        frame.loc[frame.index[shift_after:], list(columns)] *= scale
    records = frame.reset_index().to_dict("records")
    time_column = spec.time_column
    return [
        {str(k): (v.isoformat() if k == time_column else cell_value(v)) for k, v in row.items()}
        for row in records
    ]


def replay(
    rows: list[dict[str, Any]],
    *,
    identifier: str,
    gateway: str,
    api_key: str | None = None,
    speed: float = 600.0,
    max_rows_per_request: int = 1_000,
    time_column: str = "time",
    on_sent: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> ReplayReport:
    """Send ``rows`` (see module doc); ``on_sent(n)`` after each request, ``stop()`` ends the
    replay early between requests."""
    report = ReplayReport()
    if not rows:
        return report
    times = pd.DatetimeIndex([row[time_column] for row in rows])
    due = ((times - times[0]).total_seconds() / speed).to_numpy()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.monotonic()
    sent = 0
    with httpx.Client(base_url=gateway, headers=headers, timeout=30.0) as client:
        while sent < len(rows) and not (stop is not None and stop()):
            wait = started + due[sent] - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elapsed = time.monotonic() - started
            end = sent + 1
            while end < len(rows) and end - sent < max_rows_per_request and due[end] <= elapsed:
                end += 1
            body = {"identifier": identifier, "rows": rows[sent:end]}
            answer = _post(client, body, report)
            report.requests += 1
            report.accepted += int(answer.get("accepted", 0))
            report.duplicates += int(answer.get("duplicates", 0))
            if on_sent is not None:
                on_sent(end - sent)
            sent = end
    report.rows = sent
    report.seconds = time.monotonic() - started
    return report


def _post(client: httpx.Client, body: dict[str, Any], report: ReplayReport) -> dict[str, Any]:
    """One request, retried while the gateway is unreachable or answers 503."""
    backoff = 0.5
    while True:
        try:
            response = client.post("/v1/observations", json=body)
        except httpx.TransportError as exc:
            reason = f"gateway unreachable: {exc}"
        else:
            if response.status_code == 200:
                answer: dict[str, Any] = response.json()
                return answer
            if response.status_code != 503:
                raise _refusal(response)
            reason = "gateway unavailable (503)"
        report.retries += 1
        if report.retries % 10 == 1:
            log.warning("replay: %s; retrying", reason)
        time.sleep(backoff)
        backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)


def _refusal(response: httpx.Response) -> FLTSError:
    try:
        detail = str(response.json().get("detail", response.text))
    except ValueError:
        detail = response.text
    message = f"the gateway refused the observations ({response.status_code}): {detail}"
    if response.status_code in (401, 403):
        return ConfigurationError(f"{message}; give an API key with the upload scope")
    if response.status_code >= 500:
        return UnavailableError(message)
    return DataValidationError(message)
