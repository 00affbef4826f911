"""Request and response shapes of the inference API.

Requests are validated with these models after the body was size-checked and parsed (see
:mod:`flts.api.routes`); responses are built as plain dicts on the hot path and these models
document them in the OpenAPI schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flts.events import Identifier


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
    history: list[dict[str, Any]] = Field(
        description=(
            "Rows with the time column and every input column of the model's feature spec "
            "(extra columns are ignored), on the spec's regular grid, at least `lags` rows, "
            "no missing values."
        ),
    )
    horizon: int = Field(
        default=1,
        ge=1,
        description="Steps to forecast: 1 up to the horizon the model was trained for.",
    )


class BatchForecastRequest(BaseModel):
    """Several forecasts in one call; the batch succeeds or fails as a whole."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: list[ForecastRequest] = Field(min_length=1)


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


class BatchForecastResponse(BaseModel):
    results: list[ForecastResponse]
