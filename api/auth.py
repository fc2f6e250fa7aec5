"""Optional API-key auth: when keys are configured, every endpoint but health, metrics, the API's own
description and the dashboard's page and files (not the data it reads) needs one. Each key has a name (its
tenant) and a role; the name of the key a request used is ``request.ctx.key_name`` (``anonymous`` when auth is
off), for logs, metrics and per-key quotas, and ``request.ctx.caller`` is who it is for ``api.access``."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from sanic import Request

from api.access import ANONYMOUS_CALLER, NOBODY, Caller
from api.errors import Unauthorized
from shared.apikeys import ANONYMOUS, ApiKey, Role

logger = logging.getLogger("relay.api.auth")

OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/metrics", "/openapi.json"})
DASHBOARD_PREFIX = "/dashboard"  # the page and its static files; the data they fetch needs a key
DASHBOARD_BLUEPRINT = "dashboard"


def is_open(request: Request) -> bool:
    """Anyone may read health, metrics, the OpenAPI document, and the dashboard's page and files: decided by
    the route the request matched (the dashboard's blueprint), never by a path prefix a crafted path could
    share."""
    if request.path in OPEN_PATHS:
        return True
    route = request.route
    return route is not None and route.name.split(".")[1:2] == [DASHBOARD_BLUEPRINT]


@dataclass(frozen=True)
class KeyDigest:
    """A key kept only as its SHA-256: every comparison is then between equal-length values."""

    name: str
    digest: bytes
    role: Role


def _sha256(text: str) -> bytes:
    """A key's digest. ``surrogatepass``: Sanic decodes header bytes that are not UTF-8 into surrogates
    (``surrogateescape``), which a plain ``encode()`` refuses; a key given so can never match (configured keys
    are UTF-8, ``shared.apikeys``), so it is hashed like any other and compared in the same constant time."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def digests(keys: list[ApiKey]) -> list[KeyDigest]:
    """What the app keeps of its configured keys."""
    return [KeyDigest(key.name, _sha256(key.secret), key.role) for key in keys]


def presented_key(request: Request) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer``."""
    key: str | None = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def matching_key(candidate: str, keys: list[KeyDigest]) -> KeyDigest | None:
    """The key ``candidate`` is, or None. Compares against every key, each in constant time over
    equal-length digests, so timing reveals neither which key matched nor how much of one did."""
    given = _sha256(candidate)
    matched: KeyDigest | None = None
    for key in keys:
        if hmac.compare_digest(given, key.digest):
            matched = key
    return matched


def log_auth_mode(keys: list[KeyDigest]) -> None:
    """At start: say which key names are accepted, and warn loudly when nothing is."""
    if keys:
        shown = (key.name if key.role is Role.SUBMIT else f"{key.name} ({key.role})" for key in keys)
        logger.info("API keys accepted: %s", ", ".join(shown))
    else:
        logger.warning(
            "authentication is OFF: RELAY_API_KEYS is empty, so anyone who reaches this port can submit tasks"
        )


def require_api_key(request: Request) -> None:
    """Sanic request middleware. CORS preflights (OPTIONS) need no key: a browser never sends one with them."""
    keys: list[KeyDigest] = request.app.ctx.api_keys
    request.ctx.caller = NOBODY if keys else ANONYMOUS_CALLER
    request.ctx.key_name = ANONYMOUS
    if not keys or is_open(request) or request.method == "OPTIONS":
        return
    candidate = presented_key(request)
    key = matching_key(candidate, keys) if candidate is not None else None
    if key is None:
        raise Unauthorized(
            "a valid API key is required (X-API-Key or Authorization: Bearer)", headers={"WWW-Authenticate": "Bearer"}
        )
    request.ctx.caller = Caller(key.name, key.role)
    request.ctx.key_name = key.name
