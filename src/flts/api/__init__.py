"""The inference API: serves each identifier's champion over HTTP and follows promotions.

>>> from flts.api import create_app
>>> app = create_app(ServiceContext(Settings()))  # doctest: +SKIP

Modules: :mod:`~flts.api.app` (factory, ``serve``), :mod:`~flts.api.holder` (atomic model
swaps), :mod:`~flts.api.watcher` (pointer polling + ``model-selected``),
:mod:`~flts.api.routes`, :mod:`~flts.api.forecasting` (the validated forecast path),
:mod:`~flts.api.schemas`, :mod:`~flts.api.errors`, :mod:`~flts.api.metrics`,
:mod:`~flts.api.front` (the lean path of the two forecast routes), :mod:`~flts.api.fastpath`.
"""

from flts.api.app import create_app, default_replica_id, serve
from flts.api.holder import (
    LoadedModel,
    ModelHolder,
    ModelSource,
    PromotionModelSource,
    RefreshOutcome,
    TrackingModelSource,
)

__all__ = [
    "LoadedModel",
    "ModelHolder",
    "ModelSource",
    "PromotionModelSource",
    "RefreshOutcome",
    "TrackingModelSource",
    "create_app",
    "default_replica_id",
    "serve",
]
