"""Relay's API plus a route that describes its heap, for the tests of what a closed stream leaves behind.
Only tests start it (``spawn_api(factory="tests.support.heap_app:create_app")``); Relay itself exposes
nothing of its heap. Importing this module changes nothing."""

from __future__ import annotations

import gc
import sys
from collections import Counter

from sanic import Request
from sanic.response import HTTPResponse, json
from sanic.server.protocols.http_protocol import HttpProtocol

from api.app import create_app as create_relay_app
from api.resources import RelayApp

HEAP_PATH = "/_test/heap"


async def heap(request: Request) -> HTTPResponse:
    """After a full collection: ``blocks``, the memory blocks Python has allocated (every object, strings and
    bytes too, which the collector does not track); ``types``, the collector's objects counted by type name,
    where a leak shows by name (a connection's ``Task``, its ``HttpProtocol``, its ``Request``); and
    ``lost_connections``, the connections whose client has gone (Sanic's ``connection_lost`` ran) that are
    still alive: a moment after the close, none (an idle keep-alive connection is not lost, only idle)."""
    gc.collect()
    objects = gc.get_objects()
    types = Counter(type(obj).__qualname__ for obj in objects)
    lost = sum(1 for obj in objects if isinstance(obj, HttpProtocol) and obj.conn_info and obj.conn_info.lost)
    return json({"blocks": sys.getallocatedblocks(), "types": dict(types), "lost_connections": lost})


def create_app() -> RelayApp:
    """Relay's app plus ``GET /_test/heap``."""
    app = create_relay_app()
    app.add_route(heap, HEAP_PATH, name="test_heap")
    return app
