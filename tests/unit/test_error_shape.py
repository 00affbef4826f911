"""One error shape on both HTTP apps: the gateway and the inference API answer the same kind of
refusal with the same problem document (``application/problem+json``; ``type``, ``title``,
``status``, ``detail``, ``problems``), whichever layer refuses: the auth layer (401), the
router (404, 405 with the path's ``Allow``) or request validation (422)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flts.api import PromotionModelSource, create_app
from flts.api.errors import PROBLEM_JSON, PROBLEM_SCHEMA
from flts.exceptions import ModelError
from flts.models import Forecaster
from flts.promotion import PromotionStore
from flts.security import create_key
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from flts.settings import SecuritySettings
from helpers import GatewayClient, memory_settings

BAD_IDENTIFIER = "-not an identifier-"


def _no_model(run_id: str) -> Forecaster:
    raise ModelError(f"no model {run_id!r} in this test")


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[tuple[GatewayClient, GatewayClient, str]]:
    """The inference API and the gateway behind the same keys file, and a key of both."""
    keys = tmp_path / "keys.json"
    key = create_key(keys, "both", ["forecast", "upload"])
    settings = memory_settings(tmp_path).model_copy(
        update={"security": SecuritySettings(keys_file=keys)}
    )
    context = ServiceContext(settings)
    source = PromotionModelSource(PromotionStore(context.store), _no_model)
    inference = create_app(context, replica_id="shape", follow_bus=False, source=source)
    yield GatewayClient(inference), GatewayClient(create_gateway_app(context)), key
    context.close()


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The body of a refusal, checked against the shape both apps document."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON
    document: dict[str, Any] = response.json()
    assert set(PROBLEM_SCHEMA["required"]) <= set(document)
    assert document["status"] == status
    assert document["problems"]
    assert all(isinstance(p, str) for p in document["problems"])
    assert document["detail"] == "; ".join(document["problems"])
    return document


def _same_shape(inference: httpx.Response, gateway: httpx.Response, status: int) -> None:
    ours, theirs = _problem(inference, status), _problem(gateway, status)
    assert set(ours) == set(theirs)
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in theirs.items()}
    assert ours["title"] == theirs["title"]


def test_missing_key_is_the_same_401(apps: tuple[GatewayClient, GatewayClient, str]) -> None:
    inference, gateway, _ = apps
    first, second = inference.get("/v1/models"), gateway.get("/v1/datasets")
    _same_shape(first, second, 401)
    assert first.headers["www-authenticate"] == second.headers["www-authenticate"]


def test_unknown_path_is_the_same_404(apps: tuple[GatewayClient, GatewayClient, str]) -> None:
    inference, gateway, key = apps
    auth = {"Authorization": f"Bearer {key}"}
    _same_shape(
        inference.get("/v1/nothing-here", headers=auth),
        gateway.get("/v1/nothing-here", headers=auth),
        404,
    )


def test_bad_query_is_the_same_422(apps: tuple[GatewayClient, GatewayClient, str]) -> None:
    inference, gateway, key = apps
    auth = {"Authorization": f"Bearer {key}"}
    first = inference.get(
        "/v1/models/champion", params={"identifier": BAD_IDENTIFIER}, headers=auth
    )
    second = gateway.get("/v1/datasets", params={"identifier": BAD_IDENTIFIER}, headers=auth)
    _same_shape(first, second, 422)
    for response in (first, second):
        assert any(BAD_IDENTIFIER in line for line in response.json()["problems"])


def test_wrong_method_is_the_same_405_with_every_allowed_method(
    apps: tuple[GatewayClient, GatewayClient, str],
) -> None:
    inference, gateway, key = apps
    auth = {"Authorization": f"Bearer {key}"}
    first = inference.request("DELETE", "/v1/forecast", headers=auth)
    second = gateway.request("DELETE", "/v1/datasets", headers=auth)
    _same_shape(first, second, 405)
    assert first.headers["allow"] == "POST"
    # GET (listing) and POST (upload) are two routes of one path: both are named
    assert {m.strip() for m in second.headers["allow"].split(",")} >= {"GET", "POST"}
