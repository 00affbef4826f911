"""Standard serving protocols beside the native routes: the Open Inference Protocol v2
(:mod:`flts.api.protocols.oip`, what KServe and Triton clients speak) and MLflow's scoring
protocol (:mod:`flts.api.protocols.mlflow_scoring`, what tools built for ``mlflow models
serve`` send).

A protocol module only translates shapes: it turns the protocol's request into the native
body of ``POST /v1/forecast`` or ``POST /v1/forecast/batch``, has
:class:`~flts.api.service.ForecastService` decode, validate and answer it exactly as the native
route does (the same forms, the same 422 lines, the same ledger record, the same lineage
headers), and turns the native answer into the protocol's. Each registers itself on an
:class:`~flts.api.asgi.InferenceApp` with one call from the app factory. docs/clients.md
documents both.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import ASGIApp

from flts.api.errors import PROBLEM_JSON
from flts.api.holder import LoadedModel
from flts.api.service import ForecastService
from flts.exceptions import ModelUnavailableError, NotFoundError


async def serving_model(service: ForecastService, identifier: str | None) -> LoadedModel:
    """The model serving ``identifier`` (the service's resolution), told apart when missing:
    an identifier the promotion store has never heard of is a 404 (an unknown model, as
    protocol clients expect), one with a champion still loading a 503 with ``Retry-After``."""
    try:
        return service.resolve(identifier)
    except ModelUnavailableError:
        if identifier is None:
            raise
        known = await anyio.to_thread.run_sync(service.holder.source.identifiers)
        if identifier not in known:
            raise NotFoundError(
                f"no model named {identifier!r}: nothing has been promoted for that identifier "
                "(GET /v1/models lists the models this replica serves)"
            ) from None
        raise


def error_responses(schema: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a protocol route's refusals: problem documents with the
    members of ``schema``."""
    document = schema.model_json_schema()
    return {
        code: {
            "description": "Refused (the reasons in `problems`)",
            "content": {PROBLEM_JSON: {"schema": document}},
        }
        for code in codes
    }


def answered_by(framework: FastAPI, path: str, route: ASGIApp) -> None:
    """Make ``route`` the ASGI app of FastAPI's documented POST route ``path``, so a request
    answered through FastAPI's router gets the very same answer as on the fast path."""
    for candidate in framework.router.routes:
        if isinstance(candidate, APIRoute) and candidate.path == path:
            candidate.app = route
