"""Inboxes (``shared/keys.py`` "Inboxes"), script by script against a real Redis: a script writes each API
process's inbox one message for all the tasks of that process it wrote events for, each task's events in order,
while every task's own channel still gets its own. The end-to-end behaviour, with real API and worker processes,
is in tests/e2e/test_inbox.py."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis

import shared
from shared import keys
from shared.enqueue import Enqueuer, prepare
from shared.events import EventType, body, decode_head, unpack
from shared.scripts import Scripts
from shared.settings import Settings
from shared.tasks import TaskSubmission
from tests.support.claims import TASKS, Worker


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, queue_name=f"relay:ib:{uuid.uuid4().hex[:8]}")


DONE = b"done"


async def messages_until_done(pubsub: Any, channels: list[str], seconds: float = 10.0) -> dict[str, list[bytes]]:
    """Every message on ``channels`` before ``DONE``, published after the commit: one connection's messages arrive
    in the order Redis published them, so everything the commit published has come by then."""
    got: dict[str, list[bytes]] = {channel: [] for channel in channels}
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is None:
            continue
        if message["data"] == DONE:
            return got
        got[message["channel"].decode()].append(message["data"])
    raise AssertionError("the marker published after the commit never came")


async def test_one_commit_writes_each_inbox_once_for_all_its_tasks(pool: ArqRedis, settings: Settings) -> None:
    queue = settings.queue_name
    enqueuer = Enqueuer(pool, settings, Scripts(pool))
    inbox_a, inbox_b = keys.inbox_channel(queue, "a"), keys.inbox_channel(queue, "b")
    submitted = []
    for inbox in (inbox_a, inbox_a, inbox_b):
        prepared = prepare(TASKS.get("stamp"), settings, TaskSubmission(task="stamp"), inbox=inbox)
        submitted.append((await enqueuer.enqueue(prepared)).task_id)
    worker = Worker(pool, settings, handoffs=False)
    assert sorted((await worker.claim(10))[0]) == sorted(submitted)
    pubsub = pool.pubsub()
    channels = [inbox_a, inbox_b, *(keys.events_channel(t) for t in submitted)]
    await pubsub.subscribe(*channels)
    args: list[Any] = [0, 100, 1_000_000, 60_000, keys.wakeup_channel(queue)]
    for task_id, inbox in zip(submitted, (inbox_a, inbox_a, inbox_b), strict=True):
        events = [body(task_id, EventType.STARTED), body(task_id, EventType.RESULT, 1), body(task_id, EventType.END)]
        args += ["F", task_id, worker.token, 0, len(events), *events, '{"rs":"succeeded"}', "0", "0", "", "", inbox]
    replies = await Scripts(pool).commit(keys=[queue, keys.ABORT_SET, keys.reply_outbox(queue)], args=args)
    assert [status for status, _ in replies] == [b"ok"] * 3
    await pool.publish(inbox_b, DONE)
    got = await messages_until_done(pubsub, channels)
    await pubsub.aclose()

    def heads(message: bytes) -> list[tuple[str, int]]:
        return [(head.task_id, head.seq) for head in map(decode_head, unpack(message))]

    first, second, third = submitted
    in_order = [(task_id, seq) for task_id in (first, second) for seq in (1, 2, 3)]
    assert [heads(m) for m in got[inbox_a]] == [in_order]  # one message for both of its tasks
    assert [heads(m) for m in got[inbox_b]] == [[(third, 1), (third, 2), (third, 3)]]
    for task_id in submitted:  # followers elsewhere still hear each task on its own channel
        assert [heads(m) for m in got[keys.events_channel(task_id)]] == [[(task_id, 1), (task_id, 2), (task_id, 3)]]


def test_every_script_that_writes_to_an_inbox_publishes_it() -> None:
    """relay_append only gathers what goes to an inbox (lib.lua): a script passing an inbox to relay_emit without
    relay_flush_inboxes would leave its submitters' streams to their heartbeat's re-read of the log."""
    lua = Path(shared.__file__).parent / "lua"

    def passes_an_inbox(line: str) -> bool:
        return "relay_emit(" in line and "inbox)" in line and "function relay_emit" not in line

    writers = [s for s in lua.glob("*.lua") if any(map(passes_an_inbox, s.read_text().splitlines()))]
    assert {s.name for s in writers} == {"abort.lua", "commit.lua"}
    for script in writers:
        assert "relay_flush_inboxes()" in script.read_text(), script.name
