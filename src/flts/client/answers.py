"""The shapes of the gateway's many-station answers, as :class:`~typing.TypedDict`: they stay
the plain dicts every other :mod:`flts.client` method returns (the server's JSON, untouched),
while a type checker knows their keys. docs/clients.md ("Bulk uploads and many stations'
observations") describes each field.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class RejectedStation(TypedDict):
    """A station a bulk upload left out of its group, with every reason."""

    identifier: str
    problems: list[str]


class BulkUpload(TypedDict):
    """What a bulk upload (``POST /v1/datasets`` with many stations) stored.

    ``datasets`` holds each accepted station's metadata, as :meth:`FLTSClient.upload`
    returns it for one station (with its ``group``). ``pending`` names the dataset ids of
    accepted stations not announced yet: it is empty unless an outage interrupted the
    announcements (the gateway's 202), and then ``detail`` says so. Either way the upload is
    done and must not be repeated: the gateway announces the pending stations itself once the
    outage is over, while a repeat would store every station again as a second group."""

    group: str
    accepted: int
    datasets: list[dict[str, Any]]
    rejected: list[RejectedStation]
    pending: list[str]
    detail: NotRequired[str]


class StationStored(TypedDict):
    """One station of a many-station ``POST /v1/observations`` whose rows were all stored.

    ``first`` and ``last`` are the times of the rows sent, ``newest`` the station's newest
    stored time afterwards (ISO 8601)."""

    status: Literal["stored"]
    identifier: str
    accepted: int
    duplicates: int
    first: str | None
    last: str | None
    newest: str | None


class StationRefused(TypedDict):
    """One station of a many-station ``POST /v1/observations`` of which nothing was stored:
    ``http_status`` is what it alone would have answered (404: no champion yet; 422: its
    rows), ``problems`` every reason."""

    status: Literal["rejected"]
    identifier: str
    http_status: int
    problems: list[str]


class StationsObserved(TypedDict):
    """The answer of a many-station ``POST /v1/observations``: totals over the stations,
    and one result per station, the stored ones first, then the refused ones."""

    stored: int
    rejected: int
    accepted: int
    duplicates: int
    stations: list[StationStored | StationRefused]
