"""Build every service entry point of an image, in that image's environment: an ImportError
(a runtime import whose package no extra of the image installs) fails it.

Run by ``scripts/image_check.py`` with the interpreter of a virtualenv that has only one
image's extras installed, so nothing from a developer's environment hides a missing package.
Each entry point is built the way its command builds it, on embedded backends (memory bus
and store) so no server is needed: the CLI app, ``flts serve`` (the inference app and the
uvicorn loop and parser it runs with), ``flts gateway`` (its app), every ``flts worker`` the
image runs, the Kafka bus and S3 store backends, and the HTTP client ``flts up`` uses.

Usage: ``python scripts/image_probe.py WORKER[:MODEL] ...``; prints one JSON line.
"""

from __future__ import annotations

import importlib
import json
import sys
import tempfile
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _settings(home: Path) -> Any:
    from flts.settings import Settings

    return Settings(
        home=home,
        bus_url=f"memory://{uuid.uuid4().hex}",
        storage_url=f"memory://{uuid.uuid4().hex}",
        tracking_uri="http://127.0.0.1:9",  # never contacted: the probe builds, not runs
    )


def _cli() -> None:
    from typer.main import get_command

    from flts.cli import app

    get_command(app)


def _serve(home: Path) -> None:
    from flts.api.app import create_app, uvicorn_options
    from flts.services.context import ServiceContext

    options = uvicorn_options(5.0)
    # The event loop and HTTP parser flts serve asks uvicorn for must be installed.
    importlib.import_module(f"uvicorn.loops.{options['loop']}")
    importlib.import_module(f"uvicorn.protocols.http.{options['http']}_impl")
    context = ServiceContext(_settings(home))
    try:
        create_app(context)
    finally:
        context.close()


def _gateway(home: Path) -> None:
    import uvicorn  # noqa: F401 - flts gateway runs it

    from flts.services.context import ServiceContext
    from flts.services.gateway import create_gateway_app

    context = ServiceContext(_settings(home))
    try:
        create_gateway_app(context)
    finally:
        context.close()


def _worker(home: Path, spec: str) -> None:
    from flts.services.context import ServiceContext
    from flts.services.runner import build_service

    name, _, model = spec.partition(":")
    context = ServiceContext(_settings(home))
    try:
        build_service(name, context, model or None)
        if model:  # a trainer imports its model class when it trains
            from flts.models import model_class

            model_class(model)
    finally:
        context.close()


def _backends() -> None:
    importlib.import_module("flts.bus.kafka")
    importlib.import_module("confluent_kafka")
    importlib.import_module("s3fs")
    importlib.import_module("boto3")
    importlib.import_module("mlflow.tracking")
    importlib.import_module("httpx")  # flts up's readiness probes and flts replay
    importlib.import_module("flts.supervisor")


def main(argv: list[str]) -> int:
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        checks: dict[str, Callable[[], None]] = {
            "cli": _cli,
            "serve": lambda: _serve(home),
            "gateway": lambda: _gateway(home),
            "backends": _backends,
        }
        for spec in argv:
            checks[f"worker {spec}"] = lambda spec=spec: _worker(home, spec)  # type: ignore[misc]
        for name, check in checks.items():
            try:
                check()
                results[name] = "ok"
            except ImportError:
                results[name] = traceback.format_exc(limit=-3)
    print(json.dumps(results))
    return 0 if all(value == "ok" for value in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
