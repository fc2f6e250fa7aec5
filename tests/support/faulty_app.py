"""Relay's API with faults built in, for tests of what a failure shows a client. Only tests start it
(``spawn_api(factory="tests.support.faulty_app:create_app")``); Relay itself has no fault switch. Importing
this module changes nothing: ``create_app`` does it all, in the API process it starts.

Each fault carries an internal path in its message, as real failures do (a file that cannot be read,
a module's location in a repr), so a test can tell whether any of it reached the response.
"""

from __future__ import annotations

from pathlib import Path

from sanic import Request
from sanic.response import HTTPResponse

from api.app import create_app as create_relay_app
from api.resources import RelayApp

INTERNAL_PATH = str(Path(__file__).resolve())


async def raises(request: Request) -> HTTPResponse:
    raise RuntimeError(f"unexpected state in {INTERNAL_PATH}")


async def returns_no_response(request: Request) -> Path:
    return Path(INTERNAL_PATH)  # Sanic refuses it with a ServerError quoting its repr


def create_app() -> RelayApp:
    """Relay's app plus two routes that fail. (An API process runs no task code since it validates submits
    against the schemas workers publish, so a task's own broken validator can no longer fail a request.)"""
    app = create_relay_app()
    app.add_route(raises, "/_test/raises", name="test_raises")
    app.add_route(returns_no_response, "/_test/returns-no-response", name="test_returns_no_response")  # type: ignore[arg-type]
    return app
