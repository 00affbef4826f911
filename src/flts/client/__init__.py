"""A Python client of FLTS: :class:`FLTSClient` (sync) and :class:`AsyncFLTSClient`, over
httpx (``pip install 'flts[client]'``).

::

    from flts.client import FLTSClient

    with FLTSClient("http://127.0.0.1:8000", "http://127.0.0.1:8001", api_key=KEY) as flts:
        flts.upload("PobleSec.csv", "PobleSec_test.csv", identifier="PobleSec")
        flts.wait_for_champion("PobleSec")
        frame = flts.forecast("PobleSec", history, intervals=[80])

Refusals are typed errors (:mod:`flts.client.errors`) carrying the server's reasons; the
many-station answers are typed dicts (:mod:`flts.client.answers`).
docs/clients.md shows more.
"""

from flts.client.aio import AsyncFLTSClient
from flts.client.answers import (
    BulkUpload,
    RejectedStation,
    StationRefused,
    StationsObserved,
    StationStored,
)
from flts.client.errors import (
    Conflict,
    ConnectionFailed,
    DeadlineExceeded,
    FLTSClientError,
    Forbidden,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ServerError,
    Unauthorized,
    Unavailable,
    UnsupportedMedia,
    ValidationFailed,
)
from flts.client.sync import FLTSClient

__all__ = [
    "AsyncFLTSClient",
    "BulkUpload",
    "Conflict",
    "ConnectionFailed",
    "DeadlineExceeded",
    "FLTSClient",
    "FLTSClientError",
    "Forbidden",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RejectedStation",
    "ServerError",
    "StationRefused",
    "StationStored",
    "StationsObserved",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMedia",
    "ValidationFailed",
]
