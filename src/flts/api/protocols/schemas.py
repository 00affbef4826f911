"""OpenAPI documentation of the serving protocols' bodies (pydantic models, never used to
decode: the protocol modules decode with msgspec and the native forms validate). They are as
strict as the translation: the input and output names, datatypes and parameters a request may
carry, so a contract fuzzer's schema-valid requests are the ones the routes take, up to what
the data must be (enough rows, times on the grid)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flts.api.schemas import Level, Levels
from flts.events import Identifier

#: A JSON number (FP64/FP32 data), nested or flat.
Numbers = list[Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- v2


class WindowTensor(_Strict):
    name: Literal["window"]
    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=3)] = Field(
        description="[rows, features] or [batch, rows, features]; rows >= the model's lags."
    )
    datatype: Literal["FP64", "FP32"]
    data: Numbers = Field(description="Row-major numbers, flat or nested, filling `shape`.")


class EndTimeTensor(_Strict):
    name: Literal["end_time"]
    shape: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=2)]
    datatype: Literal["BYTES"]
    data: list[Any] = Field(description="One ISO 8601 time per window: its last row's time.")


def _named(name: str) -> dict[str, Any]:
    """JSON schema: the array holds a tensor called ``name``."""
    return {"contains": {"type": "object", "properties": {"name": {"const": name}}}}


class InferParameters(_Strict):
    horizon: int = Field(default=1, ge=1, description="Steps to forecast.")
    intervals: Levels
    columns: list[str] | None = Field(
        default=None, description="Feature order of the window's last axis (default the model's)."
    )
    binary_data_output: Literal[False] = False


class RequestedOutput(_Strict):
    name: str = Field(description="forecast, time, forecast_lower_<level>, forecast_upper_<level>.")
    parameters: dict[str, Literal[False]] | None = None


class InferRequest(_Strict):
    """A v2 inference request: the inputs `window` and `end_time` (docs/clients.md)."""

    inputs: Annotated[
        list[WindowTensor | EndTimeTensor],
        Field(
            min_length=2,
            max_length=2,
            description="`window` and `end_time`, each once, in either order.",
            json_schema_extra={"allOf": [_named("window"), _named("end_time")]},
        ),
    ]
    id: str | None = None
    parameters: InferParameters | None = None
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP64", "BYTES"]
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str = Field(description="The run that answered.")
    id: str | None = None
    parameters: dict[str, Any] = Field(description="The native answer's `model` block.")
    outputs: list[OutputTensor]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: dict[str, Any] = Field(description="columns, targets, lags, horizon, feature_spec.")


class V2Error(BaseModel):
    """A problem document (RFC 9457) with the v2 `error` member."""

    type: str
    title: str
    status: int
    detail: str
    problems: list[str]
    error: str


# ----------------------------------------------------------------------------- MLflow


class DataframeSplit(_Strict):
    columns: list[str]
    data: list[list[Any]]
    index: list[Any] | None = None


class ScoringParams(_Strict):
    identifier: Identifier | None = None
    horizon: int = Field(default=1, ge=1)
    intervals: list[Level] = Field(default_factory=list)


class _Scoring(_Strict):
    params: ScoringParams | None = None


class SplitScoring(_Scoring):
    dataframe_split: DataframeSplit


class RecordsScoring(_Scoring):
    dataframe_records: list[dict[str, Any]]


class InstancesScoring(_Scoring):
    instances: list[dict[str, Any]]


class InputsScoring(_Scoring):
    inputs: list[dict[str, Any]] | dict[str, list[Any]]


#: One history in exactly one of MLflow's input formats.
SCORING_FORMS = (SplitScoring, RecordsScoring, InstancesScoring, InputsScoring)


class Predictions(BaseModel):
    predictions: list[dict[str, Any]] = Field(
        description="One record per step: time, targets, <target>_lower/upper_<level>."
    )


class MlflowError(BaseModel):
    """A problem document (RFC 9457) with MLflow's `error_code` and `message`."""

    type: str
    title: str
    status: int
    detail: str
    problems: list[str]
    error_code: str
    message: str


class Ping(BaseModel):
    status: Literal["ready"]
