"""A workflow's life from outside a worker: submit, read, cancel and retry, each one script (``shared/lua/flow_*``)
over the workflow's hash (``shared/keys.py``, "Workflows"). What happens while it runs (a step's end releasing
the next) is in the scripts that commit a step's end, never here."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from arq.connections import ArqRedis
from cryptography.fernet import Fernet

from shared import durability, keys, tasklist, tenancy
from shared.enqueue import Links, TaskShape, prepare
from shared.errors import IdConflict, InvalidOptions, QueueFull, SubmissionError
from shared.limits import check_args_size
from shared.scripts import Scripts
from shared.serialization import dumps, loads
from shared.settings import Settings
from shared.transitions import Transitions
from shared.workflows.canvas import CanvasError, Compiled, WorkflowSubmission, compile_canvas, fingerprint

ShapeOf = Callable[[str], Awaitable[TaskShape]]  # a task's shape by name (the catalogue's offer, or a registry's)
MAX_ID_LENGTH = 128  # a task id's (``shared.tasks.TASK_ID_REGEX``): a step's id is ``<workflow id>:<n>``
CANCEL_BATCH = 50  # steps aborted at once by a cancel
# A step's state letter in its workflow's hash (lib.lua); M: a map over the value before it, waiting for its members.
STATES = {
    "P": "pending",
    "Q": "active",
    "M": "running",
    "S": "succeeded",
    "F": "failed",
    "A": "aborted",
    "K": "skipped",
}


class WorkflowState(StrEnum):
    """A workflow's state as ``GET /workflows/{id}`` reports it."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class PreparedWorkflow:
    """A validated workflow, ready for its submit script."""

    flow_id: str  # its stored id (``shared.tenancy``)
    fp: str
    compiled: Compiled
    records: list[bytes]  # each step's job record, as its release enqueues it

    @property
    def first_step(self) -> str:
        """The id of its first step (what a quota counts the workflow by)."""
        return keys.step_id(self.flow_id, 0)


@dataclass(frozen=True)
class WorkflowSubmitted:
    """``created`` is False when a workflow with this id and canvas existed; ``state`` is then its state."""

    flow_id: str
    created: bool
    state: str
    steps: int


async def prepare_workflow(
    submission: WorkflowSubmission, shape_of: ShapeOf, settings: Settings, tenant: str | None
) -> PreparedWorkflow:
    """Compile the canvas and validate every step against its task (``SubmissionError`` says which is wrong)."""
    try:
        compiled = compile_canvas(submission.workflow, settings.max_workflow_steps)
    except CanvasError as exc:
        raise InvalidOptions(str(exc), [{"loc": ["workflow"], "msg": str(exc)}]) from None
    client_id = submission.id or uuid.uuid4().hex
    # A map over the value before it adds steps as it runs, up to the most a workflow may have.
    steps = settings.max_workflow_steps if compiled.dynamic else len(compiled.steps)
    if len(client_id) + 1 + len(str(steps - 1)) > MAX_ID_LENGTH:
        most = MAX_ID_LENGTH - 1 - len(str(steps - 1))
        message = f"a workflow of {steps} steps may have an id of at most {most} characters"
        raise InvalidOptions(message, [{"loc": ["id"], "msg": message}])
    flow_id = tenancy.stored_id(tenant, client_id)
    records: list[bytes] = []
    for step in compiled.steps:
        links = Links(flow=flow_id, step=step.index, piped=step.piped, mapped=step.mapped)
        try:
            spec = await shape_of(step.node.task)
            submission_of_step = step.submission(f"{client_id}:{step.index}")
            check_args_size(submission_of_step, settings.max_args_bytes)
            prepared = prepare(spec, settings, submission_of_step, tenant=tenant, links=links)
        except SubmissionError as exc:
            exc.message = f"step {step.index} ({step.node.task}): {exc.message}"
            raise
        records.append(prepared.record)
    return PreparedWorkflow(flow_id, fingerprint(submission), compiled, records)


class Workflows:
    """The workflows of one namespace (``RELAY_QUEUE_NAME``), as the API drives them."""

    def __init__(self, pool: ArqRedis, scripts: Scripts, settings: Settings, transitions: Transitions) -> None:
        self._pool = pool
        self._scripts = scripts
        self._settings = settings
        self._transitions = transitions

    @property
    def _ttl_ms(self) -> int:
        return self._settings.result_ttl_seconds * 1000

    async def submit(self, prepared: PreparedWorkflow) -> WorkflowSubmitted:
        """Store the workflow and enqueue its first steps; ``IdConflict`` or ``QueueFull`` when it cannot be,
        ``NotReplicated`` when replicas were required (``RELAY_REDIS_WAIT_REPLICAS``) and too few confirmed it."""
        settings, compiled = self._settings, prepared.compiled
        meta = dumps({"tree": compiled.tree})
        args: list[Any] = [prepared.flow_id, prepared.fp, meta, len(compiled.steps), compiled.sinks, compiled.root]
        args += [settings.workflow_log_max_len, settings.workflow_log_max_bytes, self._ttl_ms, time.time_ns() // 1000]
        args += [settings.max_queue_depth, settings.queue_depths, settings.max_workflow_steps]
        for step, record in zip(compiled.steps, prepared.records, strict=True):
            preds, succs = ",".join(map(str, step.preds)), ",".join(map(str, step.succs))
            args += [record, preds, succs, step.input or "", int(step.tolerant), int(step.mapped)]
        script_keys = [keys.schedule(settings.queue_name), keys.flow_index(settings.queue_name)]
        confirmed = settings.redis_wait_replicas  # without WAIT, as many as wanted
        if confirmed:  # idempotent by id, as the script must be: sent again after a lost connection
            reply, confirmed = await durability.script_then_wait(
                self._pool, self._scripts.flow_submit, script_keys, args, settings
            )
        else:
            reply = await self._scripts.flow_submit(keys=script_keys, args=args)
        kind = reply[0].decode()
        client_id = tenancy.client_id(prepared.flow_id)
        stored = kind == "created" or (kind == "exists" and reply[2] == b"same")
        if stored and (refused := durability.check(settings, confirmed, client_id, what="workflow")):
            raise refused  # an existing one too: replicas may still lack it (shared.durability)
        if kind == "created":
            return WorkflowSubmitted(prepared.flow_id, True, WorkflowState.RUNNING, len(compiled.steps))
        if kind == "exists" and reply[2] == b"same":
            return WorkflowSubmitted(prepared.flow_id, False, reply[1].decode(), len(compiled.steps))
        if kind == "exists":
            raise IdConflict(f"workflow id {client_id!r} is already taken by another canvas", {"differs": "canvas"})
        if kind == "taken":
            message = (
                f"workflow id {client_id!r} names steps whose task ids are in use (a workflow of this id whose "
                f"steps are still kept, or tasks submitted as '{client_id}:<n>'); choose another"
            )
            raise IdConflict(message, {"differs": "unknown"})
        queue, depth = reply[1].decode(), reply[2].decode()
        raise QueueFull(f"queue {queue!r} holds {depth} waiting tasks, its maximum; retry later")

    async def view(self, flow_id: str) -> dict[str, Any] | None:
        """What ``GET /workflows/{id}`` shows (stored ids), or None if there is no such workflow."""
        key = keys.flow(flow_id)
        fields = ["n", "st", "meta", "created", "ended", "end"]
        n, state, meta, created, ended, end = await _hmget(self._pool, key, fields)
        if state is None or n is None or meta is None:
            return None
        tree = loads(meta)["tree"]
        maps = _map_steps(tree)
        spans: list[bytes | None] = []
        if maps:  # the steps and the maps' members, read at once (a map may expand meanwhile)
            n, *spans = await _hmget(self._pool, key, ["n", *(f"x:{m}" for m in maps)])
        members = {m: _span(span) for m, span in zip(maps, spans, strict=True)}
        count = int(n or 0)
        letters = await _hmget(self._pool, key, [f"s:{i}" for i in range(count)]) if count else []
        states = [STATES.get((s or b"P").decode(), "pending") for s in letters]
        running = await self._running([keys.step_id(flow_id, i) for i, s in enumerate(states) if s == "active"])
        detailed = [
            ("running" if keys.step_id(flow_id, i) in running else "queued") if s == "active" else s
            for i, s in enumerate(states)
        ]
        tree = _with_states(tree, flow_id, detailed, members)
        finished = loads(end) if end else {}
        counts: dict[str, int] = {}
        for s in detailed:
            counts[s] = counts.get(s, 0) + 1
        return {
            "id": flow_id,
            "state": state.decode(),
            "steps": count,
            "counts": counts,
            "result": finished.get("result"),
            "error": _error(finished) if finished.get("state") not in (None, "succeeded") else None,
            "created_at": _iso(created),
            "finished_at": _iso(ended),
            "tree": tree,
        }

    async def _running(self, step_ids: list[str]) -> set[str]:
        """Which of these active steps run now (the others wait in their lanes)."""
        if not step_ids:
            return set()
        async with self._pool.pipeline(transaction=False) as pipe:
            for step in step_ids:
                pipe.exists(keys.in_progress(step))
            found = await pipe.execute()
        return {step for step, running in zip(step_ids, found, strict=True) if running}

    async def cancel(self, flow_id: str) -> tuple[str, str | None, int]:
        """Cancel: ('aborted' | 'aborting' | 'finished' | 'unknown', the state when finished, how many child tasks
        of its steps were still waiting or running and are aborted now). Its active steps are aborted first, then
        every step's children, recursively (``Transitions.abort_children``): a running step's abort is requested
        before its children are read, so none it submits meanwhile is missed. A second cancel of a workflow that
        ended aborted walks the children again (the first may have stopped half-way) and answers 'finished'."""
        reply = await self._scripts.flow_cancel(keys=[keys.flow(flow_id)], args=[flow_id, self._ttl_ms])
        kind = reply[0].decode()
        if kind != "cancelling":
            state = reply[1].decode() if len(reply) > 1 else None
            children = await self._abort_children(flow_id) if state == WorkflowState.ABORTED else 0
            return kind, state, children
        steps = [step.decode() for step in reply[1:]]
        for first in range(0, len(steps), CANCEL_BATCH):  # each abort is its own script (abort.lua)
            await asyncio.gather(*(self._transitions.abort(step) for step in steps[first : first + CANCEL_BATCH]))
        children = await self._abort_children(flow_id)
        [state] = await _hmget(self._pool, keys.flow(flow_id), ["st"])
        return ("aborted" if state == b"aborted" else "aborting"), None, children

    async def _abort_children(self, flow_id: str) -> int:
        """Abort the child tasks of every step of the workflow (and theirs); how many were waiting or running."""
        [n] = await _hmget(self._pool, keys.flow(flow_id), ["n"])
        steps = [keys.step_id(flow_id, i) for i in range(int(n or 0))]
        return await self._transitions.abort_children(steps)

    async def retry(self, flow_id: str) -> tuple[str, str | None]:
        """Run a failed or aborted workflow again from its failed steps: ('queued' | 'not_retryable' | 'unknown',
        the state it has when not retryable)."""
        reply = await self._scripts.flow_retry(
            keys=[keys.schedule(self._settings.queue_name)], args=[flow_id, self._ttl_ms]
        )
        kind = reply[0].decode()
        return kind, reply[1].decode() if kind == "not_retryable" else None

    async def step_to_retry(self, flow_id: str) -> str:
        """The step a retry of ``flow_id`` counts against its key's quota as (``api.quotas``), as a submit counts
        as its first step: the first that did not succeed, which the retry runs again (its first step when none)."""
        count = int(await self._pool.hget(keys.flow(flow_id), "n") or 0)  # type: ignore[misc]
        fields = [f"s:{i}" for i in range(count)]
        states = await self._pool.hmget(keys.flow(flow_id), fields) if count else []  # type: ignore[misc]
        again = next((i for i, state in enumerate(states) if state in (b"F", b"A", b"K")), 0)
        return keys.step_id(flow_id, again)

    async def summaries(self, flow_ids: list[str]) -> list[tuple[str, int] | None]:
        """Each workflow's state and steps (None once it expired), in one round trip."""
        async with self._pool.pipeline(transaction=False) as pipe:
            for flow_id in flow_ids:
                with keys.on_task_shard(flow_id):  # each in its shard (shared/keys.py)
                    pipe.hmget(keys.flow(flow_id), ["st", "n"])
            found = await pipe.execute()
        return [(state.decode(), int(n or 0)) if state is not None else None for state, n in found]

    async def list_page(
        self, prefix: str, limit: int, cursor: str | None, seal: Fernet | None
    ) -> tuple[list[tuple[str, str, int]], str | None]:
        """The next page after ``cursor`` of the workflows whose stored id starts with ``prefix`` (a tenant's),
        newest first: each one's stored id, state and steps (expired ones left out), and the cursor after it
        (None at the end). The walk is bounded per request as ``GET /tasks``'s is (``shared.tasklist``), so
        a page may be short, even empty, with a cursor. ``BadCursor`` for a cursor this API did not hand out."""
        start = tasklist.decode_cursor(cursor, seal) if cursor else ("+inf", "")
        walk = tasklist.Walk(tasklist.WORKFLOWS, self._settings.queue_name, start, (None, None, prefix), limit)
        ids, next_cursor = await tasklist.page_ids(self._pool, self._scripts, walk, seal)
        summaries = await self.summaries(ids) if ids else []
        shown = [(i, s[0], s[1]) for i, s in zip(ids, summaries, strict=True) if s is not None]
        return shown, next_cursor


async def _hmget(pool: ArqRedis, key: str, fields: list[str]) -> list[bytes | None]:
    return await cast(Awaitable[list[bytes | None]], pool.hmget(key, fields))


def _map_steps(node: dict[str, Any]) -> list[int]:
    """The steps of the tree's maps over the value before them (a map node with a ``step``)."""
    found = [int(node["step"])] if node["kind"] == "map" and "step" in node else []
    for child in [*node.get("children", []), *([node["callback"]] if "callback" in node else [])]:
        found += _map_steps(child)
    return found


def _span(raw: bytes | None) -> range:
    """A map's members ('<first>,<count>' in its workflow's hash), none before it expanded."""
    if raw is None:
        return range(0)
    first, count = (int(part) for part in raw.split(b","))
    return range(first, first + count)


def _with_states(node: dict[str, Any], flow_id: str, states: list[str], members: dict[int, range]) -> dict[str, Any]:
    """The stored tree with each step's id and state; a map over the value before it with its state and the
    members it expanded into."""
    if node["kind"] == "task":
        step = int(node["step"])
        return node | {"task_id": keys.step_id(flow_id, step), "state": states[step]}
    children = node["children"]
    if node["kind"] == "map" and "step" in node:
        step = int(node["step"])
        children = [{"kind": "task", "step": j, "task": node["task"]} for j in members[step]]
        node = node | {"state": states[step]}
    shown = node | {"children": [_with_states(child, flow_id, states, members) for child in children]}
    if "callback" in node:
        shown["callback"] = _with_states(node["callback"], flow_id, states, members)
    return shown


def _error(finished: dict[str, Any]) -> dict[str, Any]:
    error = finished.get("error") or {}
    if isinstance(error, dict) and "error" in error:  # a step's value: {"state", "task_id", "error"}
        return {"step": finished.get("step"), "task_id": error.get("task_id"), **(error.get("error") or {})}
    return error if isinstance(error, dict) else {"error_type": "Error", "message": str(error)}


def _iso(ms: bytes | None) -> str | None:
    import datetime as dt

    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC).isoformat() if ms else None
