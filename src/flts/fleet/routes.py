"""``GET /v1/fleet`` on the gateway: one page of the fleet and its overview, as ``flts status``
shows them (:class:`flts.fleet.summary.FleetSummary`), for scripts and other dashboards.

It needs the ``upload`` scope, like every gateway read. Rows are cached for
``gateway.ui_fleet_cache_seconds``, the dashboard's setting, so a client paging through the
fleet costs one build per cache period.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from flts.api.errors import problem_responses
from flts.fleet.summary import MAX_PAGE, FleetSummary
from flts.services.context import ServiceContext

# Literal types so the OpenAPI document lists the choices (FLEET_SORTS and FLEET_STATES;
# tests/unit/test_fleet_summary.py checks they agree).
Sort = Literal[
    "identifier",
    "model_type",
    "evaluation_nrmse",
    "live_nrmse",
    "live_coverage",
    "age_seconds",
    "state",
]
State = Literal["", "ok", "no champion", "retraining", "retrained", "kept", "refused"]


def fleet_router(context: ServiceContext) -> APIRouter:
    """The fleet route over ``context``'s object store."""
    router = APIRouter()
    summary = FleetSummary(context.store, context.settings.gateway.ui_fleet_cache_seconds)

    @router.get(
        "/v1/fleet",
        response_model=None,
        responses={
            200: {
                "description": "One page of stations (`rows`), how many there are and match, "
                "and the fleet's `overview`",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            **problem_responses(422, 503),
        },
    )
    async def fleet(
        offset: Annotated[int, Query(ge=0, description="Stations skipped before the page")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Stations per page")] = 50,
        sort: Annotated[Sort, Query(description="Column the stations are ordered by")] = (
            "identifier"
        ),
        order: Annotated[Literal["asc", "desc"], Query()] = "asc",
        q: Annotated[
            str,
            Query(max_length=64, description="Only stations whose name or model type has this"),
        ] = "",
        state: Annotated[State, Query(description="Only stations in this state")] = "",
    ) -> Response:
        """The fleet, one page at a time (missing values sort last either way)."""
        page = await run_in_threadpool(
            summary.page, offset=offset, limit=limit, sort=sort, order=order, query=q, state=state
        )
        return JSONResponse(page)

    return router
