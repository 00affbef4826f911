"""Helpers of the security tests: keys per scope, an in-process HTTP client over any ASGI app,
and the list of routes of an app, read from the app itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Route
from starlette.types import ASGIApp

from flts.security import create_key

#: A value for every path parameter of the two apps, shaped as the route expects.
PATH_VALUES = {"dataset_id": "20240131T235959Z-0123456789ab", "identifier": "S1", "name": "S1"}


@dataclass(frozen=True)
class Keys:
    """A keys file with one key per scope, and a well-formed key that is not in it."""

    path: Path
    forecast: str
    upload: str
    admin: str
    unknown: str

    def header(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


def make_keys(directory: Path) -> Keys:
    path = directory / "api-keys.json"
    keys = {
        scope: create_key(path, f"{scope}-holder", [scope])
        for scope in ("forecast", "upload", "admin")
    }
    # A real key of another file: the right shape, the wrong secret.
    unknown = create_key(directory / "other-keys.json", "stranger", ["admin"])
    return Keys(path, keys["forecast"], keys["upload"], keys["admin"], unknown)


class AsgiClient:
    """Synchronous requests to an ASGI app in-process (httpx's ASGI transport)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())


def http_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app routes, included routers too, with the path parameters
    filled in; checked against the OpenAPI document so nothing the app serves is missed."""
    found: set[tuple[str, str]] = set()
    templates: set[str] = set()

    def walk(routes: Iterable[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute | Route):
                path = prefix + route.path
                templates.add(path)
                for method in route.methods or ():
                    if method != "HEAD":
                        found.add((method, path.format(**PATH_VALUES)))
                continue
            context = getattr(route, "include_context", None)  # FastAPI's included router
            if context is None:
                raise AssertionError(f"unknown kind of route {route!r}: teach http_routes")
            walk(context.included_router.routes, prefix + context.prefix)

    walk(app.routes, "")
    documented = set(app.openapi()["paths"])
    assert documented <= templates, f"routes missed: {documented - templates}"
    return found
