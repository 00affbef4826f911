"""``flts worker``, ``flts serve``, ``flts gateway``: one service per OS process."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from flts.cli._choices import ModelType, WorkerName
from flts.cli._common import load_settings, state, user_errors
from flts.logs import LogLevel

app = typer.Typer()


def _start_logging(service: str) -> str:
    """JSON logs from the first line on (a configuration error is a JSON line too); the
    level is ``--log-level`` / ``FLTS_LOG_LEVEL``, else info. Returns the level for uvicorn."""
    from flts.logs import configure_logging

    level = (state.log_level or LogLevel.INFO).value
    configure_logging(service, level)
    state.service = True
    return level


@app.command("worker")
def worker(
    name: Annotated[WorkerName, typer.Argument(help="The worker to run.")],
    model: Annotated[
        ModelType | None,
        typer.Option(
            "--model", case_sensitive=False, help="Model type for a trainer (or FLTS_MODEL_TYPE)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve /healthz, /readyz and /metrics on this port (FLTS_METRICS_PORT).",
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            "--metrics-host",
            help="Bind address of the health server (0.0.0.0 in a pod) (FLTS_METRICS_HOST).",
        ),
    ] = None,
) -> None:
    """Run one pipeline worker until SIGTERM/Ctrl-C."""
    model_type = model.value if model is not None else None
    _start_logging(f"worker-{name.value}" + (f"-{model_type.lower()}" if model_type else ""))
    from flts.services.context import ServiceContext
    from flts.services.health import HealthServer, HealthState
    from flts.services.runner import build_service, install_stop_signals, run_service

    with user_errors():
        settings = load_settings()
        context = ServiceContext(settings)
        # Configuration errors stop here, at start-up.
        service = build_service(name.value, context, model_type)
    stop = threading.Event()
    install_stop_signals(stop)
    port = metrics_port or settings.worker.metrics_port
    health = HealthState() if port is not None else None
    server = None
    if health is not None and port is not None:
        # Started before consuming so a slow first poll still answers liveness probes.
        host = metrics_host or settings.worker.metrics_host
        server = HealthServer(health, host=host, port=port).start()
    try:
        run_service(service, context, stop, health=health)
    finally:
        if server is not None:
            server.stop()
        context.close()


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (FLTS_SERVING__HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FLTS_SERVING__PORT).")] = None,
    replica_id: Annotated[
        str | None, typer.Option(help="Stable replica name (its own model-selected group).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Worker processes, each with its own model copy (one per core)."),
    ] = 1,
) -> None:
    """Serve the champion over HTTP and follow promotions."""
    level = _start_logging("serve")
    from flts.api import serve as run_api
    from flts.services.context import ServiceContext

    with user_errors():
        settings = load_settings()
    serving = settings.serving
    run_api(
        ServiceContext(settings),
        host=host or serving.host,
        port=port or serving.port,
        replica_id=replica_id,
        workers=workers,
        log_level=level,
    )


@app.command("gateway")
def gateway(
    host: Annotated[str | None, typer.Option(help="Bind address (FLTS_GATEWAY__HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FLTS_GATEWAY__PORT).")] = None,
) -> None:
    """Accept dataset uploads over HTTP and publish them to the pipeline."""
    level = _start_logging("gateway")
    import uvicorn

    from flts.logs import uvicorn_log_config
    from flts.services.context import ServiceContext
    from flts.services.gateway import create_gateway_app

    with user_errors():
        settings = load_settings()
    context = ServiceContext(settings)
    try:
        uvicorn.run(
            create_gateway_app(context),
            host=host or settings.gateway.host,
            port=port or settings.gateway.port,
            # uvicorn's own lines (start-up, errors and their tracebacks) as JSON; warning
            # and up only unless asked: the gateway's own logs say what it does.
            log_config=uvicorn_log_config(
                "gateway", level, uvicorn_level=state.log_level or LogLevel.WARNING
            ),
        )
    finally:
        context.close()
