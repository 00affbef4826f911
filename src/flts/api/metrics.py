"""Prometheus metrics of one inference app, on its own registry.

A per-app :class:`~prometheus_client.CollectorRegistry` (not the process-global one) lets
several apps live in one process (tests, or an app per identifier) without name clashes.

Series::

    flts_http_requests_total{route,method,status,model_type}
    flts_http_request_duration_seconds{route,method,status,model_type}   histogram
    flts_http_requests_in_flight                                          gauge
    flts_model_loads_total{identifier,model_type}                         successful swaps
    flts_model_load_failures_total{identifier,model_type}                 failed loads/warm-ups
    flts_serving_model_info{identifier,run_id,model_type,config_hash}     1 per served model
    flts_model_degraded{identifier,champion_run_id,serving_run_id}        1 per fallback served
    flts_model_cold_load_seconds                                          histogram: first
                                                                          request to served
    flts_models_resident, flts_models_resident_bytes                      gauges (the cache)
    flts_models_resident_limit_bytes                                      serving bound (0: none)
    flts_model_evictions_total                                            champions evicted

``route`` is the route *template* (``/v1/forecast``), never the raw path, so a scanner
hitting random URLs cannot blow up the series count (unknown paths are ``unmatched``).
``model_type`` is the type of the model that answered, empty when none did.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flts.api.holder import LoadedModel, ModelHolder
from flts.promotion import Promotion

if TYPE_CHECKING:
    from prometheus_client import Metric

#: Scope key where a route records which model type answered (read by the middleware).
MODEL_TYPE_SCOPE_KEY = "flts.model_type"
#: Scope key where the forecast routes record their template (FastAPI records its own).
ROUTE_SCOPE_KEY = "flts.route"

#: Latency buckets from a millisecond (one forecast) to the default 10 s request timeout.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKET_BOUNDS = (*(str(bound) for bound in _BUCKETS), "+Inf")
_REQUEST_LABELS = ("route", "method", "status", "model_type")
#: Cold loads: a RIDGE directory in milliseconds, an ONNX session or a download in seconds.
_COLD_LOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestStats(Collector):
    """Request counts and latency histograms kept as plain numbers, exported at scrape time.

    ``prometheus_client``'s counter and histogram children take a lock per update and a
    histogram observation walks every bucket: about 11 us a request, a seventh of a forecast's
    whole CPU cost. Every update here happens on the event loop, and so does the scrape (the
    ``/metrics`` route is async), so no lock is needed: a request costs one dictionary lookup,
    a bisection and two additions. The series are the same ones the two collectors exported
    (``flts_http_requests_total``, ``flts_http_request_duration_seconds``).
    """

    def __init__(self) -> None:
        #: label values -> [per-bucket counts (not cumulative; the last is +Inf)..., sum]
        self._series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        """Count one request with these label values that took ``seconds``."""
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(_BUCKETS) + 2)
        series[bisect_left(_BUCKETS, seconds)] += 1
        series[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "flts_http_requests",
            "HTTP requests answered, by route template, method, status and model type.",
            labels=_REQUEST_LABELS,
        )
        latency = HistogramMetricFamily(
            "flts_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method, status and model type.",
            labels=_REQUEST_LABELS,
        )
        for labels, series in sorted(self._series.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip(_BUCKET_BOUNDS, series[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            requests.add_metric(labels, cumulative)
            latency.add_metric(labels, buckets, series[-1])
        yield requests
        yield latency


class ApiMetrics:
    """The inference app's collectors and their text exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = RequestStats()
        self.registry.register(self.requests)
        self.in_flight = Gauge(
            "flts_http_requests_in_flight",
            "HTTP requests being processed.",
            registry=self.registry,
        )
        #: Requests being answered: a plain count kept by :class:`MetricsMiddleware` (on the
        #: event loop) and read by the gauge at scrape time, not two locked updates a request.
        self.requests_in_flight = 0
        self.in_flight.set_function(lambda: self.requests_in_flight)
        self.loads = Counter(
            "flts_model_loads",
            "Champion models loaded, warmed up and swapped in.",
            ("identifier", "model_type"),
            registry=self.registry,
        )
        self.load_failures = Counter(
            "flts_model_load_failures",
            "Champion models that failed to load or warm up (the previous model kept serving).",
            ("identifier", "model_type"),
            registry=self.registry,
        )
        self.cold_load = Histogram(
            "flts_model_cold_load_seconds",
            "Time from the first request for a champion not in memory to its being served.",
            buckets=_COLD_LOAD_BUCKETS,
            registry=self.registry,
        )
        self.serving = Info(
            "flts_serving_model",
            "The model serving each identifier.",
            ("identifier",),
            registry=self.registry,
        )

    def on_load(
        self,
        identifier: str,
        promotion: Promotion,
        loaded: LoadedModel | None,
        error: BaseException | None,
    ) -> None:
        """:class:`~flts.api.holder.ModelHolder` listener: count the attempt, update info."""
        if loaded is None:
            self.load_failures.labels(identifier, promotion.model_type).inc()
            return
        self.loads.labels(identifier, promotion.model_type).inc()
        self.serving.labels(identifier).info(
            {
                "run_id": promotion.run_id,
                "model_type": promotion.model_type,
                "config_hash": promotion.config_hash,
            }
        )

    def on_cold_load(self, identifier: str, seconds: float) -> None:
        """:class:`~flts.api.holder.ModelHolder` cold-load listener (not per identifier:
        a fleet's thousands of identifiers would be thousands of series)."""
        self.cold_load.observe(seconds)

    def watch_holder(self, holder: ModelHolder) -> None:
        """Export ``flts_model_degraded`` and the cache's residency from the holder at
        scrape time."""
        self.registry.register(_DegradedCollector(holder))
        self.registry.register(_ResidencyCollector(holder))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy) that times every request of
    the app it wraps: the forecast routes and every FastAPI route alike."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        # (route, method, status, model type) as found in the scope -> the same values as
        # label strings, made once per distinct key
        self._labels: dict[tuple[Any, Any, Any, Any], tuple[str, ...]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app dies before answering, that is what the client sees

        def send_wrapper(message: Message) -> Awaitable[None]:
            # uvicorn's own send coroutine, returned (no coroutine of this wrapper per send)
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        metrics = self.metrics
        metrics.requests_in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.requests_in_flight -= 1
            key = (
                _route(scope),
                scope.get("method", ""),
                status,
                scope.get(MODEL_TYPE_SCOPE_KEY, ""),
            )
            labels = self._labels.get(key)
            if labels is None:
                labels = self._labels[key] = tuple(str(value) for value in key)
            metrics.requests.observe(labels, time.perf_counter() - started)


def _route(scope: dict[str, Any] | Scope) -> str:
    """The route template: the forecast routes name theirs, FastAPI records its match."""
    named = scope.get(ROUTE_SCOPE_KEY)
    if named is not None:
        return str(named)
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class _DegradedCollector(Collector):
    """``flts_model_degraded{identifier,champion_run_id,serving_run_id}``: 1 for every
    identifier served by a fallback because its champion cannot be loaded (no series when
    all is well), read from the holder's one consistent snapshot."""

    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "flts_model_degraded",
            "1 while an identifier is served by a fallback model because its champion cannot "
            "be loaded (see /readyz for the reason).",
            labels=("identifier", "champion_run_id", "serving_run_id"),
        )
        for identifier, loaded in sorted(self.holder.snapshot().items()):
            if loaded.degraded is not None:
                champion = loaded.degraded.champion.run_id
                family.add_metric((identifier, champion, loaded.promotion.run_id), 1.0)
        yield family


class _ResidencyCollector(Collector):
    """The bounded champion cache: models and bytes in memory, its bound, evictions."""

    def __init__(self, holder: ModelHolder) -> None:
        self.holder = holder

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        holder = self.holder
        models = holder.snapshot()
        yield GaugeMetricFamily(
            "flts_models_resident", "Champions in this replica's memory.", value=len(models)
        )
        yield GaugeMetricFamily(
            "flts_models_resident_bytes",
            "Bytes of the saved directories of the champions in memory.",
            value=sum(loaded.size_bytes for loaded in models.values()),
        )
        yield GaugeMetricFamily(
            "flts_models_resident_limit_bytes",
            "serving.max_resident_bytes (0: unbounded).",
            value=holder.max_resident_bytes or 0,
        )
        yield CounterMetricFamily(
            "flts_model_evictions",
            "Champions evicted from memory to stay within serving.max_resident_bytes.",
            value=holder.evictions,
        )
