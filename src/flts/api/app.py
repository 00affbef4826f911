"""The inference app factory and the single-process server behind ``flts serve``.

One app instance is one replica: its own :class:`~flts.api.holder.ModelHolder`, metrics
registry and consumer group (``serve-<replica_id>``), so any number of replicas (or of apps in
one test process) each learn of every promotion. :func:`create_app` returns the complete ASGI
app (:class:`~flts.api.asgi.InferenceApp`); uvicorn runs exactly that.
"""

from __future__ import annotations

import inspect
import os
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from flts.api import heap
from flts.api.asgi import InferenceApp
from flts.api.errors import document_contract, install_error_handlers
from flts.api.holder import ColdLoadListener, LoadedModel, LoadListener, ModelHolder
from flts.api.metrics import ApiMetrics
from flts.api.protocols import mlflow_scoring, oip
from flts.api.routes import build_router, document_forecast_routes
from flts.api.service import ForecastService
from flts.api.sources import ModelSource, TrackingModelSource
from flts.api.watcher import ChampionWatcher
from flts.events import validate_topic
from flts.exceptions import ConfigurationError, EventValidationError
from flts.live.ledger import ForecastLedger
from flts.live.observations import ObservationLog
from flts.promotion import Promotion
from flts.services.context import ServiceContext
from flts.shards import Shard


def default_replica_id() -> str:
    """``<host>-<pid>``: unique per process, so two replicas on one machine never share a
    consumer group (which would split the broadcast between them)."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-.") or "host"
    return f"{host[:60]}-{os.getpid()}"


@dataclass
class ServingCore:
    """What answers forecasts, without HTTP: the model holder, the forecast service (with the
    observation log it reads and the ledger it records into) and the champion watcher. The
    inference app serves it over HTTP; the ``forecaster`` worker calls it directly."""

    holder: ModelHolder
    service: ForecastService
    watcher: ChampionWatcher
    ledger: ForecastLedger | None

    @classmethod
    def build(
        cls,
        context: ServiceContext,
        replica: str,
        *,
        source: ModelSource | None = None,
        on_load: LoadListener | None = None,
        on_cold_load: ColdLoadListener | None = None,
        group: str | None = None,
    ) -> ServingCore:
        """Parts of one replica named ``replica``; ``group``: follow promotions on the bus
        in that consumer group (None: pointer polling only)."""
        settings = context.settings
        serving = settings.serving
        holder = ModelHolder(
            source or TrackingModelSource(context),
            on_load=on_load,
            max_resident_bytes=serving.max_resident_bytes,
            shard=Shard.parse(serving.shard),
            on_cold_load=on_cold_load,
        )
        # read-only here: forecasts from the rows stations reported (POST /v1/observations)
        observations = ObservationLog(context.store, settings.feature_spec)
        live = settings.live
        ledger = None
        if live.ledger_sample > 0:
            ledger = ForecastLedger(
                context.store,
                replica,
                sample=live.ledger_sample,
                flush_seconds=live.ledger_flush_seconds,
                max_pending=live.ledger_max_pending,
            )
        watcher = ChampionWatcher(
            holder,
            poll_seconds=serving.pointer_poll_seconds,
            full_listing_seconds=serving.full_listing_seconds,
            bus=(lambda: context.bus) if group else None,
            group=group,
        )
        service = ForecastService(holder, settings.serving, observations, ledger)
        return cls(holder=holder, service=service, watcher=watcher, ledger=ledger)

    def start(self) -> None:
        self.watcher.start()
        if self.ledger is not None:
            self.ledger.start()

    def stop(self) -> None:
        """Stop following promotions, then write the forecasts still in the ledger."""
        self.watcher.stop()
        self.holder.close()
        if self.ledger is not None:
            self.ledger.stop()


def create_app(
    context: ServiceContext,
    *,
    replica_id: str | None = None,
    follow_bus: bool = True,
    source: ModelSource | None = None,
    close_context: bool = False,
    manage_heap: bool = False,
) -> InferenceApp:
    """Build one inference replica.

    ``source`` defaults to the context's promotion store plus tracker; ``follow_bus=False``
    relies on pointer polling alone. The lifespan starts the champion watcher (first poll at
    once) and stops it; it also closes ``context`` when ``close_context`` is set (the app owns
    it), otherwise that stays the caller's job. ``manage_heap`` applies the serving
    collector policy of :mod:`flts.api.heap` to the whole process: for the process that runs
    the replica (``flts serve``), not for apps embedded in another program.
    """
    settings = context.settings
    replica = replica_id or default_replica_id()
    group = f"serve-{replica}"
    try:
        validate_topic(group)
    except EventValidationError as exc:
        raise ConfigurationError(
            f"replica id {replica!r} cannot name a consumer group: {exc}"
        ) from exc

    metrics = ApiMetrics()
    settle = heap.SettleThrottle()

    def on_load(
        identifier: str,
        promotion: Promotion,
        loaded: LoadedModel | None,
        error: BaseException | None,
    ) -> None:
        metrics.on_load(identifier, promotion, loaded, error)
        if manage_heap and loaded is not None:
            settle()

    core = ServingCore.build(
        context,
        replica,
        source=source,
        on_load=on_load,
        on_cold_load=metrics.on_cold_load,
        group=group if follow_bus else None,
    )
    holder, service, watcher = core.holder, core.service, core.watcher
    metrics.watch_holder(holder)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_heap:
            heap.install()
        core.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(core.stop)
            if close_context:
                context.close()

    framework = FastAPI(
        title="FLTS inference API",
        summary="Forecasts of cellular base-station load from the promoted champion model.",
        lifespan=lifespan,
        **_no_native_telemetry(),
    )
    install_error_handlers(framework)
    framework.include_router(build_router(service, metrics))
    app = InferenceApp(
        service=service,
        framework=framework,
        metrics=metrics,
        watcher=watcher,
        replica_id=replica,
        security=settings.security,
    )
    document_forecast_routes(framework, app.routes)
    oip.register(framework, app)
    mlflow_scoring.register(framework, app)
    document_contract(framework, app.guards)  # after the protocols added their open probes
    return app


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI >= 0.16x asks OpenTelemetry on every request whether its native telemetry is
    configured (tens of microseconds); this app exports Prometheus metrics itself, so turn
    it off where the option exists (older FastAPI has no such per-request cost)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def app_from_environment() -> InferenceApp:
    """Uvicorn factory for ``flts serve --workers N``: each worker process builds its own
    settings (``FLTS_*``), context, model and consumer group (``serve-<host>-<pid>``), so
    every worker learns of every promotion; the context closes with the worker."""
    from flts.settings import Settings

    return create_app(ServiceContext(Settings()), close_context=True, manage_heap=True)


def uvicorn_options(serving_timeout: float) -> dict[str, Any]:  # passed on as **kwargs
    """The fast HTTP stack (uvloop event loop, httptools parser) and no access log: a log
    line per request is per-request I/O that would cost more than the forecast itself
    (``flts_http_requests_total`` counts every request instead)."""
    return {
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": "info",
        "timeout_graceful_shutdown": max(5, round(serving_timeout)),
    }


def serve(
    context: ServiceContext,
    host: str | None = None,
    port: int | None = None,
    *,
    replica_id: str | None = None,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Run uvicorn until SIGINT/SIGTERM, then close the context.

    uvicorn's own log lines (start-up, shutdown, errors with their tracebacks) are JSON
    lines at ``log_level`` like the service's, in every worker process
    (:func:`flts.logs.uvicorn_log_config`).

    One worker serves this process's ``context`` (and ``replica_id``). ``workers > 1`` starts
    that many worker processes (one per core is the sweet spot), each loading its own copy
    of the model from the environment's settings via :func:`app_from_environment`.
    """
    import uvicorn

    from flts.logs import uvicorn_log_config

    serving = context.settings.serving
    options: Any = uvicorn_options(serving.request_timeout)
    options.update(log_level=log_level, log_config=uvicorn_log_config("serve", log_level))
    bind: Any = {"host": host or serving.host, "port": port or serving.port}
    try:
        if workers > 1:
            context.close()  # each worker opens its own
            uvicorn.run(
                "flts.api.app:app_from_environment",
                factory=True,
                workers=workers,
                **bind,
                **options,
            )
        else:
            app = create_app(context, replica_id=replica_id, manage_heap=True)
            uvicorn.run(app, workers=1, **bind, **options)
    finally:
        context.close()
