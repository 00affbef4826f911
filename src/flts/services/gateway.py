"""The upload gateway: CSV in over HTTP, a stored dataset and a ``dataset-uploaded`` event out.

Routes::

    POST /v1/datasets                         multipart: train (file, required), test (file,
                                              optional), identifier (text, default "global"),
                                              horizon, lags (integers, default: the
                                              deployment's feature spec); a bulk upload of
                                              many stations instead sends identifier_column
                                              (one train file, rows tagged by station) or
                                              several train files (flts.fleet.bulk)
    GET  /v1/datasets[?identifier=NAME]       metadata of every stored dataset, newest first
    GET  /v1/datasets/{dataset_id}            metadata of one dataset
    GET  /v1/datasets/{dataset_id}/train.csv  the stored training CSV, formula cells escaped
    GET  /v1/datasets/{dataset_id}/test.csv   the stored test CSV (404 when none was uploaded)
    POST /v1/observations, GET /v1/observations/{identifier}
                                              live rows of a station (:mod:`flts.live.routes`)
    GET  /healthz                             liveness
    POST /v1/admin/promote, /v1/admin/rollback, GET /v1/admin/history: see flts.services.admin
    GET  /ui/                                 the dashboard (flts.ui.routes)

Every route but ``/healthz`` and the dashboard's page and static files needs an API key
(``Authorization: Bearer``): the ``upload`` scope for the datasets and the dashboard's data,
``admin`` for the admin API (:mod:`flts.security.guard`,
docs/security.md).

Errors are problem documents (``application/problem+json`` with ``problems``), rendered by
:mod:`flts.api.errors` exactly as on the inference API, the auth layer's refusals and
FastAPI's own 404, 405 (with the path's ``Allow``) and 422 included; every route documents
the statuses, bodies and content types it answers in ``/openapi.json`` (docs/clients.md,
"HTTP contract").

Upload rules:

* **Size.** The body is read as a stream and counted; past ``gateway.max_upload_bytes`` (plus a
  small allowance for the multipart framing) the request is refused with 413 without reading
  on, and the uploaded files together must not exceed the limit either.
* **Memory.** An upload never sits in memory whole: file parts spill to temporary files past
  1 MiB while the body is read, the CSVs are validated from those files a chunk of rows at a
  time (:data:`flts.data.reader.CHUNK_ROWS`), and the digest and the stored objects are
  streamed from them too. What stays is the parsed numbers (about 120 MiB at the 64 MiB
  limit, while validation runs), so memory is bounded by the number of uploads at once. A
  bulk upload is split into per-station temporary files on disk and validated one station at
  a time, so its memory is that of its largest station, whatever the number of stations.
* **Concurrency.** At most ``gateway.max_concurrent_uploads`` uploads are read, validated and
  stored at once. One more waits up to ``gateway.upload_wait_seconds`` for a slot, then is
  refused with 503 and ``Retry-After`` (``gateway.retry_after_seconds``); its body is read and
  discarded first, so the client gets the answer instead of a reset connection. A refused
  upload stores nothing.
* **Validation.** Both CSVs go through the core's checks (``read_traffic_csv`` with the
  configured feature spec) and the recipe's split, exactly what preprocessing will run, so an
  accepted upload is one the pipeline can process; any problem answers 422 with every problem
  line of both files.
* **No test file.** Accepted: preprocessing holds out the chronologically last
  :data:`~flts.services.preprocess.HOLDOUT_FRACTION` of the training rows as the test set (the
  dataset's metadata says so in ``test_split``). A file too short for that is a 422.
* **Bulk.** With ``identifier_column`` or several ``train`` files the upload is split into
  stations (:mod:`flts.fleet.bulk`), each validated with the checks above on its own; the
  answer is 201 with the group, the accepted stations' metadata and the rejected stations'
  problems, or 422 when none passes. An outage that interrupts the announcements after every
  accepted station is in the outbox answers 202 with the same body, its ``pending`` stations
  announced by the reconciler (see "Outages"). At most ``gateway.max_upload_files`` file
  parts; the byte limit covers the whole request, so a large fleet goes through ``flts
  pipeline`` or :func:`flts.fleet.bulk.ingest_bulk_csv` from a file instead.
* **Keys.** ``dataset_id`` is minted here (UTC time + random hex), never taken from the
  request; the client's file names are sanitised and kept as metadata only; the identifier is
  validated with the event envelope's rules before it goes anywhere.

Layout in the object store: ``datasets/<dataset_id>/train.csv``, ``test.csv`` (when uploaded)
and ``meta.json``, written only after the ``dataset-uploaded`` event was published, so a listed
dataset is always complete *and announced*. In between, ``outbox/<dataset_id>.json`` holds
the event; the gateway's reconciler (:mod:`flts.services.outbox`, at start and every
``gateway.reconcile_seconds``) announces whatever an outage left there.

Outages: an object store or bus that cannot be reached answers 503 with ``Retry-After``
(``gateway.retry_after_seconds``), on every route. An upload whose files and outbox entry
were stored but whose event could not be published says so in its 503: it is announced (and
listed) once the bus is back, and a retry of the same files makes a second dataset with the
same content, which preprocessing maps to the same config hash (no second training). A bulk
upload in that state answers 202 instead, with its group and the stations still to be
announced: a retry there would store every station again under a second group, so the
answer says the upload is done.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import IO, Annotated, Any

from fastapi import FastAPI, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from flts.api.errors import (
    document_contract,
    error_response,
    install_error_handlers,
    problem_responses,
)
from flts.data.hashing import content_digest
from flts.data.spec import FeatureSpec, Recipe
from flts.datasets import (
    DATASET_ID_PATTERN,
    dataset_keys,
    is_dataset_id,
    new_dataset_id,
    read_dataset_metas,
)
from flts.events import (
    IDENTIFIER_SCHEMA,
    DatasetUploaded,
    DatasetUploadedEvent,
    Identifier,
    check_identifier,
    new_event,
)
from flts.exceptions import (
    BusError,
    DataValidationError,
    FLTSError,
    InfrastructureError,
    NotFoundError,
    PayloadTooLargeError,
    UnavailableError,
    UnsupportedMediaError,
)
from flts.fleet.routes import fleet_router
from flts.live.ingest import ObservationIngest
from flts.live.routes import observation_router
from flts.redaction import redact
from flts.security.guard import OPEN, AccessPolicy, key_ring, protect
from flts.security.spreadsheet import escape_formulas
from flts.services.admin import ADMIN_PREFIX, admin_router
from flts.services.context import ServiceContext
from flts.services.outbox import Outbox, Reconciler
from flts.services.preprocess import HOLDOUT_FRACTION, build_splits, read_tables
from flts.ui.routes import UI_OPEN_PATHS, ui_router

#: Multipart framing (boundaries, part headers, the identifier field) allowed on top of the
#: file limit before the stream is cut off.
FRAMING_ALLOWANCE = 64 * 1024
_FIELDS = ("train", "test", "identifier", "identifier_column", "horizon", "lags")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_READ_BLOCK = 1 << 20
#: An uploaded file: bytes (tests) or the gateway's spooled temporary file.
Content = bytes | IO[bytes]
#: Where an upload's file is: its content, or a path on disk (``flts pipeline``, the
#: per-station files a bulk upload is split into), opened only while it is read.
Source = Content | FilePath


#: A dataset id path segment, documented with its form (the route answers 422 for another).
DatasetId = Annotated[str, Path(json_schema_extra={"pattern": DATASET_ID_PATTERN})]


class CSVResponse(Response):
    """A stored CSV file."""

    media_type = "text/csv"


#: The upload's multipart body as the OpenAPI document states it (the route parses the
#: stream itself, so FastAPI cannot infer it): the fields :data:`_FIELDS`, nothing else.
UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "description": "One station (one `train`, `identifier`), or a bulk upload: "
                "one `train` with `identifier_column`, or several `train` files.",
                "type": "object",
                "required": ["train"],
                "additionalProperties": False,
                "properties": {
                    "train": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "format": "binary"},
                        "description": "The training CSV (time column and the feature spec's "
                        "columns on its grid). A bulk upload sends one file with an "
                        "`identifier_column`, or one file per station (repeated parts, each "
                        "station named by its file name's stem).",
                    },
                    "test": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "Optional test CSV; without it the last rows of `train` "
                        "are held out. In a bulk upload of several files, `<stem>_test.csv` is "
                        "the test file of `<stem>.csv`.",
                    },
                    "identifier_column": {
                        "type": "string",
                        "description": "Bulk upload: the column of `train` (and `test`) naming "
                        "each row's station; it is dropped from each station's dataset.",
                    },
                    "identifier": {
                        **IDENTIFIER_SCHEMA,
                        "default": "global",
                        "description": "Station or tenant the dataset is for.",
                    },
                    "horizon": {
                        "type": "string",
                        "pattern": "^[0-9]+$",
                        "description": "Steps to forecast (default: the deployment's).",
                    },
                    "lags": {
                        "type": "string",
                        "pattern": "^[0-9]+$",
                        "description": "Rows of history per forecast (default: the deployment's).",
                    },
                },
            },
            "encoding": {
                "train": {"contentType": "text/csv"},
                "test": {"contentType": "text/csv"},
            },
        }
    },
}


#: The 201 and 202 body of a bulk upload (:meth:`flts.fleet.bulk.BulkResult.to_json`).
BULK_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["group", "accepted", "datasets", "rejected", "pending"],
    "properties": {
        "group": IDENTIFIER_SCHEMA,
        "accepted": {"type": "integer", "minimum": 1},
        "datasets": {"type": "array", "items": {"type": "object"}},
        "pending": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Dataset ids of accepted stations not announced yet (202 only).",
        },
        "detail": {"type": "string", "description": "Why stations are pending (202 only)."},
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["identifier", "problems"],
                "properties": {
                    "identifier": {"type": "string"},
                    "problems": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


class _BodyTooLargeError(Exception):
    """The request stream went past the byte limit."""


def sanitize_filename(name: str | None, default: str) -> str:
    """The last path component of a client-supplied name, restricted to ``[A-Za-z0-9._-]``
    without leading dots, at most 128 characters; ``default`` when nothing is left.
    For display only: keys are never built from it."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).lstrip("._-")[:128]
    return cleaned or default


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    """Pass chunks through, raising :class:`_BodyTooLargeError` as soon as ``limit`` is passed."""
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise _BodyTooLargeError
        yield chunk


async def _discard(stream: AsyncIterator[bytes]) -> None:
    """Read a body to its end (or its limit) without keeping it."""
    try:
        async for _ in stream:
            pass
    except _BodyTooLargeError:
        pass


def _blocks(data: Content) -> Iterator[bytes]:
    """``data`` from its start, one block at a time."""
    if isinstance(data, bytes):
        yield data
        return
    data.seek(0)
    while block := data.read(_READ_BLOCK):
        yield block


@contextmanager
def opened_source(source: Source) -> Iterator[Content]:
    """``source`` as content: a path is opened for the block only (a bulk upload's thousand
    station files are never open at once)."""
    if isinstance(source, FilePath):
        with source.open("rb") as handle:
            yield handle
    else:
        yield source


def _size(data: Content) -> int:
    if isinstance(data, bytes):
        return len(data)
    return data.seek(0, 2)


def _file_parts(form: FormData, name: str) -> list[UploadFile]:
    """Every file in field ``name`` (a bulk upload repeats ``train`` and ``test``), empty
    unselected inputs left out; a text value there is a :class:`DataValidationError`."""
    parts: list[UploadFile] = []
    for value in form.getlist(name):
        if not isinstance(value, UploadFile):
            raise DataValidationError(f"form field {name!r} must be a file, not text")
        if value.filename or value.size:
            parts.append(value)
    return parts


def _text_field(form: FormData, name: str) -> str | None:
    """An optional text field of the form, stripped (``None`` when absent or empty)."""
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataValidationError(f"form field {name!r} must be text, not a file")
    return value.strip() or None


def _integer_field(form: FormData, name: str) -> int | None:
    """An optional whole-number text field of the form (``None`` when absent or empty)."""
    value = form.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip().isdigit():
        raise DataValidationError(f"form field {name!r} must be a whole number, got {value!r}")
    return int(value.strip())


def _summary(table_rows: int, start: datetime, end: datetime) -> dict[str, Any]:
    return {"rows": table_rows, "start": start.isoformat(), "end": end.isoformat()}


def task_spec(context: ServiceContext, horizon: int | None, lags: int | None) -> FeatureSpec:
    """The deployment's feature spec with a dataset's own horizon and lags; out of range is a
    :class:`DataValidationError` naming the field."""
    try:
        return context.settings.feature_spec.for_task(horizon=horizon, lags=lags)
    except ValidationError as exc:
        raise DataValidationError(
            *(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from exc


def _validate(
    spec: FeatureSpec, recipe: Recipe, train: Content, test: Content | None
) -> dict[str, Any]:
    """Run the checks preprocessing will run; return row counts and time ranges."""
    train_table, test_table = read_tables(train, test, spec)
    build_splits(train_table, test_table, spec=spec, recipe=recipe)
    parts = {"train": train_table, "test": test_table}
    return {
        role: _summary(len(table), table.times[0], table.times[-1])
        for role, table in parts.items()
        if table is not None
    }


@dataclass(frozen=True)
class ValidatedDataset:
    """One station's upload that passed every check preprocessing will run: what
    :func:`store_dataset` and :func:`announce_dataset` need, kept apart from them so a bulk
    upload can validate every station before it stores or announces any (and write its group
    manifest in between, :mod:`flts.fleet.bulk`)."""

    identifier: str
    spec: FeatureSpec
    horizon: int | None
    lags: int | None
    train: Source
    test: Source | None
    train_filename: str
    test_filename: str | None
    ranges: dict[str, Any]


def validate_dataset(
    context: ServiceContext,
    *,
    train: Source,
    test: Source | None,
    identifier: str = "global",
    train_filename: str | None = None,
    test_filename: str | None = None,
    horizon: int | None = None,
    lags: int | None = None,
) -> ValidatedDataset:
    """The checks of an upload, storing nothing: the identifier rule, the task's horizon and
    lags, both CSVs and the recipe's split. Raises :class:`DataValidationError` listing every
    problem."""
    identifier = check_identifier(identifier)
    spec = task_spec(context, horizon, lags)
    with ExitStack() as stack:
        train_data = stack.enter_context(opened_source(train))
        test_data = None if test is None else stack.enter_context(opened_source(test))
        ranges = _validate(spec, context.settings.recipe, train_data, test_data)
    return ValidatedDataset(
        identifier=identifier,
        spec=spec,
        horizon=horizon,
        lags=lags,
        train=train,
        test=test,
        train_filename=sanitize_filename(train_filename, "train.csv"),
        test_filename=None if test is None else sanitize_filename(test_filename, "test.csv"),
        ranges=ranges,
    )


def store_dataset(context: ServiceContext, dataset: ValidatedDataset, dataset_id: str) -> None:
    """Write a validated dataset's files under ``dataset_id`` (not listed, not announced:
    that is :func:`announce_dataset`, which writes the metadata)."""
    keys = dataset_keys(dataset_id)
    with opened_source(dataset.train) as train:
        context.store.put(keys["train"], train)
    if dataset.test is not None:
        with opened_source(dataset.test) as test:
            context.store.put(keys["test"], test)


def describe_dataset(
    dataset: ValidatedDataset, dataset_id: str, *, group: str | None = None
) -> tuple[DatasetUploadedEvent, dict[str, Any]]:
    """The ``dataset-uploaded`` event and the ``meta.json`` of a dataset stored under
    ``dataset_id`` (``group``: the bulk upload it came in); nothing is written: the caller
    records them in the :class:`Outbox` and announces them (steps 2-5 there)."""
    keys = dataset_keys(dataset_id)
    with opened_source(dataset.train) as train:
        train_size, digest = _size(train), content_digest(_blocks(train))
    test_meta: dict[str, Any] | None = None
    if dataset.test is not None:
        with opened_source(dataset.test) as test:
            test_meta = {
                "filename": dataset.test_filename,
                "key": keys["test"],
                "size_bytes": _size(test),
                "digest": content_digest(_blocks(test)),
                **dataset.ranges["test"],
            }
    payload = DatasetUploaded(
        dataset_id=dataset_id,
        filename=dataset.train_filename,
        train_key=keys["train"],
        test_key=None if dataset.test is None else keys["test"],
        size_bytes=train_size,
        digest=digest,
        horizon=dataset.horizon,
        lags=dataset.lags,
        group=group,
    )
    event = new_event(payload, identifier=dataset.identifier)
    assert isinstance(event, DatasetUploadedEvent)
    meta: dict[str, Any] = {
        "dataset_id": dataset_id,
        "identifier": dataset.identifier,
        "uploaded_at": datetime.now(UTC).isoformat(),
        "correlation_id": event.correlation_id,
        "event_id": event.event_id,
        "horizon": dataset.spec.horizon,
        "lags": dataset.spec.lags,
        "train": {
            "filename": dataset.train_filename,
            "key": keys["train"],
            "size_bytes": train_size,
            "digest": digest,
            **dataset.ranges["train"],
        },
        "test": test_meta,
        "test_split": "uploaded"
        if dataset.test is not None
        else f"holdout: the last {HOLDOUT_FRACTION:.0%} of the training rows",
    }
    if group is not None:
        meta["group"] = group
    return event, meta


def ingest_dataset(
    context: ServiceContext,
    *,
    train: Source,
    test: Source | None,
    identifier: str = "global",
    train_filename: str | None = None,
    test_filename: str | None = None,
    horizon: int | None = None,
    lags: int | None = None,
    outbox: Outbox | None = None,
) -> tuple[DatasetUploadedEvent, dict[str, Any]]:
    """Validate, store and announce a dataset: the gateway's upload minus HTTP (also what
    ``flts pipeline`` calls). ``train`` and ``test`` are bytes, seekable binary files or
    paths, each read from its start as many times as needed (validation, digest, storing).
    Raises :class:`DataValidationError` listing every problem (nothing is stored then),
    :class:`InfrastructureError` when the store cannot be reached and :class:`BusError` when
    the event cannot be published (the dataset is then in the outbox, and the reconciler
    announces it later)."""
    dataset = validate_dataset(
        context,
        train=train,
        test=test,
        identifier=identifier,
        train_filename=train_filename,
        test_filename=test_filename,
        horizon=horizon,
        lags=lags,
    )
    dataset_id = new_dataset_id()
    store_dataset(context, dataset, dataset_id)
    event, meta = describe_dataset(dataset, dataset_id)
    outbox = outbox or Outbox(context)
    outbox.record(event, meta)  # from here on the dataset will be announced
    outbox.announce(event, meta)  # publish, then meta.json: listed only once announced
    return event, meta


def create_gateway_app(context: ServiceContext) -> FastAPI:
    """The gateway's FastAPI app over ``context``'s object store and bus."""
    settings = context.settings
    limit = settings.gateway.max_upload_bytes
    # Slots bound the memory of uploads in progress (see the module docstring, "Memory").
    slots = asyncio.Semaphore(settings.gateway.max_concurrent_uploads)
    wait = settings.gateway.upload_wait_seconds
    retry_after = settings.gateway.retry_after_seconds
    outbox = Outbox(context)
    reconciler = Reconciler(outbox, settings.gateway.reconcile_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        reconciler.start()  # its first pass runs at once: what a previous outage left
        try:
            yield
        finally:
            await run_in_threadpool(reconciler.stop)

    app = FastAPI(title="FLTS gateway", version="1", lifespan=lifespan)
    app.state.reconciler = reconciler

    def prepare(exc: FLTSError) -> None:
        if isinstance(exc, InfrastructureError):  # the configured Retry-After, not a default
            exc.retry_after = retry_after

    install_error_handlers(app, prepare)
    app.include_router(observation_router(ObservationIngest(context)))
    prefixes = {ADMIN_PREFIX: "admin"}
    app.add_middleware(
        protect,
        security=settings.security,
        keys=key_ring(settings.security, "gateway"),  # read now: a bad file stops the start
        default="upload",
        prefixes=prefixes,
        open_paths=UI_OPEN_PATHS,
        render=error_response,
    )
    app.include_router(admin_router(context))
    app.include_router(fleet_router(context))  # GET /v1/fleet (flts.fleet.routes)
    app.include_router(ui_router(context))  # the dashboard at /ui/ (flts.ui.routes)
    # The same policy the auth layer applies: which operations document 401 and 403.
    policy = AccessPolicy(
        "upload",
        prefixes=prefixes,
        open_paths=UI_OPEN_PATHS,
        metrics_require_key=settings.security.metrics_require_key,
    )
    document_contract(app, lambda path: policy.required(path) != OPEN)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.post(
        "/v1/datasets",
        status_code=201,
        response_model=None,
        responses={
            201: {
                "description": "Stored and announced: the dataset's metadata (`Location`: its "
                "URL); for a bulk upload the group, the accepted stations' metadata and the "
                "rejected stations with their problems.",
                "content": {
                    "application/json": {
                        "schema": {"anyOf": [{"type": "object"}, BULK_RESULT_SCHEMA]}
                    }
                },
            },
            202: {
                "description": "Bulk upload only: every accepted station is stored and in the "
                "group, but an outage interrupted announcing them; the `pending` ones are "
                "announced (and listed) once it is over. Do not retry: a retry is a second "
                "group of the same stations.",
                "content": {"application/json": {"schema": BULK_RESULT_SCHEMA}},
            },
            **problem_responses(413, 415, 422, 503),
        },
        openapi_extra={"requestBody": UPLOAD_BODY},
    )
    async def upload(request: Request) -> Response:
        """Store a dataset and publish ``dataset-uploaded``; see the module docstring."""
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise UnsupportedMediaError(
                "upload as multipart/form-data with a 'train' CSV file (and optional 'test')"
            )
        cap = limit + FRAMING_ALLOWANCE
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise PayloadTooLargeError(f"upload is {declared} bytes; the limit is {limit} bytes")
        body = _limited(request.stream(), cap)
        try:
            if slots.locked():
                await asyncio.wait_for(slots.acquire(), wait)
            else:  # a free slot is taken at once, whatever the wait (even 0)
                await slots.acquire()
        except TimeoutError:
            await _discard(body)
            raise UnavailableError(
                f"{settings.gateway.max_concurrent_uploads} uploads are in progress; retry later",
                retry_after=retry_after,
            ) from None
        try:
            return await receive(request, body)
        finally:
            slots.release()

    async def receive(request: Request, body: AsyncGenerator[bytes, None]) -> Response:
        """Parse, validate, store and announce one upload (holding a slot)."""
        parser = MultiPartParser(
            request.headers,
            body,
            max_files=settings.gateway.max_upload_files,
            max_fields=len(_FIELDS),
            max_part_size=1024,
        )
        try:
            form = await parser.parse()
        except _BodyTooLargeError as exc:
            raise PayloadTooLargeError(f"upload is over the limit of {limit} bytes") from exc
        except MultiPartException as exc:
            raise DataValidationError(f"malformed multipart body: {exc.message}") from exc
        try:
            unknown = sorted(set(form.keys()) - set(_FIELDS))
            if unknown:
                raise DataValidationError(
                    f"unknown form fields {unknown}; expected {list(_FIELDS)}"
                )
            trains, tests = _file_parts(form, "train"), _file_parts(form, "test")
            if not trains:
                raise DataValidationError("form field 'train' (a CSV file) is required")
            column = _text_field(form, "identifier_column")
            horizon, lags = _integer_field(form, "horizon"), _integer_field(form, "lags")
            total = sum(_size(part.file) for part in (*trains, *tests))
            if total > limit:
                raise PayloadTooLargeError(
                    f"uploaded files total {total} bytes; the limit is {limit} bytes"
                )
            if column is None and len(trains) == 1 and len(tests) <= 1:
                return await single(form, trains[0], tests[0] if tests else None, horizon, lags)
            return await bulk(form, trains, tests, column, horizon, lags)
        finally:
            await form.close()

    async def single(
        form: FormData,
        train_part: UploadFile,
        test_part: UploadFile | None,
        horizon: int | None,
        lags: int | None,
    ) -> Response:
        """One station: the upload's ``identifier`` field names it."""
        raw_identifier = form.get("identifier", "global")
        if not isinstance(raw_identifier, str):
            raise DataValidationError("form field 'identifier' must be text, not a file")
        identifier = check_identifier(raw_identifier)
        # Validated and stored from the spooled files: the upload is never in memory whole.
        try:
            _, meta = await run_in_threadpool(
                ingest_dataset,
                context,
                train=train_part.file,
                test=None if test_part is None else test_part.file,
                identifier=identifier,
                train_filename=train_part.filename,
                test_filename=None if test_part is None else test_part.filename,
                horizon=horizon,
                lags=lags,
                outbox=outbox,
            )
        except BusError as exc:
            raise BusError(
                "the dataset is stored and will be announced (and listed) once the event "
                f"bus is back; it is unavailable now: {exc}",
                retry_after=retry_after,
            ) from exc
        dataset_id = meta["dataset_id"]
        return JSONResponse(
            meta, status_code=201, headers={"Location": f"/v1/datasets/{dataset_id}"}
        )

    async def bulk(
        form: FormData,
        trains: list[UploadFile],
        tests: list[UploadFile],
        column: str | None,
        horizon: int | None,
        lags: int | None,
    ) -> Response:
        """Many stations (:mod:`flts.fleet.bulk`): by identifier column or one file each."""
        from flts.fleet import bulk as fleet

        if form.get("identifier") is not None:
            raise DataValidationError(
                "form field 'identifier' names one station; a bulk upload takes each "
                "station's from its identifier column or its file name"
            )
        try:
            if column is not None:
                if len(trains) > 1 or len(tests) > 1:
                    raise DataValidationError(
                        "with 'identifier_column', send one 'train' file (and at most one "
                        f"'test'), not {len(trains)} and {len(tests)}"
                    )
                result = await run_in_threadpool(
                    fleet.ingest_bulk_csv,
                    context,
                    train=trains[0].file,
                    test=tests[0].file if tests else None,
                    identifier_column=column,
                    train_filename=trains[0].filename,
                    test_filename=tests[0].filename if tests else None,
                    horizon=horizon,
                    lags=lags,
                    outbox=outbox,
                )
            else:
                stations = fleet.match_files(
                    [(part.filename, part.file) for part in trains],
                    [(part.filename, part.file) for part in tests],
                )
                result = await run_in_threadpool(
                    fleet.ingest_bulk, context, stations, horizon=horizon, lags=lags, outbox=outbox
                )
        except fleet.AnnouncementPendingError as exc:
            # Stored, in the group manifest and in the outbox: the upload is done and the
            # reconciler announces the rest. A 503 would invite a retry, i.e. a second group.
            # masked like every problem document: the cause may name a backend URL
            body = {**exc.result.to_json(), "detail": redact(str(exc))}
            return JSONResponse(body, status_code=202)
        return JSONResponse(result.to_json(), status_code=201)

    @app.get("/v1/datasets", response_model=None, responses=problem_responses(422, 503))
    def list_datasets(identifier: Identifier | None = None) -> Response:
        """Metadata of every complete dataset, newest first; optionally one identifier's."""
        return JSONResponse({"datasets": read_dataset_metas(context.store, identifier)})

    def checked_keys(dataset_id: str) -> dict[str, str]:
        if not is_dataset_id(dataset_id):
            raise DataValidationError(
                f"invalid dataset id {dataset_id!r}: expected the form "
                "'20240131T235959Z-0123456789ab' returned by POST /v1/datasets"
            )
        keys = dataset_keys(dataset_id)
        if not context.store.exists(keys["meta"]):
            raise NotFoundError(f"no dataset {dataset_id!r}")
        return keys

    found = problem_responses(404, 422, 503)

    @app.get("/v1/datasets/{dataset_id}", response_model=None, responses=found)
    def get_dataset(dataset_id: DatasetId) -> Response:
        """One dataset's metadata (404 for an unknown id, 422 for a malformed one)."""
        keys = checked_keys(dataset_id)
        return JSONResponse(context.store.get_json(keys["meta"]))

    def download(dataset_id: str, role: str) -> Response:
        """The stored file with formula cells escaped (:mod:`flts.security.spreadsheet`)."""
        keys = checked_keys(dataset_id)
        try:
            data = context.store.get(keys[role])
        except KeyError as exc:
            raise NotFoundError(f"dataset {dataset_id!r} has no {role} file") from exc
        return CSVResponse(
            escape_formulas(data),
            headers={
                "Content-Disposition": f'attachment; filename="{dataset_id}-{role}.csv"',
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.get("/v1/datasets/{dataset_id}/train.csv", response_class=CSVResponse, responses=found)
    def download_train(dataset_id: DatasetId) -> Response:
        """The stored training CSV (formula cells escaped)."""
        return download(dataset_id, "train")

    @app.get("/v1/datasets/{dataset_id}/test.csv", response_class=CSVResponse, responses=found)
    def download_test(dataset_id: DatasetId) -> Response:
        """The stored test CSV (404 when the upload had none; formula cells escaped)."""
        return download(dataset_id, "test")

    return app
