"""Model types by name, imported lazily so a missing optional extra (torch, prophet) only
matters when that model type is asked for, with an install hint instead of an ImportError."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from flts._lazy import import_target
from flts.exceptions import ConfigurationError

if TYPE_CHECKING:
    from flts.models.base import Forecaster


class _Entry(NamedTuple):
    target: str  # "module:Class"
    extra: str | None  # pip extra that provides the dependencies, if any
    package: str | None  # the import that fails without the extra


MODEL_TYPES: dict[str, _Entry] = {
    "PERSISTENCE": _Entry("flts.models.baselines:Persistence", None, None),
    "SEASONAL_NAIVE": _Entry("flts.models.baselines:SeasonalNaive", None, None),
    "RIDGE": _Entry("flts.models.ridge:Ridge", None, None),
    "LSTM": _Entry("flts.models.neural:LSTMForecaster", "torch", "torch"),
    "GRU": _Entry("flts.models.neural:GRUForecaster", "torch", "torch"),
    "MLP": _Entry("flts.models.mlp:MLPForecaster", "torch", "torch"),
    "GLOBAL": _Entry("flts.models.global_mlp:GlobalForecaster", "torch", "torch"),
    "PROPHET": _Entry("flts.models.prophet:ProphetForecaster", "prophet", "prophet"),
    "ENSEMBLE": _Entry("flts.models.ensemble:Ensemble", None, None),
}


def model_class(model_type: str) -> type[Forecaster]:
    """The class for ``model_type`` (case-insensitive); clear errors for unknown names and
    missing extras."""
    key = model_type.strip().upper()
    entry = MODEL_TYPES.get(key)
    if entry is None:
        raise ConfigurationError(
            f"unknown model type {model_type!r}; choose from {', '.join(MODEL_TYPES)}"
        )
    cls: type[Forecaster] = import_target(entry.target, package=entry.package, extra=entry.extra)
    return cls


def parse_model_types(text: str) -> list[str]:
    """``"lstm, Ridge"`` -> ``["LSTM", "RIDGE"]``, rejecting unknown names up front."""
    names = [part.strip().upper() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in MODEL_TYPES]
    if unknown:
        raise ConfigurationError(
            f"unknown model types {unknown}; choose from {', '.join(MODEL_TYPES)}"
        )
    if not names:
        raise ConfigurationError("no model types given")
    return names
