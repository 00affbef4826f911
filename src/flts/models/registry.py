"""Model types by name, imported lazily so a missing optional extra (torch, prophet) only
matters when that model type is asked for, with an install hint instead of an ImportError."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, NamedTuple

from flts.exceptions import ConfigurationError, DependencyMissingError

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
    module_name, _, class_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if entry.package and exc.name and exc.name.split(".")[0] == entry.package:
            raise DependencyMissingError(entry.package, entry.extra or "all") from exc
        raise
    cls: type[Forecaster] = getattr(module, class_name)
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
