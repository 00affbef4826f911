"""The synchronous client, :class:`FLTSClient` (the async twin is
:class:`flts.client.aio.AsyncFLTSClient`; both send the calls of :mod:`flts.client.calls`)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import pandas as pd

from flts.client import calls
from flts.client.answers import BulkUpload, StationsObserved
from flts.client.calls import TIME_COLUMN, Call, CsvSource, StationFiles
from flts.client.errors import ConnectionFailed, FLTSClientError, Unavailable, error_from
from flts.client.settings import ClientSettings

T = TypeVar("T")


class FLTSClient:
    """FLTS over HTTP: uploads to the gateway, forecasts from the inference API.

    ``api_url`` and ``gateway_url`` are the two services (either may be omitted when only the
    other is used); ``api_key`` is sent as ``Authorization: Bearer``; ``timeout`` is httpx's
    per-request timeout in seconds; a 503 or 429 is retried up to ``retries`` times after the
    server's ``Retry-After`` (each wait at most ``max_retry_wait`` seconds), except uploads.
    """

    def __init__(
        self,
        api_url: str | None = "http://127.0.0.1:8000",
        gateway_url: str | None = "http://127.0.0.1:8001",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        time_column: str = TIME_COLUMN,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = ClientSettings(
            api_url, gateway_url, api_key, timeout, retries, max_retry_wait, time_column
        )
        headers = self.settings.headers()
        self._clients = {
            name: httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)
            for name, url in self.settings.urls().items()
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def _send(self, call: Call[T]) -> T:
        client = self._clients.get(call.service)
        if client is None:
            raise FLTSClientError(self.settings.missing(call.service))
        attempt = 0
        while True:
            try:
                response = client.request(call.method, call.path, **call.options())
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"{call.method} {call.path}: {exc}") from exc
            if response.status_code in call.accept:
                return call.read(response)
            error = error_from(response)
            wait = (
                calls.retry_delay(
                    error, attempt, self.settings.retries, self.settings.max_retry_wait
                )
                if call.retry
                else None
            )
            if wait is None:
                raise error
            time.sleep(wait)
            attempt += 1

    # ------------------------------------------------------------------ inference API

    def forecast(
        self,
        identifier: str | None = None,
        history: pd.DataFrame | None = None,
        *,
        horizon: int = 1,
        intervals: Sequence[float] = (),
    ) -> pd.DataFrame:
        """The forecast of the next ``horizon`` steps after ``history`` (None: after the
        station's stored observations), indexed by step and target time, with interval
        columns for ``intervals`` (levels in percent)."""
        return self._send(
            calls.forecast(
                identifier,
                history,
                horizon=horizon,
                intervals=intervals,
                time_column=self.settings.time_column,
            )
        )

    def forecast_batch(
        self,
        histories: Sequence[pd.DataFrame],
        identifier: str | None = None,
        *,
        horizon: int = 1,
        intervals: Sequence[float] = (),
    ) -> list[pd.DataFrame]:
        """One forecast per history in one call (all succeed or the call fails)."""
        return self._send(
            calls.forecast_batch(
                identifier,
                histories,
                horizon=horizon,
                intervals=intervals,
                time_column=self.settings.time_column,
            )
        )

    def champion(self, identifier: str | None = None) -> dict[str, Any]:
        """The champion serving ``identifier``: run, scores, feature spec."""
        return self._send(calls.champion(identifier))

    def models(self) -> list[dict[str, Any]]:
        """Every model the replica serves."""
        return self._send(calls.models())

    def status(self) -> dict[str, Any]:
        """Readiness of the replica: ``ready``, ``status`` (ready, degraded, unavailable) and
        the run served per identifier."""
        return self._send(calls.status())

    def wait_for_champion(
        self,
        identifier: str | None = None,
        *,
        timeout: float = 600.0,
        poll: float = 2.0,
        other_than: str | None = None,
    ) -> dict[str, Any]:
        """The champion of ``identifier`` once one is served (and its run is not
        ``other_than``: a new promotion); :class:`Unavailable` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                described = self._send(calls.champion(identifier))
                if described.get("run_id") != other_than:
                    return described
            except Unavailable:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"no new champion for {identifier!r} within {timeout:g} s")
            time.sleep(poll)

    # ------------------------------------------------------------------ gateway

    def upload(
        self,
        train: CsvSource,
        test: CsvSource | None = None,
        *,
        identifier: str = "global",
        horizon: int | None = None,
        lags: int | None = None,
    ) -> dict[str, Any]:
        """Upload a training CSV (and its test CSV): the stored dataset's metadata."""
        return self._send(
            calls.upload(train, test, identifier=identifier, horizon=horizon, lags=lags)
        )

    def upload_fleet(
        self,
        train: CsvSource,
        test: CsvSource | None = None,
        *,
        identifier_column: str,
        horizon: int | None = None,
        lags: int | None = None,
    ) -> BulkUpload:
        """Upload many stations in one CSV (and its test CSV) whose ``identifier_column``
        names each row's station: one dataset per accepted station, all in one group, and
        the rejected stations with their problems.

        Nothing is retried, and a non-empty ``pending`` (an outage while announcing) is
        still success: the gateway announces those stations itself. :class:`ValidationFailed`
        when no station passes, with every station's problems."""
        return self._send(
            calls.upload_fleet(
                train, test, identifier_column=identifier_column, horizon=horizon, lags=lags
            )
        )

    def upload_stations(
        self,
        trains: StationFiles,
        tests: StationFiles | None = None,
        *,
        horizon: int | None = None,
        lags: int | None = None,
    ) -> BulkUpload:
        """Upload many stations, one training file each: ``{station: csv}`` (sent as
        ``<station>.csv``, its test as ``<station>_test.csv``) or paths whose stems name the
        stations. A station without a test file holds out its last rows. Answers as
        :meth:`upload_fleet`; at least two stations (one is :meth:`upload`)."""
        return self._send(calls.upload_stations(trains, tests, horizon=horizon, lags=lags))

    def datasets(self, identifier: str | None = None) -> list[dict[str, Any]]:
        """Metadata of the stored datasets, newest first."""
        return self._send(calls.datasets(identifier))

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._send(calls.dataset(dataset_id))

    def post_observations(self, identifier: str, rows: pd.DataFrame) -> dict[str, Any]:
        """Append a station's new rows (idempotent on identifier and time)."""
        return self._send(calls.post_observations(identifier, rows, self.settings.time_column))

    def post_fleet_observations(self, stations: Mapping[str, pd.DataFrame]) -> StationsObserved:
        """Append many stations' new rows in one request, ``{identifier: rows}``: each
        station is stored whole or refused with its problems (``stations`` in the answer
        says which) while the others go on. :class:`NotFound` when no station has a
        champion, :class:`ValidationFailed` when none was stored otherwise."""
        return self._send(calls.post_fleet_observations(stations, self.settings.time_column))
