"""API key authentication as one plain ASGI middleware, around every route of an app.

It sits outside the routing of both HTTP services (docs/security.md): in the inference API
around the fast forecast path and FastAPI alike (:func:`flts.api.asgi.middleware_stack`), in
the gateway around FastAPI's router. Every path needs a key unless the :class:`AccessPolicy`
names it open, so a route added later is protected without anyone remembering to; the probes
``/healthz`` and ``/readyz`` are open (docs/architecture.md, rule 15) and ``/metrics`` is
open unless ``security.metrics_require_key``.

Per request the cost is a dict lookup of the path, a scan of the few request headers and a
dict lookup of the presented key (:class:`~flts.security.keys.KeyRing` remembers verified
keys), all measured in docs/security.md.

Refusals are errors of the tree, rendered by the app's own error translation so they have the
app's usual shape: 401 with ``WWW-Authenticate: Bearer`` for a missing or unknown key, 403 for
a key without the route's scope. The principal of an accepted request is put in the ASGI
scope under :data:`PRINCIPAL_SCOPE_KEY` (the admin API records its name as the actor).

Without a keys file (``security.keys_file`` unset) the data routes are open, every request is
the :data:`ANONYMOUS` principal, and ``admin`` routes are refused: there is never an open admin
API. ``flts up`` and the Helm chart always configure keys.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from starlette.types import ASGIApp, Receive, Scope, Send

from flts.exceptions import AuthenticationError, FLTSError, PermissionDeniedError
from flts.security.keys import KeyRing, Principal

if TYPE_CHECKING:
    from flts.settings import SecuritySettings

log = logging.getLogger(__name__)

#: The ASGI scope key holding the :class:`Principal` of an accepted request.
PRINCIPAL_SCOPE_KEY: Final = "flts.principal"
#: Requirement of a path that needs no key.
OPEN: Final = "open"
#: Requirement of a path that takes a valid key of any scope.
ANY_KEY: Final = "any key"
#: The caller of every request when no keys file is configured.
ANONYMOUS = Principal("anonymous", frozenset({"forecast", "upload"}))
PROBES = ("/healthz", "/readyz")

Render = Callable[[FLTSError], ASGIApp]


class AccessPolicy:
    """What each path needs: :data:`OPEN`, :data:`ANY_KEY` or a scope.

    ``default`` applies to every path not listed (including unknown ones, so a 404 is no
    oracle for which routes exist); ``prefixes`` maps path prefixes to scopes, first match
    wins; ``open_paths`` are further exact paths that need no key (the dashboard's HTML shell,
    which holds no data: docs/security.md).
    """

    def __init__(
        self,
        default: str,
        *,
        prefixes: Mapping[str, str] | None = None,
        metrics_require_key: bool = False,
        open_paths: Iterable[str] = (),
    ) -> None:
        self.default = default
        self.prefixes = tuple((prefixes or {}).items())
        self.exact = dict.fromkeys((*PROBES, *open_paths), OPEN)
        self.exact["/metrics"] = ANY_KEY if metrics_require_key else OPEN

    def required(self, path: str) -> str:
        need = self.exact.get(path)
        if need is not None:
            return need
        for prefix, scope in self.prefixes:
            if path.startswith(prefix):
                return scope
        return self.default


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    for name, value in headers:
        if name == b"authorization":
            if value[:7].lower() != b"bearer ":
                return None
            return value[7:].strip().decode("latin-1")
    return None


class AuthMiddleware:
    """Refuse requests without a key valid for the path (see the module docstring)."""

    def __init__(self, app: ASGIApp, keys: KeyRing, policy: AccessPolicy, render: Render) -> None:
        self.app = app
        self.keys = keys
        self.policy = policy
        self.render = render

    def check(self, scope: Scope) -> Principal | None:
        """The principal allowed to make this request (None on an open path); raises the
        error to answer otherwise."""
        need = self.policy.required(scope["path"])
        if need == OPEN:
            return None
        if not self.keys.configured:
            if need == "admin":
                raise PermissionDeniedError(
                    "the admin API is disabled: no API keys are configured "
                    "(set FLTS_SECURITY__KEYS_FILE; see flts keys create)"
                )
            return ANONYMOUS
        token = bearer_token(scope["headers"])
        if token is None:
            raise AuthenticationError("an API key is required: Authorization: Bearer <key>")
        principal = self.keys.authenticate(token)
        if principal is None:
            raise AuthenticationError("the API key is not valid", invalid_token=True)
        if need != ANY_KEY and not principal.allows(need):
            raise PermissionDeniedError(f"key {principal.name!r} lacks the {need!r} scope")
        return principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A coroutine function, so that uvicorn runs this layer as an ASGI 3 app on its own.
        await self.dispatch(scope, receive, send)

    def dispatch(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """:meth:`__call__` as a plain function returning the coroutine of what answers
        (the app, or the refusal), for an enclosing layer to await: the check needs no
        await, and every frame between uvicorn and a forecast is resumed once more for each
        await of the forecast."""
        if scope["type"] == "lifespan":
            return self.app(scope, receive, send)
        try:
            principal = self.check(scope)
        except FLTSError as exc:
            if scope["type"] == "http":
                return self.render(exc)(scope, receive, send)
            # a websocket: no route takes one, refuse without an HTTP body
            return send({"type": "websocket.close", "code": 1008})
        if principal is not None:
            scope[PRINCIPAL_SCOPE_KEY] = principal
        return self.app(scope, receive, send)


def principal_of(scope: Mapping[str, Any]) -> Principal:
    """The principal of a request that passed :class:`AuthMiddleware` (anonymous on open
    paths)."""
    principal = scope.get(PRINCIPAL_SCOPE_KEY)
    return principal if isinstance(principal, Principal) else ANONYMOUS


def key_ring(security: SecuritySettings, service: str) -> KeyRing:
    """The keys of ``security``, read now: a configured file that is missing or damaged stops
    the service at start, and a service without keys says so in its log."""
    keys = KeyRing(security.keys_file, reload_seconds=security.reload_seconds)
    if not keys.configured:
        log.warning(
            "%s: no API keys file (FLTS_SECURITY__KEYS_FILE): data routes are open to anyone "
            "who can reach this port, the admin API is disabled",
            service,
        )
    return keys


def protect(
    app: ASGIApp,
    security: SecuritySettings,
    *,
    keys: KeyRing,
    default: str,
    render: Render,
    prefixes: Mapping[str, str] | None = None,
    open_paths: Iterable[str] = (),
) -> AuthMiddleware:
    """``app`` behind :class:`AuthMiddleware` with ``keys`` and the policy of ``security``;
    ``default`` is the scope of every path not named otherwise."""
    policy = AccessPolicy(
        default,
        prefixes=prefixes,
        metrics_require_key=security.metrics_require_key,
        open_paths=open_paths,
    )
    return AuthMiddleware(app, keys, policy, render)
