"""A bare Sanic app, the ceiling for ``bench.http_submit``: the same server, no Relay, no Redis.

``sanic bench.hello_app:create_app --factory --single-process`` serves ``POST /tasks`` with a fixed
202 JSON body of about the size Relay answers, so the difference to Relay is Relay's own work
(parsing and validating the submission, the queue-depth check, the enqueue, the wake-up notice).
"""

from __future__ import annotations

from types import SimpleNamespace

from sanic import Request, Sanic
from sanic.config import Config
from sanic.response import HTTPResponse, json

_BODY = {
    "id": "0" * 32,
    "task": "echo",
    "state": "queued",
    "created": True,
    "links": {"self": "/tasks/" + "0" * 32, "events": "/tasks/" + "0" * 32 + "/events"},
}


def create_app() -> Sanic[Config, SimpleNamespace]:
    """One route; nothing opened at start-up."""
    app: Sanic[Config, SimpleNamespace] = Sanic("bench_hello")

    @app.post("/tasks")
    async def submit(request: Request) -> HTTPResponse:
        return json(_BODY, status=202)

    @app.get("/health/ready")
    async def ready(request: Request) -> HTTPResponse:
        return json({"ready": True})

    return app
