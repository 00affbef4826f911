"""The closed sets of names the CLI accepts, as enums: a typo is a usage error that lists the
choices, and shell completion offers them.

They repeat names owned elsewhere (the model registry, the worker runner, the retention
kinds, the key scopes) because importing their owners would import numpy or pydantic for
``flts --help``; ``tests/unit/test_cli_imports.py`` checks each enum against its owner.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer


class ModelType(StrEnum):
    """A model type of :data:`flts.models.registry.MODEL_TYPES`."""

    PERSISTENCE = "PERSISTENCE"
    SEASONAL_NAIVE = "SEASONAL_NAIVE"
    RIDGE = "RIDGE"
    LSTM = "LSTM"
    GRU = "GRU"
    MLP = "MLP"
    GLOBAL = "GLOBAL"
    PROPHET = "PROPHET"
    ENSEMBLE = "ENSEMBLE"


class WorkerName(StrEnum):
    """A worker of :func:`flts.services.runner.build_service`."""

    PREPROCESS = "preprocess"
    TRAIN = "train"
    EVALUATE = "evaluate"
    BATCH_INFERENCE = "batch-inference"
    OBSERVATIONS = "observations"
    MONITOR = "monitor"
    FORECASTER = "forecaster"


class RetentionKind(StrEnum):
    """A kind of :data:`flts.retention.KINDS`."""

    BUS = "bus"
    DATASETS = "datasets"
    PROCESSED = "processed"
    LOGS = "logs"
    MODEL_CACHE = "model-cache"


class KeyScope(StrEnum):
    """A scope of :data:`flts.security.SCOPES`."""

    FORECAST = "forecast"
    UPLOAD = "upload"
    ADMIN = "admin"


class FleetSort(StrEnum):
    """A column of :data:`flts.fleet.summary.FLEET_SORTS`."""

    IDENTIFIER = "identifier"
    MODEL_TYPE = "model_type"
    EVALUATION_NRMSE = "evaluation_nrmse"
    LIVE_NRMSE = "live_nrmse"
    LIVE_COVERAGE = "live_coverage"
    AGE_SECONDS = "age_seconds"
    STATE = "state"


class FleetState(StrEnum):
    """A state of :data:`flts.fleet.summary.FLEET_STATES`."""

    OK = "ok"
    NO_CHAMPION = "no champion"
    RETRAINING = "retraining"
    RETRAINED = "retrained"
    KEPT = "kept"
    REFUSED = "refused"


class SortOrder(StrEnum):
    """Ascending or descending."""

    ASC = "asc"
    DESC = "desc"


#: Model types the pipeline trains when nothing else is configured
#: (:data:`flts.settings.DEFAULT_MODEL_TYPES`).
DEFAULT_MODELS = "PERSISTENCE,RIDGE,LSTM,GRU,PROPHET"


def model_list(text: str) -> list[str]:
    """``"lstm, Ridge"`` -> ``["LSTM", "RIDGE"]``; an unknown or missing name is a usage
    error naming the choices (the ``--models`` callback)."""
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    known = {m.value for m in ModelType}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise typer.BadParameter(
            f"unknown model type(s) {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    if not names:
        raise typer.BadParameter("no model types given")
    return names


def complete_models(incomplete: str) -> list[str]:
    """Shell completion for a comma-separated ``--models`` value: the names that can follow
    what is typed so far."""
    done, _, last = incomplete.rpartition(",")
    prefix = f"{done}," if done else ""
    taken = {part.strip().upper() for part in done.split(",")}
    return [
        prefix + m.value
        for m in ModelType
        if m.value.startswith(last.strip().upper()) and m.value not in taken
    ]


def _normalise_models(text: str) -> str:
    return ",".join(model_list(text))


#: Every ``--models`` option: checked when parsed, completed per comma-separated item.
ModelsOption = Annotated[
    str,
    typer.Option(
        "--models",
        callback=_normalise_models,
        autocompletion=complete_models,
        help=f"Comma-separated model types ({', '.join(m.value for m in ModelType)}).",
    ),
]
