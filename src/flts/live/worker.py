"""``flts worker observations``: the ``observations`` topic into the observation log, for
producers that stream rows instead of posting them (same checks as ``POST /v1/observations``).
"""

from __future__ import annotations

import logging

from flts.events import OBSERVATIONS, Event, ObservationsEvent
from flts.exceptions import DataValidationError, RequestError
from flts.live.ingest import ObservationIngest
from flts.services.context import ServiceContext

log = logging.getLogger(__name__)


class ObservationsService:
    """Append each event's rows; rows that can never be stored are dead-lettered at once."""

    topics = (OBSERVATIONS,)
    group = "observations"

    def __init__(self, context: ServiceContext) -> None:
        self.ingest = ObservationIngest(context)

    def handle(self, event: Event) -> None:
        if not isinstance(event, ObservationsEvent):
            return
        identifier = event.identifier
        try:
            done = self.ingest.ingest_records(identifier, [dict(r) for r in event.payload.rows])
        except RequestError as exc:  # unknown station, too many rows: bad data, not an outage
            raise DataValidationError(*exc.problems) from exc
        log.info(
            "%s: %d observations stored, %d duplicates, newest %s",
            identifier,
            done.accepted,
            done.duplicates,
            done.newest,
        )
