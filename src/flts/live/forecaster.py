"""``flts worker forecaster``: a forecast pushed on the ``forecasts`` topic each time a
station's new rows are stored, for consumers that want forecasts without asking.

It is a headless inference replica (:class:`flts.api.app.ServingCore`: the same champions,
hot swap, ledger and answers as ``flts serve``) that, for each ``observations-stored`` event,
forecasts from the station's newest stored rows at the champion's whole horizon, with the
evaluation's interval levels when the model has intervals, records the forecast in the
ledger like any served one (so the monitor scores it) and publishes it. An announcement that
is no longer the newest (rows arrived since) is skipped: the newer one forecasts from them.
Rows that cannot make a window yet (too few, a gap) are skipped with a log line, not
dead-lettered: the next rows may complete the window.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import orjson
import pandas as pd

from flts.api.app import ServingCore, default_replica_id
from flts.api.service import Served
from flts.api.sources import ModelSource
from flts.events import (
    FORECASTS,
    OBSERVATIONS_STORED,
    Event,
    ForecastPublished,
    ObservationsStoredEvent,
    new_event,
)
from flts.exceptions import DataValidationError, ModelUnavailableError
from flts.services.context import ServiceContext

log = logging.getLogger(__name__)


class ForecasterService:
    """See module doc."""

    topics = (OBSERVATIONS_STORED,)
    group = "forecaster"

    def __init__(
        self,
        context: ServiceContext,
        replica_id: str | None = None,
        source: ModelSource | None = None,
    ) -> None:
        self.context = context
        replica = replica_id or f"forecaster-{default_replica_id()}"
        self.core = ServingCore.build(context, replica, source=source, group=f"serve-{replica}")
        self.levels = list(context.settings.evaluation.interval_levels)
        self.published = 0
        # One event loop for every forecast: the service's micro-batcher lives on a loop.
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()

    def handle(self, event: Event) -> None:
        if not isinstance(event, ObservationsStoredEvent):
            return
        if not self._started.is_set():
            self.core.start()
            self._started.set()
        identifier = event.identifier
        observations = self.core.service.observations
        newest = None if observations is None else observations.newest(identifier)
        if newest is not None and newest > pd.Timestamp(event.payload.newest):
            return  # rows arrived since: their own announcement forecasts from them
        try:
            answer = self._loop.run_until_complete(self._forecast(identifier))
        except (DataValidationError, ModelUnavailableError) as exc:
            log.info("%s: no forecast pushed yet: %s", identifier, exc)
            return
        model = answer["model"]
        payload = ForecastPublished(
            run_id=model["run_id"],
            model_type=model["model_type"],
            config_hash=model["config_hash"],
            forecast=answer["forecast"],
            intervals=answer.get("intervals", {}),
        )
        self.context.bus.publish(FORECASTS, new_event(payload, parent=event))
        self.published += 1

    async def _forecast(self, identifier: str) -> dict[str, Any]:
        service = self.core.service
        loaded = service.resolve(identifier)
        body: dict[str, Any] = {"identifier": identifier, "horizon": loaded.spec.horizon}
        if loaded.model.calibration is not None and self.levels:
            body["intervals"] = self.levels
        answer: dict[str, Any] = orjson.loads(await service.forecast(orjson.dumps(body), Served()))
        return answer

    def close(self) -> None:
        if self._started.is_set():
            self.core.stop()
        self._loop.close()
