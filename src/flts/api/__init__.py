"""The inference API: serves each identifier's champion over HTTP and follows promotions.

>>> from flts.api import create_app
>>> app = create_app(ServiceContext(Settings()))  # doctest: +SKIP

The forecast path, in the order a request takes it:

* :mod:`~flts.api.asgi`: the one ASGI entry (:class:`InferenceApp`) and its middleware stack;
  the two forecast routes, everything else to FastAPI (:mod:`~flts.api.routes`).
* :mod:`~flts.api.service`: :class:`ForecastService`, the forecast path without HTTP.
* :mod:`~flts.api.forms`: the request forms, decoded and validated in one place;
  :mod:`~flts.api.diagnosis` describes a refused request; :mod:`~flts.api.answers` builds
  answers; :mod:`~flts.api.errors` turns every error into a problem document.

Models: :mod:`~flts.api.holder` (atomic swaps), :mod:`~flts.api.sources` (where champions come
from, cold start from the local cache), :mod:`~flts.api.warmup`, :mod:`~flts.api.watcher`
(pointer polling + ``model-selected``). Also :mod:`~flts.api.app` (factory, ``serve``),
:mod:`~flts.api.schemas` (the documented bodies), :mod:`~flts.api.metrics`.
"""

from flts.api.app import create_app, default_replica_id, serve
from flts.api.asgi import InferenceApp
from flts.api.holder import LoadedModel, ModelHolder, RefreshOutcome
from flts.api.service import ForecastService
from flts.api.sources import ModelSource, PromotionModelSource, TrackingModelSource

__all__ = [
    "ForecastService",
    "InferenceApp",
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
