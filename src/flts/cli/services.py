"""``flts worker``, ``flts serve``, ``flts gateway``: one service per OS process."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from flts.cli._common import load_settings, user_errors

app = typer.Typer()


@app.command("worker")
def worker(
    name: Annotated[
        str,
        typer.Argument(
            help="preprocess | train | evaluate | batch-inference | observations | monitor | "
            "forecaster"
        ),
    ],
    model: Annotated[
        str | None, typer.Option("--model", help="Model type for a trainer (or FLTS_MODEL_TYPE).")
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
    from flts.logs import configure_logging
    from flts.services.context import ServiceContext
    from flts.services.health import HealthServer, HealthState
    from flts.services.runner import build_service, install_stop_signals, run_service

    with user_errors():
        settings = load_settings()
        context = ServiceContext(settings)
        service = build_service(name, context, model)  # config errors stop here, at start-up
    configure_logging(f"worker-{name}" + (f"-{model.lower()}" if model else ""))
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
    from flts.api import serve as run_api
    from flts.logs import configure_logging
    from flts.services.context import ServiceContext

    with user_errors():
        settings = load_settings()
    configure_logging("serve")
    serving = settings.serving
    run_api(
        ServiceContext(settings),
        host=host or serving.host,
        port=port or serving.port,
        replica_id=replica_id,
        workers=workers,
    )


@app.command("gateway")
def gateway(
    host: Annotated[str | None, typer.Option(help="Bind address (FLTS_GATEWAY__HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (FLTS_GATEWAY__PORT).")] = None,
) -> None:
    """Accept dataset uploads over HTTP and publish them to the pipeline."""
    import uvicorn

    from flts.logs import configure_logging
    from flts.services.context import ServiceContext
    from flts.services.gateway import create_gateway_app

    with user_errors():
        settings = load_settings()
    configure_logging("gateway")
    context = ServiceContext(settings)
    try:
        uvicorn.run(
            create_gateway_app(context),
            host=host or settings.gateway.host,
            port=port or settings.gateway.port,
            log_level="warning",
        )
    finally:
        context.close()
