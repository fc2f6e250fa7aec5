"""Each HTTP request measured (``relay_http_requests_total``, ``relay_http_request_duration_seconds``) and traced
(a server span, when OpenTelemetry is installed): request middleware starts both, response middleware, which
Sanic runs for error responses and when a stream opens too, ends them."""

from __future__ import annotations

import asyncio
import time

from sanic import Request
from sanic.response import BaseHTTPResponse

from api.auth import is_open
from api.resources import RelayApp, resources
from shared import tracing

UNMATCHED = "unmatched"  # no route: a label for every unknown path, never the path itself
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(request: Request) -> str:
    """The matched route's pattern, or ``unmatched``."""
    return request.uri_template or UNMATCHED


def request_started(request: Request) -> None:
    """Request middleware, registered before auth so refused requests are measured too."""
    request.ctx.started = time.perf_counter()
    if is_open(request) or request.method == "OPTIONS":  # probes, scrapes, static files: counted, not traced
        request.ctx.span = None
        return
    request.ctx.span = tracing.request_span(request.method, route_of(request), request.headers)


def request_finished(request: Request, response: BaseHTTPResponse) -> None:
    """Response middleware: count, time and end the span."""
    started: float | None = getattr(request.ctx, "started", None)
    status = response.status
    if started is not None and hasattr(request.app.ctx, "res"):
        method = request.method if request.method in METHODS else "other"
        resources(request).metrics.http_answered(route_of(request), method, status, time.perf_counter() - started)
    span: tracing.SpanHandle | None = getattr(request.ctx, "span", None)
    if span is not None:
        span.set("http.response.status_code", status)
        span.end(f"HTTP {status}" if status >= 500 else None)
        request.ctx.span = None


def trace_carrier(request: Request) -> dict[str, str]:
    """The trace context a job submitted by this request continues from."""
    span: tracing.SpanHandle | None = getattr(request.ctx, "span", None)
    return span.carrier() if span is not None else {}


async def flush_traces(app: RelayApp) -> None:
    """``after_server_stop``: export the spans still batched."""
    exporting: tracing.Exporting | None = getattr(app.ctx, "tracing", None)
    if exporting is not None:
        await asyncio.to_thread(exporting.shutdown)
