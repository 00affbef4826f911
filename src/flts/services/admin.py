"""The admin HTTP API of the gateway: promote, rollback and history over the same promotion
code as ``flts promote`` and ``flts rollback`` (:mod:`flts.promotion.manual`).

Routes (every one needs a key with the ``admin`` scope; docs/security.md)::

    POST /v1/admin/promote                  {"run_id": "...", "reason": "..."}
    POST /v1/admin/rollback                 {"identifier": "global", "reason": "..."}
    GET  /v1/admin/history?identifier=NAME  the current champion and every history entry

The name of the calling key is recorded as ``actor`` in the history entry, so the history
says who promoted what. Both writes answer the recorded promotion.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from flts.api.errors import problem_responses
from flts.api.routes import body_schema
from flts.events import Identifier
from flts.exceptions import DataValidationError
from flts.promotion import promote_run, rollback_champion
from flts.security.guard import principal_of
from flts.services.context import ServiceContext

ADMIN_PREFIX = "/v1/admin"
_Body = TypeVar("_Body", bound=BaseModel)


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="promoted through the admin API", max_length=500)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identifier: Identifier = "global"
    reason: str = Field(default="rolled back through the admin API", max_length=500)


def _problems(exc: ValidationError) -> DataValidationError:
    return DataValidationError(
        *(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
    )


async def _body(request: Request, model: type[_Body]) -> _Body:
    """The JSON body as ``model``; anything else is a 422 listing every problem."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise _problems(exc) from exc


def admin_router(context: ServiceContext) -> APIRouter:
    """The admin routes over ``context``'s promotion store, tracker and bus."""
    router = APIRouter(prefix=ADMIN_PREFIX)

    # Both writes fail with 422 for a run the tracking store does not have or an identifier
    # with nothing to roll back to, and with 503 while a backend cannot be reached.
    refusals = problem_responses(422, 503)

    @router.post(
        "/promote",
        response_model=None,
        responses=refusals,
        openapi_extra=body_schema(PromoteRequest),
    )
    async def promote(request: Request) -> Response:
        """Make a trained run the champion of its identifier."""
        body = await _body(request, PromoteRequest)
        actor = principal_of(request.scope).name
        promotion = await run_in_threadpool(
            promote_run, context, body.run_id, reason=body.reason, actor=actor
        )
        return JSONResponse(promotion.model_dump(mode="json"))

    @router.post(
        "/rollback",
        response_model=None,
        responses=refusals,
        openapi_extra=body_schema(RollbackRequest),
    )
    async def rollback(request: Request) -> Response:
        """Restore the previous valid champion of an identifier."""
        body = await _body(request, RollbackRequest)
        actor = principal_of(request.scope).name
        promotion = await run_in_threadpool(
            rollback_champion, context, body.identifier, reason=body.reason, actor=actor
        )
        return JSONResponse(promotion.model_dump(mode="json"))

    @router.get("/history", response_model=None, responses=problem_responses(422, 503))
    def history(identifier: Annotated[Identifier, Query()] = "global") -> Response:
        """The champion of ``identifier`` and its promotion history, oldest first."""
        promotions = context.promotions
        current = promotions.current(identifier)
        document: dict[str, Any] = {
            "identifier": identifier,
            "current": None if current is None else current.model_dump(mode="json"),
            "history": [p.model_dump(mode="json") for p in promotions.history(identifier)],
        }
        return JSONResponse(document)

    return router
