"""The dashboard's routes, mounted by the gateway (:func:`ui_router`).

Routes::

    GET /ui/                                  the page (one HTML shell; pages are #/fleet,
                                              #/station/<id>, #/decisions, #/promotions/<id>,
                                              #/data, #/data/<dataset_id>)
    GET /ui/static/app.js, /ui/static/app.css the page's own JavaScript and CSS
    GET /ui/static/vendor/plotly.min.js       the charting library, from the installed plotly
                                              package (no CDN: the dashboard works offline)
    GET /ui/api/whoami                        the calling key's name and scopes
    GET /ui/api/fleet?offset&limit&sort&order&q&state
    GET /ui/api/stations/{identifier}
    GET /ui/api/stations/{identifier}/series?target&points
    GET /ui/api/decisions[?identifier]
    GET /ui/api/promotions/{identifier}
    GET /ui/api/datasets/{dataset_id}/progress
    GET /ui/api/datasets/{dataset_id}/explore?points

Access (:data:`UI_OPEN_PATHS`; docs/security.md): the shell and the
static files are open, since they hold no data and the page must load before it can ask for a
key; every ``/ui/api`` route needs a key with the ``upload`` scope, like the datasets it shows.
The page keeps the key in ``sessionStorage`` and sends it as ``Authorization: Bearer``. Writes
(upload, promote, rollback) go to the gateway's own routes (``POST /v1/datasets``, the admin
API), so the dashboard adds no write path of its own.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse

from flts.datasets import is_dataset_id
from flts.events import check_identifier
from flts.exceptions import DataValidationError, NotFoundError
from flts.security.guard import principal_of
from flts.services.context import ServiceContext
from flts.ui.explore import DEFAULT_POINTS
from flts.ui.readmodels import Dashboard

UI_PREFIX = "/ui"
STATIC_PREFIX = f"{UI_PREFIX}/static/"
API_PREFIX = f"{UI_PREFIX}/api/"
_STATIC = Path(str(resources.files("flts.ui") / "static"))
#: The page's own assets: one route each (a fixed list, so nothing else under the package's
#: folder can be asked for).
ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
PLOTLY_PATH = f"{STATIC_PREFIX}vendor/plotly.min.js"
#: Exact paths the gateway leaves open: the HTML shell and the static files carry no data and
#: must load before the page can ask for a key. Every other ``/ui`` path (the ``/ui/api`` read
#: models) takes the gateway's default, the ``upload`` scope.
UI_OPEN_PATHS = (
    UI_PREFIX,
    f"{UI_PREFIX}/",
    *(f"{STATIC_PREFIX}{name}" for name in ASSETS),
    PLOTLY_PATH,
)
#: Headers of the shell: never cached (it names the current assets), never framed by another
#: site (its buttons promote and roll back), scripts and data from this origin only (plotly
#: sets inline styles; its images are data: URLs).
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
}


def _identifier(value: str) -> str:
    return check_identifier(value, prefix="identifier: ")


def _dataset_id(value: str) -> str:
    if not is_dataset_id(value):
        raise DataValidationError(
            f"invalid dataset id {value!r}: expected the form '20240131T235959Z-0123456789ab'"
        )
    return value


def plotly_script() -> Path | None:
    """``plotly.min.js`` of the installed plotly package, or ``None`` without it."""
    try:
        path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


def _asset(name: str, media_type: str) -> Any:
    def asset() -> Response:
        return FileResponse(_STATIC / name, media_type=media_type)

    return asset


def _answer(document: Any) -> Response:
    """JSON with NaN and infinities as ``null`` (stored figures may hold them; strict JSON
    cannot, and the page treats ``null`` as "no figure")."""
    return Response(orjson.dumps(document), media_type="application/json")


def ui_router(context: ServiceContext) -> APIRouter:
    """The dashboard's page, assets and read models over ``context``."""
    board = Dashboard(context)
    router = APIRouter()

    @router.get(UI_PREFIX, include_in_schema=False)
    @router.get(f"{UI_PREFIX}/", include_in_schema=False)
    def page() -> Response:
        """The single page; the key and the page shown live in the browser."""
        return HTMLResponse((_STATIC / "index.html").read_text(), headers=_PAGE_HEADERS)

    @router.get(PLOTLY_PATH, include_in_schema=False)
    def plotly() -> Response:
        path = plotly_script()
        if path is None:
            raise NotFoundError(
                "the charting library is not installed (pip install 'flts[server]')"
            )
        return FileResponse(path, media_type="text/javascript")

    for name, media_type in ASSETS.items():
        router.add_api_route(
            f"{STATIC_PREFIX}{name}",
            _asset(name, media_type),
            methods=["GET"],
            include_in_schema=False,
        )

    @router.get(f"{API_PREFIX}whoami", include_in_schema=False)
    def whoami(request: Request) -> dict[str, Any]:
        principal = principal_of(request.scope)
        return {"name": principal.name, "scopes": sorted(principal.scopes)}

    @router.get(f"{API_PREFIX}fleet", include_in_schema=False)
    def fleet(
        offset: int = 0,
        limit: int = 50,
        sort: str = "identifier",
        order: str = "asc",
        q: str = "",
        state: str = "",
    ) -> Response:
        page = board.fleet(offset=offset, limit=limit, sort=sort, order=order, query=q, state=state)
        return _answer(page)

    @router.get(f"{API_PREFIX}stations/{{identifier}}", include_in_schema=False)
    def station(identifier: str) -> Response:
        return _answer(board.station(_identifier(identifier)))

    @router.get(f"{API_PREFIX}stations/{{identifier}}/series", include_in_schema=False)
    def series(identifier: str, target: str = "down", points: int = 500) -> Response:
        return _answer(board.series(_identifier(identifier), target, points))

    @router.get(f"{API_PREFIX}decisions", include_in_schema=False)
    def decisions(identifier: str | None = None, limit: int = 20) -> Response:
        if not 1 <= limit <= 200:
            raise DataValidationError(f"limit must be between 1 and 200, got {limit}")
        name = None if identifier is None else _identifier(identifier)
        return _answer(board.decisions(name, limit))

    @router.get(f"{API_PREFIX}promotions/{{identifier}}", include_in_schema=False)
    def promotions(identifier: str) -> Response:
        return _answer(board.promotions(_identifier(identifier)))

    @router.get(f"{API_PREFIX}datasets/{{dataset_id}}/progress", include_in_schema=False)
    def progress(dataset_id: str) -> Response:
        return _answer(board.progress(_dataset_id(dataset_id)))

    @router.get(f"{API_PREFIX}datasets/{{dataset_id}}/explore", include_in_schema=False)
    def explore(dataset_id: str, points: int = DEFAULT_POINTS) -> Response:
        return _answer(board.explore(_dataset_id(dataset_id), points))

    return router
