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

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import ASGIApp

from flts.api.errors import problem_responses


def error_responses(schema: type[BaseModel], *codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a protocol route's refusals: problem documents with the
    members of ``schema``."""
    return problem_responses(*codes, schema=schema.model_json_schema())


def answered_by(framework: FastAPI, path: str, route: ASGIApp) -> None:
    """Make ``route`` the ASGI app of FastAPI's documented POST route ``path``, so a request
    answered through FastAPI's router gets the very same answer as on the fast path."""
    for candidate in framework.router.routes:
        if isinstance(candidate, APIRoute) and candidate.path == path:
            candidate.app = route
