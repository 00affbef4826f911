"""Why a rejected forecast request was rejected: every problem, precisely, in one pass.

Runs only after :mod:`flts.api.forms` refused a request, so it may take its time (pydantic,
pandas). It never accepts anything: it turns a refusal into the error the client reads,
replaying the checks in the order a client fixes them (JSON, sizes, keys and types with the
messages of the documented body models in :mod:`flts.api.schemas`, then the data against the
model's feature spec with :func:`flts.data.reader.validate_frame`, the checks CSV uploads
get). Callers fall back to the forms' own short reason if nothing more precise is found.

The data checks differ from a CSV upload in two deliberate ways:

* **Missing values are rejected.** The recipe's ``fill_na`` (NaN -> 0) is a training-data
  convention for holes in historical files; silently zero-filling a live request would turn a
  broken sensor feed into a confident forecast of near-zero traffic (JSON ``null`` counts as
  missing).
* **Only ``lags`` rows are needed** (the window), not ``lags + horizon`` (a training example).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import orjson
import pandas as pd
from pydantic import BaseModel, ValidationError

from flts.api.errors import describe_pydantic_errors
from flts.api.forms import (
    check_history,
    check_requests,
    check_tensor,
    horizon_problems,
)
from flts.api.schemas import BatchForecastRequest, ForecastRequest, WindowBatchRequest
from flts.data.reader import quote, validate_frame
from flts.data.spec import FeatureSpec
from flts.exceptions import DataValidationError

#: The feature spec of the model serving an identifier (raising when none is loaded), or
#: ``None`` to describe keys and types only.
SpecOf = Callable[[str | None], FeatureSpec] | None

M = TypeVar("M", bound=BaseModel)

#: Keys only the tensor form has: a batch body with any of them is the tensor form.
TENSOR_KEYS = ("windows", "encoded_windows", "columns", "end_times")


def parse_json(body: bytes) -> Any:
    """orjson's strict JSON (``NaN``/``Infinity`` literals are malformed), 422 with the
    position of the problem."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body.strip():
            raise DataValidationError("malformed JSON: the request body is empty") from exc
        raise DataValidationError(f"malformed JSON: {exc}") from exc


def _validate(model: type[M], document: Any) -> M:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise DataValidationError(*describe_pydantic_errors(exc.errors())) from exc


def _rows(document: Any) -> int:
    history = document.get("history") if isinstance(document, dict) else None
    return len(history) if isinstance(history, list) else 0


def diagnose_forecast(body: bytes, max_rows: int, spec_of: SpecOf) -> None:
    """Raise what is wrong with a ``POST /v1/forecast`` body."""
    document = parse_json(body)
    check_history(_rows(document), max_rows)
    request = _validate(ForecastRequest, document)
    if spec_of is not None:
        describe_rows(request, spec_of(request.identifier))


def diagnose_batch(body: bytes, max_rows: int, spec_of: SpecOf) -> None:
    """Raise what is wrong with a ``POST /v1/forecast/batch`` body (either form)."""
    document = parse_json(body)
    if isinstance(document, dict) and any(key in document for key in TENSOR_KEYS):
        check_tensor(*_claimed_size(document), max_rows)
        if "requests" in document:
            raise DataValidationError(
                "a batch is either `requests` (row form) or `windows` (tensor form), not both"
            )
        _validate(WindowBatchRequest, document)
        return  # the values are checked (and described) by forms.tensor_windows itself
    items = document.get("requests") if isinstance(document, dict) else None
    if isinstance(items, list):
        check_requests(len(items))
        for index, item in enumerate(items):
            check_history(_rows(item), max_rows, f"requests[{index}].")
    batch = _validate(BatchForecastRequest, document)
    if spec_of is None:
        return
    specs = [spec_of(item.identifier) for item in batch.requests]
    problems: list[str] = []
    for index, (item, spec) in enumerate(zip(batch.requests, specs, strict=True)):
        try:
            describe_rows(item, spec)
        except DataValidationError as exc:
            problems.extend(exc.prefixed(f"requests[{index}]: ").problems)
    if problems:
        raise DataValidationError(*problems)


def _claimed_size(document: dict[str, Any]) -> tuple[int, int]:
    windows, encoded = document.get("windows"), document.get("encoded_windows")
    if isinstance(windows, list):
        rows = max((len(w) for w in windows if isinstance(w, list)), default=0)
        return len(windows), rows
    shape = encoded.get("shape") if isinstance(encoded, dict) else None
    if isinstance(shape, list) and len(shape) > 1 and all(type(n) is int for n in shape[:2]):
        return shape[0], shape[1]
    return 0, 0


# ----------------------------------------------------------------------------- rows


def _history_label(positions: np.ndarray) -> str:
    return quote(positions, lambda p: f"history[{int(p)}]")


def _column(history: Sequence[dict[str, Any]], name: str) -> pd.Series:
    series = pd.Series([row.get(name) for row in history], dtype=None if history else object)
    if series.dtype == bool or series.dtype == object:
        # JSON true/false, arrays and objects are not numbers; as text they are reported as
        # "not numeric" by the shared checks instead of being read as 1/0 or crashing them.
        series = series.map(lambda v: str(v) if isinstance(v, bool | list | dict) else v)
    return series


def _history_frame(history: Sequence[dict[str, Any]], spec: FeatureSpec) -> pd.DataFrame:
    """The request rows as a raw table of the columns the spec needs; a column no row has is
    left out so the shared checks report it as missing."""
    needed = (spec.time_column, *spec.inputs)
    present = [c for c in needed if any(c in row for row in history)]
    return pd.DataFrame({c: _column(history, c) for c in present}, index=range(len(history)))


def describe_rows(request: ForecastRequest, spec: FeatureSpec) -> None:
    """Raise :class:`DataValidationError` listing every problem of ``request``'s history
    against ``spec`` (nothing when there is none)."""
    problems: list[str] = []
    history = request.history or []
    rows = len(history)
    if rows < spec.lags:
        problems.append(
            f"too few rows: {rows} (the model needs at least the last {spec.lags} rows: lags)"
        )
    problems += horizon_problems(request.horizon, spec)
    if rows == 0:
        raise DataValidationError(*problems)
    raw = _history_frame(history, spec)
    for column in spec.inputs:
        if column not in raw:
            continue  # reported by the shared checks as a missing column
        missing = np.flatnonzero(raw[column].isna().to_numpy())
        if len(missing):
            problems.append(
                f"column {column!r} has missing values (null) at {_history_label(missing)}; "
                "forecast requests must carry every value (missing-value filling applies to "
                "training files only)"
            )
    try:
        validate_frame(raw, spec, min_rows=0, row_label=_history_label)
    except DataValidationError as exc:
        raise DataValidationError(*problems, *exc.problems) from exc
    if problems:
        raise DataValidationError(*problems)
