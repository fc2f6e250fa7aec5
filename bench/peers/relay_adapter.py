"""Relay in the peers benchmark: its worker (``arq worker.settings``), its enqueue path for preloading, its
native client (``relay.client.Client``, through the API) for round trips, and how to tell from Redis that a task
ended.

The one module that calls into Relay's core (``shared.enqueue``, the event stream's format):
if the core's API changes, this is what to fix. Runs in Relay's virtualenv.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any, cast

import httpx
from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import deserialize_result
from redis.asyncio import ConnectionPool

from bench.peers.client import Target, ThreadedClient
from bench.peers.spec import CHAIN_TASK, EVERYTHING, EXPECTED_RESULT, REPO, SINGLES, Profile, Ready, System, Variant
from relay.client import Client as RelayClient
from relay.client import chain
from shared import keys
from shared.enqueue import Enqueuer, prepare
from shared.serialization import dumps, loads
from shared.settings import get_settings
from shared.tasks import TaskSubmission
from worker.tasks import load

TASK_MODULES = ("worker.tasks.demo", "bench.peers.apps.relay_tasks")  # echo, and echo_await for the second drain
registry = load(list(TASK_MODULES))

PRELOAD_BATCH = 200  # concurrent enqueues: each is one round trip, so latency-bound alone
MAX_QUEUE_DEPTH = 1_000_000  # Relay refuses submits beyond RELAY_MAX_QUEUE_DEPTH (10,000): lift it for big preloads
NATIVE = Variant("defaults", "relay.client: `run()` (one POST, its events streamed back on the response, over urllib3)")
ECHO_KWARGS = {"message": "hello"}
SUBMISSION = {"task": "echo", "kwargs": ECHO_KWARGS}
CANVAS = Variant("canvas", "relay.client: `chain(step.s(0), step.s(), ...).delay().result()` (POST, GET, stream, GET)")
FLOW_HTTP = Variant("HTTP", "one POST /workflows, its NDJSON stream read to `workflow_end`")
NDJSON = {"Accept": "application/x-ndjson"}


def last_events(entry_fields: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """The events of one stream entry: field ``e`` holds one event, or several separated by newlines."""
    return [json.loads(line) for line in entry_fields[b"e"].splitlines() if line.strip()]


def ended(reply: Any, state: str | None = None) -> bool:
    """Whether an ``XREVRANGE <stream> + - COUNT 1`` reply ends with the ``end`` event (in ``state``)."""
    if not reply:
        return False
    events = last_events(reply[0][1])
    return bool(events) and events[-1]["type"] == "end" and (state is None or events[-1]["data"]["state"] == state)


def run_to_end(client: RelayClient, task: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """A round trip as a user of Relay's client writes it to run a task and wait: ``run`` (one request, the
    task's events streamed back on the submit's own response); the task's result."""
    return client.run_with(task, args, kwargs)


def worker_env(redis_url: str) -> dict[str, str]:
    """Relay's defaults (no RELAY_* inherited), one worker of concurrency 10."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return env | {
        "RELAY_REDIS_URL": redis_url,
        "RELAY_WORKER_CONCURRENCY": "10",
        "RELAY_MAX_QUEUE_DEPTH": str(MAX_QUEUE_DEPTH),
        "RELAY_TASK_MODULES": ",".join(TASK_MODULES),
        "RELAY_WORKER_METRICS_PORT": "0",  # several workers on one host: no metrics servers
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO),  # bench is not installed: the worker imports bench.peers.apps.relay_tasks from here
    }


SYSTEM = System(
    name="relay",
    label="Relay, defaults",
    venv="relay",
    adapter=__name__,
    worker_argv=lambda bin_: [str(bin_ / "arq"), "worker.settings"],
    worker_env=worker_env,
    ready=Ready(marker="relay worker ready"),
    probe=lambda ref: ("XREVRANGE", keys.events_stream(ref), "+", "-", "COUNT", "1"),
    done=ended,
    profiles=(Profile("defaults", {}, EVERYTHING, (NATIVE,), load_variant=NATIVE.name),),
    note=(
        "`echo` task (and `echo_await` from `bench.peers.apps.relay_tasks`); wake-up notices and a next-due "
        "timer, idle poll every 2 s at most; every job's `end` event is checked; "
        "RELAY_MAX_QUEUE_DEPTH raised so any preload fits (the depth check runs either way)"
    ),
    api=True,
    scaling=True,
    chains=(CANVAS, FLOW_HTTP),
)


class Client(ThreadedClient):
    """Preloads through ``Enqueuer`` (what the API calls); round trips go through the API with Relay's client."""

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target = target
        self.settings = get_settings()
        self.pool = ArqRedis(
            connection_pool=ConnectionPool.from_url(target.redis_url), job_serializer=dumps, job_deserializer=loads
        )
        self.settings = self.settings.model_copy(update={"max_queue_depth": MAX_QUEUE_DEPTH})
        self.enqueuer = Enqueuer(self.pool, self.settings)  # concurrent enqueues share script calls, as in the API

    async def open(self) -> None:
        await self.pool.ping()

    async def close(self) -> None:
        await super().close()
        await self.pool.aclose(close_connection_pool=True)

    async def preload(self, n: int, task: str) -> list[str]:
        ids: list[str] = []
        for start in range(0, n, PRELOAD_BATCH):
            batch = [uuid.uuid4().hex for _ in range(start, min(n, start + PRELOAD_BATCH))]
            await asyncio.gather(*(self._enqueue(task, i) for i in batch))
            ids += batch
        return ids

    async def _enqueue(self, task: str, task_id: str) -> None:
        submission = TaskSubmission.model_validate(SUBMISSION | {"task": task, "id": task_id})
        await self.enqueuer.enqueue(prepare(registry.get(task), self.settings, submission))

    async def verify(self, refs: list[str]) -> tuple[int, list[str]]:
        """Each task's stored result is ``{"echo": "hello"}`` and its event stream ends with ``end`` (succeeded)."""
        good, bad = 0, []
        for start in range(0, len(refs), 1000):
            chunk = refs[start : start + 1000]
            async with self.pool.pipeline(transaction=False) as pipe:
                for ref in chunk:
                    pipe.get(result_key_prefix + ref)
                    pipe.xrevrange(keys.events_stream(ref), "+", "-", count=1)
                replies = await pipe.execute()
            for n, ref in enumerate(chunk):
                raw, last = replies[2 * n], replies[2 * n + 1]
                result = deserialize_result(raw, deserializer=loads) if raw else None
                if result and result.success and result.result == EXPECTED_RESULT and ended(last, "succeeded"):
                    good += 1
                else:
                    bad.append(ref)
        return good, bad[:5]

    def http(self) -> httpx.Client:
        """This thread's HTTP client (kept alive across requests)."""
        http = getattr(self.local, "http", None)
        if http is None:
            http = self.local.http = httpx.Client(base_url=str(self.target.api_url), timeout=60)
        return cast(httpx.Client, http)

    def round_trip(self, variant: str) -> None:
        """Run one task and wait for its result with ``relay.client`` (one client per thread, kept)."""
        run_to_end(self.relay(), "echo", [], ECHO_KWARGS)

    def relay(self) -> RelayClient:
        """This thread's ``relay.client.Client``."""
        client = getattr(self.local, "relay", None)
        if client is None:
            client = self.local.relay = RelayClient(str(self.target.api_url), timeout=60, stream_read_timeout=120)
        return cast(RelayClient, client)

    def chain(self, variant: str, steps: int) -> None:
        if variant == CANVAS.name:
            step = self.relay().task(CHAIN_TASK)
            value = chain(step.s(0), *(step.s() for _ in range(steps - 1))).delay().result(timeout=120)
        elif variant == FLOW_HTTP.name:
            value = self._flow_http(steps)
        elif variant == SINGLES:
            value = 0
            for _ in range(steps):
                value = run_to_end(self.relay(), CHAIN_TASK, [value], {})
        else:
            raise ValueError(f"unknown chain variant {variant!r}")
        if value != steps:
            raise RuntimeError(f"a chain of {steps} steps returned {value!r}")

    def _flow_http(self, steps: int) -> Any:
        """One ``POST /workflows``, streamed back until ``workflow_end``; the workflow's value."""
        canvas = {"chain": [{"task": CHAIN_TASK, "args": [0]}] + [{"task": CHAIN_TASK}] * (steps - 1)}
        with self.http().stream("POST", "/workflows", json={"workflow": canvas}, headers=NDJSON) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                event = json.loads(line) if line else {}
                if event.get("type") == "workflow_end":
                    if event["data"]["state"] != "succeeded":
                        raise RuntimeError(f"workflow ended {line}")
                    return event["data"]["result"]
        raise RuntimeError("the stream closed before workflow_end")
