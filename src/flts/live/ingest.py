"""Observation ingest shared by the gateway's HTTP routes and the ``observations`` worker:
known identifier, the data contract's cell checks, the per-request row limit, then the
append-only :class:`~flts.live.observations.ObservationLog`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pandas as pd

from flts.data.reader import validate_rows
from flts.events import OBSERVATIONS_STORED, ObservationsStored, new_event
from flts.exceptions import DataValidationError, FLTSError, NotFoundError, PayloadTooLargeError
from flts.live.observations import Appended, ObservationLog
from flts.promotion import PromotionStore
from flts.services.context import ServiceContext

log = logging.getLogger(__name__)


@dataclass
class StationsOutcome:
    """What a many-station request did: each stored station's append, each rejected one's
    error (a :class:`NotFoundError` or :class:`DataValidationError`)."""

    stored: list[Appended] = field(default_factory=list)
    rejected: list[tuple[str, FLTSError]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON answer: totals and one entry per station, in the request's order of
        stored then rejected ones."""
        return {
            "stored": len(self.stored),
            "rejected": len(self.rejected),
            "accepted": sum(done.accepted for done in self.stored),
            "duplicates": sum(done.duplicates for done in self.stored),
            "stations": [{"status": "stored", **done.summary()} for done in self.stored]
            + [
                {
                    "identifier": identifier,
                    "status": "rejected",
                    "http_status": exc.http_status,
                    "problems": list(exc.problems),
                }
                for identifier, exc in self.rejected
            ],
        }


class ObservationIngest:
    """Validate and store observation rows for identifiers that have a champion."""

    def __init__(self, context: ServiceContext) -> None:
        settings = context.settings
        self.spec = settings.feature_spec
        self.max_rows = settings.live.max_rows_per_request
        self.store = context.store
        self.bus = context.bus
        self.log = ObservationLog(
            context.store,
            self.spec,
            late_window=timedelta(minutes=settings.live.late_window_minutes),
            compact_after_parts=settings.live.compact_after_parts,
        )

    def check_known(self, identifier: str) -> None:
        """A station is known once a model was promoted for it: live rows extend an uploaded
        history, they do not start one (its columns, grid and model come from the upload)."""
        if not self.store.exists(PromotionStore.pointer_key(identifier)):
            raise NotFoundError(
                f"unknown identifier {identifier!r}: no model has been promoted for it; "
                "upload its dataset (POST /v1/datasets) first"
            )

    def check_size(self, rows: int) -> None:
        if rows > self.max_rows:
            raise PayloadTooLargeError(
                f"{rows} observation rows in one request; the limit is {self.max_rows} "
                "(live.max_rows_per_request): send them in several requests or upload a dataset"
            )

    def ingest_records(self, identifier: str, records: list[dict[str, Any]]) -> Appended:
        """Rows as JSON objects (numbers, numeric text or null), named ``rows i`` in errors."""
        self.check_size(len(records))
        self.check_known(identifier)
        rows = validate_rows(pd.DataFrame.from_records(records), self.spec)
        return self._announce(self.log.append(identifier, rows))

    def ingest_stations(
        self, batches: Sequence[tuple[str, list[dict[str, Any]]]]
    ) -> StationsOutcome:
        """Several stations' rows in one request, each checked and stored on its own: a
        station that is unknown or whose rows break the data contract is reported with its
        problems while the others are stored. The row limit counts the whole request (413);
        an outage of the store propagates (503: the caller retries the request, which is
        idempotent on identifier and time)."""
        self.check_size(sum(len(rows) for _, rows in batches))
        outcome = StationsOutcome()
        for identifier, records in batches:
            try:
                outcome.stored.append(self.ingest_records(identifier, records))
            except (DataValidationError, NotFoundError) as exc:
                outcome.rejected.append((identifier, exc))
        return outcome

    def ingest_frame(self, identifier: str, read: Callable[[], pd.DataFrame]) -> Appended:
        """Rows read and checked by ``read`` (e.g. a CSV body, errors named by CSV line)."""
        self.check_known(identifier)
        rows = read()
        self.check_size(len(rows))
        return self._announce(self.log.append(identifier, rows))

    def _announce(self, done: Appended) -> Appended:
        """Publish ``observations-stored`` for new rows, best effort: the rows are stored by
        now, and a lost announcement only skips one pushed forecast (the next row's
        announcement names the newest rows), so a bus outage must not fail the request."""
        if done.accepted and done.first is not None and done.newest is not None:
            payload = ObservationsStored(
                accepted=done.accepted, first=done.first.isoformat(), newest=done.newest.isoformat()
            )
            try:
                self.bus.publish(
                    OBSERVATIONS_STORED, new_event(payload, identifier=done.identifier)
                )
            except FLTSError as exc:
                log.warning("%s: observations stored but not announced: %s", done.identifier, exc)
        return done

    def close(self) -> None:
        self.log.close()
