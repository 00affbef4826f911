"""The dashboard's routes on the gateway app, in-process: the page and its files, who the key
is, and clear 4xx answers for bad parameters and unknown names (the data itself is checked in
test_ui_readmodels.py and, in a browser, in tests/ui)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flts.security import create_key
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from helpers import GatewayClient, memory_settings


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[GatewayClient, dict[str, str]]]:
    keys = tmp_path / "keys.json"
    key = create_key(keys, "viewer", ["upload"])
    context = ServiceContext(memory_settings(tmp_path, security={"keys_file": keys}))
    yield GatewayClient(create_gateway_app(context)), {"Authorization": f"Bearer {key}"}
    context.close()


def test_the_page_and_its_files_are_served(gateway: tuple[GatewayClient, dict[str, str]]) -> None:
    client, _ = gateway
    page = client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert '<script src="/ui/static/app.js"' in page.text
    script = client.get("/ui/static/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/static/app.css").headers["content-type"].startswith("text/css")
    plotly = client.get("/ui/static/vendor/plotly.min.js")
    assert plotly.status_code == 200
    assert plotly.headers["content-type"].startswith("text/javascript")
    assert len(plotly.content) > 1_000_000  # the library itself, from the installed package


def test_whoami_names_the_key_and_its_scopes(
    gateway: tuple[GatewayClient, dict[str, str]],
) -> None:
    client, auth = gateway
    assert client.get("/ui/api/whoami").status_code == 401
    assert client.get("/ui/api/whoami", headers=auth).json() == {
        "name": "viewer",
        "scopes": ["upload"],
    }


@pytest.mark.parametrize(
    ("path", "status", "problem"),
    [
        ("/ui/api/fleet?sort=secret&limit=0", 422, "sort must be one of"),
        ("/ui/api/fleet?limit=0", 422, "limit must be between 1 and 500"),
        ("/ui/api/stations/bad%20name", 422, "identifier"),
        ("/ui/api/stations/Nobody", 404, "no champion and no dataset"),
        ("/ui/api/stations/Nobody/series", 404, "no champion"),
        ("/ui/api/stations/Nobody/series?points=0", 422, "points must be between"),
        ("/ui/api/promotions/Nobody", 404, "no promotion"),
        ("/ui/api/decisions?limit=1000", 422, "limit must be between 1 and 200"),
        ("/ui/api/datasets/not-an-id/progress", 422, "invalid dataset id"),
        ("/ui/api/datasets/20240131T235959Z-0123456789ab/progress", 404, "no dataset"),
        ("/ui/api/datasets/20240131T235959Z-0123456789ab/explore", 404, "no dataset"),
    ],
)
def test_bad_requests_are_answered_with_the_reason(
    gateway: tuple[GatewayClient, dict[str, str]], path: str, status: int, problem: str
) -> None:
    client, auth = gateway
    answer = client.get(path, headers=auth)
    assert answer.status_code == status, answer.text
    assert problem in answer.json()["detail"]


def test_an_empty_system_has_an_empty_fleet(gateway: tuple[GatewayClient, dict[str, str]]) -> None:
    client, auth = gateway
    fleet = client.get("/ui/api/fleet", headers=auth).json()
    assert (fleet["total"], fleet["rows"]) == (0, [])
    assert client.get("/ui/api/decisions", headers=auth).json() == {"decisions": [], "total": 0}
