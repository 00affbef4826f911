"""Every route of the gateway and of the inference API, read from the app objects, refuses a
request without a key, with a key that is not valid and with a key of the wrong scope; only
the probes (and ``/metrics`` unless configured) are open. A route added later is in these
lists without anyone editing them, so it fails here if it escapes authentication."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flts.api import create_app
from flts.api.asgi import InferenceApp
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from helpers import memory_settings

from .support import AsgiClient, Keys, http_routes, make_keys

#: The dashboard's HTML shell and static files hold no data and must load before the page can
#: ask for a key (docs/security.md); its /ui/api data routes are in the protected list.
GATEWAY_OPEN = {
    "/healthz",
    "/ui",
    "/ui/",
    "/ui/static/app.js",
    "/ui/static/app.css",
    "/ui/static/vendor/plotly.min.js",
}
#: The probes of the inference API, its serving protocols' included (flts.api.protocols).
INFERENCE_OPEN = {"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready", "/ping"}


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path)


def _context(tmp_path: Path, keys: Keys | None, **security: Any) -> ServiceContext:
    section = {"keys_file": None if keys is None else keys.path, **security}
    return ServiceContext(memory_settings(tmp_path, security=section))


@pytest.fixture
def gateway(tmp_path: Path, keys: Keys) -> Iterator[tuple[AsgiClient, set[tuple[str, str]]]]:
    context = _context(tmp_path, keys)
    app = create_gateway_app(context)
    yield AsgiClient(app), http_routes(app)
    context.close()


def _inference_routes(app: InferenceApp) -> set[tuple[str, str]]:
    """FastAPI's routes plus the forecast routes answered before FastAPI (the fast path)."""
    return http_routes(app.framework) | {("POST", path) for path in app.routes}


@pytest.fixture
def inference(tmp_path: Path, keys: Keys) -> Iterator[tuple[AsgiClient, set[tuple[str, str]]]]:
    context = _context(tmp_path, keys)
    app = create_app(context, replica_id="security", follow_bus=False)
    yield AsgiClient(app), _inference_routes(app)
    context.close()


def _required_scope(path: str, default: str) -> str:
    return "admin" if path.startswith("/v1/admin/") else default


def _assert_refusals(client: AsgiClient, method: str, path: str, keys: Keys, wrong: str) -> None:
    where = f"{method} {path}"
    missing = client.request(method, path)
    assert missing.status_code == 401, where
    assert missing.headers["www-authenticate"].startswith("Bearer"), where
    invalid = client.request(method, path, headers=keys.header(keys.unknown))
    assert invalid.status_code == 401, where
    assert 'error="invalid_token"' in invalid.headers["www-authenticate"], where
    garbage = client.request(method, path, headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert garbage.status_code == 401, where
    refused = client.request(method, path, headers=keys.header(wrong))
    assert refused.status_code == 403, where
    assert "lacks the" in refused.json()["detail"], where


def test_every_gateway_route_needs_a_key_of_its_scope(
    gateway: tuple[AsgiClient, set[tuple[str, str]]], keys: Keys
) -> None:
    client, routes = gateway
    protected = sorted(r for r in routes if r[1] not in GATEWAY_OPEN)
    assert {p for _, p in routes} >= GATEWAY_OPEN | {"/v1/datasets", "/v1/admin/promote"}
    for method, path in protected:
        scope = _required_scope(path, "upload")
        wrong = keys.upload if scope == "admin" else keys.forecast
        _assert_refusals(client, method, path, keys, wrong)
        # The right key gets past authentication (the route itself may still say 4xx).
        right = getattr(keys, scope)
        allowed = client.request(method, path, headers=keys.header(right))
        assert allowed.status_code not in (401, 403), f"{method} {path}: {allowed.text}"
        # admin keys may do everything
        assert client.request(method, path, headers=keys.header(keys.admin)).status_code not in (
            401,
            403,
        )
    # Refusals are the problem documents of every other error (one shape on both apps).
    refused = client.request("GET", "/v1/datasets")
    assert refused.headers["content-type"] == "application/problem+json"
    assert set(refused.json()) == {"type", "title", "status", "detail", "problems"}


def test_every_inference_route_needs_a_forecast_key(
    inference: tuple[AsgiClient, set[tuple[str, str]]], keys: Keys
) -> None:
    client, routes = inference
    protected = sorted(r for r in routes if r[1] not in INFERENCE_OPEN)
    assert ("POST", "/v1/forecast") in protected
    assert ("POST", "/v1/forecast/batch") in protected
    for method, path in protected:
        _assert_refusals(client, method, path, keys, keys.upload)
        allowed = client.request(method, path, headers=keys.header(keys.forecast), json={})
        assert allowed.status_code not in (401, 403), f"{method} {path}: {allowed.text}"
    refused = client.request("POST", "/v1/forecast")
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 401


@pytest.mark.parametrize("which", ["gateway", "inference"])
def test_open_routes_and_unknown_paths(
    which: str,
    gateway: tuple[AsgiClient, set[tuple[str, str]]],
    inference: tuple[AsgiClient, set[tuple[str, str]]],
) -> None:
    client, routes = gateway if which == "gateway" else inference
    expected_open = GATEWAY_OPEN if which == "gateway" else INFERENCE_OPEN
    for _, path in sorted(r for r in routes if r[1] in expected_open):
        assert client.request("GET", path).status_code not in (401, 403), path
    # A path no route serves is refused before routing: a 404 tells nobody what exists.
    assert client.request("GET", "/no/such/route").status_code == 401
    if which == "gateway":  # the dashboard's own files are open, everything beside them not
        assert client.request("GET", "/ui/static/app.js").status_code == 200
        assert client.request("GET", "/ui/static/missing.js").status_code == 401
        assert client.request("GET", "/ui/api/no-such-read-model").status_code == 401
        assert client.request("GET", "/uix").status_code == 401
    assert client.request("GET", "/docs").status_code == 401


def test_metrics_can_require_a_key(tmp_path: Path, keys: Keys) -> None:
    context = _context(tmp_path, keys, metrics_require_key=True)
    client = AsgiClient(create_app(context, replica_id="metrics", follow_bus=False))
    try:
        assert client.request("GET", "/metrics").status_code == 401
        assert (
            client.request("GET", "/metrics", headers=keys.header(keys.unknown)).status_code == 401
        )
        for key in (keys.forecast, keys.upload):  # any valid key: a scraper needs no scope
            assert client.request("GET", "/metrics", headers=keys.header(key)).status_code == 200
        assert client.request("GET", "/healthz").status_code == 200
    finally:
        context.close()


def test_without_a_keys_file_the_admin_api_is_closed(tmp_path: Path) -> None:
    context = _context(tmp_path, None)
    client = AsgiClient(create_gateway_app(context))
    try:
        assert client.request("GET", "/v1/datasets").status_code == 200
        for method, path in (("GET", "/v1/admin/history"), ("POST", "/v1/admin/rollback")):
            answer = client.request(method, path)
            assert answer.status_code == 403
            assert "disabled" in answer.json()["detail"]
    finally:
        context.close()


def test_a_configured_keys_file_that_is_missing_stops_the_start(tmp_path: Path) -> None:
    from flts.exceptions import ConfigurationError

    context = ServiceContext(
        memory_settings(tmp_path, security={"keys_file": tmp_path / "absent.json"})
    )
    with pytest.raises(ConfigurationError, match="does not exist"):
        create_gateway_app(context)
    with pytest.raises(ConfigurationError, match="does not exist"):
        create_app(context, follow_bus=False)
