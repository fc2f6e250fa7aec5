"""Which shard of the queue a request works on (``RELAY_QUEUE_SHARDS``; the layout is in ``shared/keys.py``).

A route about one task or workflow sets the shard its id maps to (``keys.on_task_shard``) for the whole request,
stream included: every key it builds, every script it calls and the hub it subscribes with (``api.shardhub``)
are that shard's. Reads across tasks (the task list, counts) go to each shard themselves. With one shard this
sets nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sanic import Request

from shared import keys

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def on_shard_of(param: str, stored_id: Callable[[Request, str], str]) -> Callable[[Handler], Handler]:
    """Run the handler on the shard of the task (or workflow) its path parameter ``param`` names, as
    ``stored_id(request, value)`` stores it (which may refuse the id, as the handler would)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def on_its_shard(request: Request, *args: Any, **kwargs: Any) -> Any:
            if keys.shard_count() == 1:
                return await handler(request, *args, **kwargs)
            with keys.on_task_shard(stored_id(request, kwargs[param])):
                return await handler(request, *args, **kwargs)

        return on_its_shard  # type: ignore[return-value]

    return decorate
