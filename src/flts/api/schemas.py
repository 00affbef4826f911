"""Request and response shapes of the inference API.

These pydantic models document every body in the OpenAPI schema. Requests are decoded and
validated by :mod:`flts.api.forms` (typed msgspec decoding, one validator per form); a refused
request is described with these models' messages (:mod:`flts.api.diagnosis`), and answers are
built as plain dicts that these models document.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from flts.events import Identifier
from flts.models.intervals import MAX_LEVELS

#: A prediction-interval level in percent, strictly between 0 and 100.
Level = Annotated[float, Field(gt=0, lt=100)]
Levels = Annotated[
    list[Level],
    Field(
        default_factory=list,
        max_length=MAX_LEVELS,
        description=(
            "Prediction-interval levels in percent (e.g. [80, 95]), each in (0, 100), unique; "
            "answered in `intervals` when the model was calibrated, a 422 otherwise."
        ),
    ),
]


class ForecastRequest(BaseModel):
    """One forecast: the recent history of one identifier, oldest row first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identifier: Identifier | None = Field(
        default=None,
        description=(
            "Station or tenant whose champion answers. Omitted: the 'global' champion, or the "
            "only loaded one when exactly one identifier is served."
        ),
    )
    history: list[dict[str, Any]] | None = Field(
        default=None,
        fail_fast=True,  # a history of 10,000 non-objects is one problem, not 10,000
        description=(
            "Rows with the time column and every input column of the model's feature spec "
            "(extra columns are ignored), on the spec's regular grid, at least `lags` rows, "
            "no missing values. Omitted (single forecasts only): the newest `lags` rows "
            "stored for `identifier` by `POST /v1/observations` on the gateway."
        ),
    )
    horizon: int = Field(
        default=1,
        ge=1,
        description="Steps to forecast: 1 up to the horizon the model was trained for.",
    )
    intervals: Levels


class BatchForecastRequest(BaseModel):
    """Several forecasts in one call; the batch succeeds or fails as a whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: list[ForecastRequest] = Field(min_length=1)


#: A list whose validation stops at its first bad item: a tensor of 100,000 nulls is one
#: problem, not 100,000 lines built while the event loop waits.
FirstError = Field(fail_fast=True)
Row = Annotated[list[StrictFloat], FirstError]
Window = Annotated[list[Row], FirstError]


class EncodedWindows(BaseModel):
    """A window tensor as bytes: no number is parsed from text at all."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: Literal["float32", "float64"] = Field(description="Little-endian IEEE 754 values.")
    shape: list[StrictInt] = Field(
        min_length=3, max_length=3, description="[windows, rows per window, columns]."
    )
    base64: str = Field(
        description=(
            "Standard base64 (with padding, no line breaks) of the values in C (row-major) order."
        )
    )


class WindowBatchRequest(BaseModel):
    """Many windows of one identifier as one tensor: the compact batch form.

    The row form (:class:`BatchForecastRequest`) repeats every column name in every row and a
    timestamp per row; a client that already holds its windows as an array sends them here
    as ``windows[i][row][column]`` (JSON numbers) or, fastest, as ``encoded_windows`` (the
    array's bytes in base64). Rows of a window are consecutive steps of the model's grid, so
    only each window's last timestamp is sent. Exactly one of ``windows`` and
    ``encoded_windows`` is given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    identifier: Identifier | None = Field(
        default=None, description="As in a single forecast; one model answers every window."
    )
    horizon: int = Field(
        default=1,
        ge=1,
        description="Steps to forecast for every window: 1 up to the model's horizon.",
    )
    intervals: Levels
    columns: list[str] = Field(
        min_length=1,
        fail_fast=True,
        description=(
            "Name of each value in a row, in order: every input column of the model's "
            "feature spec, in any order, each name at most once (other names are ignored)."
        ),
    )
    end_times: list[str] = Field(
        min_length=1,
        fail_fast=True,
        description=(
            "ISO 8601 time of each window's last row (one per window); the rows before it "
            "are one sampling step apart."
        ),
    )
    windows: list[Window] | None = Field(
        default=None,
        min_length=1,
        fail_fast=True,
        description=(
            "One window per forecast: at least `lags` rows, oldest first, each with one "
            "number per entry of `columns`; the last `lags` rows are used. A wrong value is "
            "reported at its position; checking stops at the first one."
        ),
    )
    encoded_windows: EncodedWindows | None = Field(
        default=None, description="The same tensor as `windows`, as bytes (see its fields)."
    )


class ModelInfo(BaseModel):
    """The champion that produced a forecast."""

    run_id: str
    model_type: str
    config_hash: str
    identifier: str
    promoted_at: datetime


class ForecastResponse(BaseModel):
    """``forecast`` holds one record per step: ``time`` plus one value per target, in
    original units, negative values clipped to 0 (traffic cannot be negative)."""

    forecast: list[dict[str, Any]]
    model: ModelInfo
    intervals: dict[str, list[dict[str, Any]]] | None = Field(
        default=None,
        description=(
            'Only when asked for: per level (`"80"`), one record per step with `time` and '
            "`[lower, upper]` per target, calibrated on validation residuals, never below 0."
        ),
    )


class IntervalArrays(BaseModel):
    """One level's bounds of a tensor answer, shaped like ``forecast``."""

    lower: list[list[list[float]]]
    upper: list[list[list[float]]]


class BatchForecastResponse(BaseModel):
    results: list[ForecastResponse]


class WindowBatchResponse(BaseModel):
    """Forecasts of a :class:`WindowBatchRequest`, as arrays: ``forecast[i][step][k]`` is
    target ``targets[k]`` of window ``i`` at ``times[i][step]`` (original units, negatives
    clipped to 0)."""

    model: ModelInfo
    targets: list[str]
    times: list[list[str]]
    forecast: list[list[list[float]]]
    intervals: dict[str, IntervalArrays] | None = Field(
        default=None, description="Only when asked for: per level, lower and upper bounds."
    )
