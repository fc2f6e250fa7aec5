"""Sharded pub/sub (Redis 7's ``SSUBSCRIBE``) on a Redis Cluster, behind redis-py's asyncio ``PubSub`` interface.

On a cluster every channel of a namespace carries the namespace's hash tag (``shared.keys``), so all of them lie
in one slot: one connection, to the primary that holds that slot, hears them all, and the scripts' ``SPUBLISH``
goes only to that slot's nodes (a classic ``PUBLISH`` crosses the cluster bus to every node). redis-py 5.x's
asyncio ``PubSub`` has no ``ssubscribe`` (arq 0.28 caps redis-py below 6), so this one sends ``SSUBSCRIBE`` and
``SUNSUBSCRIBE`` itself and reports their replies as the classic ones: the API's hub and the worker's wake-up
listener read it exactly as they read a classic subscription, and reconnect as they do today.

When the slot leaves the node (a reshard, a failover) Redis ends the subscriptions itself: a ``sunsubscribe``
nobody asked for. That, or a redirection answering ``SSUBSCRIBE`` on a node that does not hold the slot, drops the
connection and raises ``SlotMoved`` (a ``ConnectionError``), so the reader's own reconnect path runs: it connects
to the slot's owner (a ``MOVED`` names it: ``redirect``), subscribes every channel again, and the hub tells its
streams to re-read the log, the worker claims once.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from redis.asyncio import ConnectionPool
from redis.asyncio.client import PubSub
from redis.crc import key_slot
from redis.exceptions import ConnectionError, RedisClusterException, RedisError, ResponseError

# A shard reply's kind -> the classic one it is reported as.
_CLASSIC = {b"smessage": b"message", b"ssubscribe": b"subscribe", b"sunsubscribe": b"unsubscribe"}
# Answers that mean "not on this node, or not now": the slot moved, is moving, or is not served yet.
_ELSEWHERE = ("MOVED ", "ASK ", "CLUSTERDOWN", "TRYAGAIN")


# What this module overrides or calls of redis-py's asyncio PubSub (its 5.x shape; pyproject caps redis-py below 6).
_RELIED_ON = ("connect", "execute_command", "on_connect", "get_message", "handle_message", "_normalize_keys")
if not all(callable(getattr(PubSub, name, None)) for name in _RELIED_ON):
    raise RuntimeError("redis-py's asyncio PubSub is not what shared/sharded_pubsub.py was written for: re-check it")


class SlotMoved(ConnectionError):
    """The node this subscription reached does not (or no longer) hold its channels' slot."""


class ShardedPubSub(PubSub):
    """``PubSub`` whose ``subscribe``/``unsubscribe`` are ``SSUBSCRIBE``/``SUNSUBSCRIBE`` on channels of one slot
    (``slot``), the node being chosen by the pool's connection (``shared.redis.RelayCluster.pubsub``).
    ``locate()`` reads the cluster's layout if it was not yet; ``redirect(host, port)`` is told the owner a ``MOVED``
    names, for the next connection."""

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        slot: int,
        locate: Callable[[], Awaitable[Any]],
        redirect: Callable[[str, int], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(pool, **kwargs)
        self.slot = slot
        self._locate = locate
        self._redirect = redirect
        self._asked_off: Counter[Any] = Counter()  # our SUNSUBSCRIBEs not yet answered, per channel

    async def connect(self) -> None:
        """Once the cluster's layout is known (``locate``), so the first connection goes to the slot's owner."""
        with contextlib.suppress(RedisError, RedisClusterException, OSError):  # then the URL's node: a MOVED follows
            await self._locate()
        await super().connect()  # type: ignore[no-untyped-call]

    async def subscribe(self, *args: Any, **kwargs: Callable[..., Any]) -> None:
        """``SSUBSCRIBE`` (also what redis-py's ``on_connect`` calls to subscribe again after a reconnect)."""
        new: dict[Any, Any] = dict.fromkeys(args) | kwargs
        for name in new:
            raw = name.encode() if isinstance(name, str) else name
            if key_slot(raw) != self.slot:
                raise ValueError(f"channel {name!r} is not in slot {self.slot}: a namespace's channels share its tag")
        await self.execute_command("SSUBSCRIBE", *new)
        # As redis-py: remembered after sending, so a reconnect meanwhile does not subscribe twice.
        new = self._normalize_keys(new)
        self.channels.update(new)
        self.pending_unsubscribe_channels.difference_update(new)

    def unsubscribe(self, *args: Any) -> Awaitable[Any]:
        """``SUNSUBSCRIBE``; every channel when none is named."""
        channels = self._normalize_keys(dict.fromkeys(args)) if args else dict(self.channels)
        self.pending_unsubscribe_channels.update(channels)
        self._asked_off.update(channels.keys())
        return self.execute_command("SUNSUBSCRIBE", *args)

    async def psubscribe(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("a cluster has no sharded pattern subscriptions")

    async def on_connect(self, connection: Any) -> None:
        """A new connection owes no answer to an old one's ``SUNSUBSCRIBE``."""
        self._asked_off.clear()
        await super().on_connect(connection)

    async def get_message(self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0) -> Any:
        """redis-py's, with a redirection (the node does not hold the slot) raised as ``SlotMoved``."""
        try:
            return await super().get_message(ignore_subscribe_messages, timeout)
        except ResponseError as exc:
            if not str(exc).startswith(_ELSEWHERE):
                raise
            if str(exc).startswith("MOVED "):
                host, port = str(exc).split()[2].rsplit(":", 1)
                self._redirect(host, int(port))
            await self._move(f"the node answered {exc}")

    async def handle_message(self, response: Any, ignore_subscribe_messages: bool = False) -> Any:
        """A shard reply as its classic kind; a ``sunsubscribe`` we did not ask for ends this connection."""
        if isinstance(response, list) and response:
            kind = response[0].encode() if isinstance(response[0], str) else response[0]
            if kind in _CLASSIC:
                if kind == b"sunsubscribe" and self._ended_by_server(response[1]):
                    await self._move(f"the node ended the subscription of {response[1]!r}: its slot moved")
                response = [_CLASSIC[kind], *response[1:]]
        return await super().handle_message(response, ignore_subscribe_messages)  # type: ignore[no-untyped-call]

    def _ended_by_server(self, channel: Any) -> bool:
        if self._asked_off[channel] > 0:
            self._asked_off[channel] -= 1
            return False
        return channel in self.channels

    async def _move(self, why: str) -> NoReturn:
        """Drop the connection, so the next read connects again (to the slot's owner first) and subscribes again."""
        if self.connection is not None:
            await self.connection.disconnect()
        raise SlotMoved(why)
