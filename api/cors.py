"""Browsers on other origins (CORS), for web pages that submit tasks and read their events live.

sanic-ext's CORS does the work, with only its HTTP extension loaded (CORS headers, and automatic OPTIONS
routes for preflights): no dependency injection, OpenAPI pages, health monitor or templating. Its
headers are added by response middleware, which Sanic also runs for responses opened with
``request.respond()``, so event streams and error bodies carry them too. Nothing is loaded when no
origin is configured, and Sanic's auto-extension stays off either way.
"""

from __future__ import annotations

from sanic_ext.extensions.http.extension import HTTPExtension

from api.resources import RelayApp

# What a page may read of a response beyond the CORS-safelisted headers: where the task lives (submit,
# streamed submit), when to retry (429/503), and how to authenticate (401).
EXPOSE_HEADERS = ["Location", "X-Relay-Task-Id", "Retry-After", "WWW-Authenticate"]
# What a page may send: its key, a JSON body, the stream format it wants, and SSE's resume point.
ALLOW_HEADERS = ["X-API-Key", "Authorization", "Content-Type", "Accept", "Last-Event-ID"]
PREFLIGHT_MAX_AGE_SECONDS = 600


def install(app: RelayApp, origins: list[str]) -> None:
    """Answer cross-origin requests from ``origins`` (``["*"]``: any origin, then without credentials)."""
    if not origins:
        app.config.AUTO_EXTEND = False  # an installed sanic-ext must not load itself with all its features
        return
    any_origin = origins == ["*"]
    app.extend(
        extensions=[HTTPExtension],
        built_in_extensions=False,
        config={
            "cors_origins": "*" if any_origin else origins,
            "cors_send_wildcard": any_origin,
            # Credentials (cookies, HTTP auth) only ever for origins listed by name.
            "cors_supports_credentials": not any_origin,
            "cors_expose_headers": EXPOSE_HEADERS,
            "cors_allow_headers": ALLOW_HEADERS,
            "cors_max_age": PREFLIGHT_MAX_AGE_SECONDS,
            "cors_always_send": False,  # no CORS headers for requests that carry no Origin (curl, servers)
            "cors_automatic_options": True,
            "http_auto_options": True,
            "http_auto_head": False,
            "http_all_methods": False,
            "http_auto_trace": False,
        },
    )
    app.config.AUTO_EXTEND = False
