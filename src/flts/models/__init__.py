"""Forecasters behind one interface; see :mod:`flts.models.base`."""

from flts.models.base import Forecaster, load_model
from flts.models.registry import MODEL_TYPES, model_class, parse_model_types

__all__ = ["MODEL_TYPES", "Forecaster", "load_model", "model_class", "parse_model_types"]
