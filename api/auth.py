"""Optional API-key auth: when keys are configured, every endpoint but health, metrics and the API's own
description needs one."""

from __future__ import annotations

import hmac

from sanic import Request

from api.errors import Unauthorized

OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/metrics", "/openapi.json"})


def presented_key(request: Request) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer``."""
    key: str | None = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_matches(candidate: str, keys: list[str]) -> bool:
    """Constant-time comparison against every key, so timing reveals neither which nor how much matched."""
    given = candidate.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


async def require_api_key(request: Request) -> None:
    """Sanic request middleware."""
    keys: list[str] = request.app.ctx.api_keys
    if not keys or request.path in OPEN_PATHS:
        return
    candidate = presented_key(request)
    if candidate is None or not key_matches(candidate, keys):
        raise Unauthorized(
            "a valid API key is required (X-API-Key or Authorization: Bearer)", headers={"WWW-Authenticate": "Bearer"}
        )
