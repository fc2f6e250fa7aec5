"""Validating and enqueueing a submission, for every entry point (HTTP, Service Bus, cron, retries).

Every check that needs no Redis happens first; then one Lua script (``shared/lua/enqueue.lua``) does the id
check, the depth check and arq's enqueue atomically, so a refused submission leaves nothing behind. Concurrent
submits of one process share that script call (``shared.batching``): one round trip for many tasks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from arq.connections import ArqRedis

from shared import durability, keys, lanes, tenancy
from shared.batching import Batcher, per_shard
from shared.errors import IdConflict, InvalidOptions, ParentAborting, QueueFull, SubmissionError
from shared.ids import new_id
from shared.jobs import JobRecord, ResultRecord, fingerprint
from shared.scripts import Scripts
from shared.serialization import dumps
from shared.settings import Settings
from shared.tasks import TaskState, TaskSubmission

if TYPE_CHECKING:
    from worker.registry import TaskRegistry


class TaskShape(Protocol):
    """What a submit is checked against: a registered task (in a worker) or a published offer (in the API)."""

    @property
    def name(self) -> str: ...

    @property
    def max_retries(self) -> int: ...

    @property
    def queue(self) -> str: ...

    @property
    def queues(self) -> tuple[str, ...]: ...

    @property
    def priority(self) -> int: ...

    @property
    def concurrency_key(self) -> str | None: ...

    @property
    def rate_key(self) -> str | None: ...

    @property
    def positional(self) -> tuple[str, ...]: ...

    def max_timeout(self, default: float) -> float:
        """The longest timeout a submit may ask for."""

    def validate(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments bound and checked (``InvalidArguments`` otherwise), as JSON keywords."""

    def validate_piped(self, args: Sequence[Any], kwargs: Mapping[str, Any], piped: str) -> dict[str, Any]:
        """``validate`` but for parameter ``piped``, which a workflow fills in when the step runs."""


@dataclass(slots=True)
class Submitted:
    """The outcome of a submit: ``created`` is False when an identical task with this id already existed,
    and ``state`` is then that task's real state. A value, never changed once made (not ``frozen``: that costs
    each of the thousands of submits a second an ``object.__setattr__`` per field)."""

    task_id: str
    task: str
    created: bool
    state: TaskState


@dataclass(slots=True)
class Prepared:
    """A validated submission, ready for the script (a value, as ``Submitted`` is)."""

    task_id: str
    task: str
    due: str  # '+<ms>': that long after the enqueue, on Redis's clock; else an absolute time (ms since the epoch)
    record: bytes
    fp: str
    index_score: int
    lane: str  # its lane id (``shared.lanes``)
    reply: bytes = b""
    inbox: str | None = None  # the API process's channel its record names (``JobRecord.inbox``), if any


@dataclass(frozen=True)
class Links:
    """What a job is part of: a workflow's step (``flow``, its id; ``step``; ``piped``: the step takes the value of
    the steps before it as its first positional parameter, Celery's partial call; ``mapped``: it is a map over that
    value, whose members take an item each there), or a child task (``parent``)."""

    flow: str | None = None
    step: int | None = None
    parent: str | None = None
    piped: bool = False
    mapped: bool = False


_NO_LINKS: Final = Links()  # a plain task's (made once: a frozen dataclass costs a microsecond to make)


def piped_param(spec: TaskShape, mapped: bool = False) -> str:
    """The parameter a workflow's step takes the value before it in (a map's member: its item): its first positional
    one."""
    what = "each item of the map" if mapped else "the value of the step before it"
    fix = "give the map its items" if mapped else 'make the step immutable (Celery\'s .si(), or "immutable": true)'
    loc = ["map"] if mapped else ["immutable"]
    if not spec.positional:
        raise InvalidOptions(
            f"{spec.name!r} has no positional parameter to take {what}; {fix}",
            [{"loc": loc, "msg": "the task takes no positional argument"}],
        )
    piped = spec.positional[0]
    if piped in (spec.concurrency_key, spec.rate_key):
        raise InvalidOptions(
            f"{spec.name!r}'s limit key {piped!r} would be {what}, unknown at submit; {fix} or pass the key explicitly",
            [{"loc": loc, "msg": "the piped parameter is a limit key"}],
        )
    return piped


def prepare(
    spec: TaskShape,
    settings: Settings,
    submission: TaskSubmission,
    reply: dict[str, Any] | None = None,
    tenant: str | None = None,
    links: Links | None = None,
    inbox: str | None = None,
) -> Prepared:
    """Validate ``submission`` against its task (``SubmissionError`` says what is wrong) and build its records,
    stored under ``tenant``'s namespace (``shared.tenancy``; None: a task no tenant owns), as part of what
    ``links`` names, if anything; ``inbox`` is the channel of the API process that streams its events back to
    the submitter (``shared.keys``, "Inboxes")."""
    links = links or _NO_LINKS
    piped = piped_param(spec, links.mapped) if links.piped else None
    if piped is not None:
        params = spec.validate_piped(submission.args, submission.kwargs, piped)
    else:
        params = spec.validate(submission.args, submission.kwargs)
    max_timeout = spec.max_timeout(settings.job_timeout_seconds)
    if submission.timeout_seconds is not None and submission.timeout_seconds > max_timeout:
        raise InvalidOptions(
            f"timeout_seconds may be at most {max_timeout:g} for {spec.name!r}",
            [{"loc": ["timeout_seconds"], "msg": f"must be <= {max_timeout:g}"}],
        )
    allowed = spec.max_retries
    if submission.max_retries is not None and submission.max_retries > allowed:
        raise InvalidOptions(
            f"max_retries may be at most {allowed} for {spec.name!r} (a submit can lower its retries, not raise them)",
            [{"loc": ["max_retries"], "msg": f"must be <= {allowed}"}],
        )
    queue = submission.queue or spec.queue
    if queue not in spec.queues:
        named = ", ".join(repr(q) for q in spec.queues)
        raise InvalidOptions(
            f"queue {queue!r} is not one of {spec.name!r}'s queues ({named})",
            [{"loc": ["queue"], "msg": f"must be one of {named}"}],
        )
    priority = spec.priority if submission.priority is None else submission.priority
    part = lanes.limit_part(params, spec.concurrency_key, spec.rate_key)
    lane = lanes.lane_id(spec.name, queue, priority, tenant, part)
    job_kwargs: dict[str, Any] = {"params": params}
    if submission.timeout_seconds is not None:
        job_kwargs["timeout_seconds"] = submission.timeout_seconds
    if submission.max_retries is not None:
        job_kwargs["max_retries"] = submission.max_retries
    if piped is not None:
        job_kwargs["pipe"] = piped
    now_ms = int(time.time() * 1000)
    fp = fingerprint(spec.name, job_kwargs)
    record = JobRecord(
        spec.name,
        job_kwargs,
        now_ms,
        fp,
        reply=reply is not None,
        lane=lane,
        flow=links.flow,
        step=links.step,
        parent=links.parent,
        inbox=inbox,
    ).encode()
    return Prepared(
        task_id=tenancy.stored_id(tenant, submission.id or new_id()),
        task=spec.name,
        due=_due(submission),
        record=record,
        fp=fp,
        index_score=time.time_ns() // 1000,
        reply=dumps(reply) if reply is not None else b"",
        lane=lane,
        inbox=inbox,
    )


def _due(submission: TaskSubmission) -> str:
    """When the job becomes runnable: a delay from the enqueue, counted on Redis's clock (so a process whose
    clock is off does not move it), or the absolute time the submit named."""
    if submission.delay_seconds:
        return f"+{round(submission.delay_seconds * 1000)}"
    defer_until = submission.defer_until()
    return str(int(defer_until.timestamp() * 1000)) if defer_until else "+0"


class Enqueuer:
    """Enqueues prepared submissions; concurrent ones share one script call."""

    def __init__(self, pool: ArqRedis, settings: Settings, scripts: Scripts | None = None) -> None:
        self._pool = pool
        self._settings = settings
        self._scripts = scripts or Scripts(pool)
        self._batcher: Batcher[Prepared, Submitted | Exception] = Batcher(self._flush, max_batch=128)

    async def enqueue(self, prepared: Prepared) -> Submitted:
        """Enqueue once; ``IdConflict`` or ``QueueFull`` when it cannot be, ``NotReplicated`` when replicas
        were required and too few confirmed it."""
        # Not ``Batcher.submit``'s shield: a cancelled submit's future is cancelled and the batch skips its
        # outcome, and one future per submit is enough.
        outcome = await self._batcher.submit_nowait(prepared)
        if isinstance(outcome, IdConflict):
            raise await self._conflict(prepared)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _conflict(self, prepared: Prepared) -> IdConflict:
        """Say what differs from the task that has this id (read again: conflicts are rare)."""
        with keys.on_task_shard(prepared.task_id):
            task_keys = [keys.result(prepared.task_id), keys.job(prepared.task_id)]
        raw_result, raw_job = await self._pool.mget(task_keys)
        submitted = JobRecord.decode(prepared.record)
        existing: tuple[str, dict[str, Any]] | None = None
        if raw_result:
            old = ResultRecord.decode(raw_result)
            existing = (old.function, old.kwargs)
        elif raw_job:
            job = JobRecord.decode(raw_job)
            existing = (job.function, job.kwargs)
        return IdConflict.between(tenancy.client_id(prepared.task_id), existing, (submitted.function, submitted.kwargs))

    async def _flush(self, batch: list[Prepared]) -> list[Submitted | Exception]:
        return list(await per_shard(batch, _task_id, self._flush_shard))

    async def _flush_shard(self, batch: list[Prepared]) -> list[Submitted | Exception]:
        """One script call for ``batch``, all of the shard this call works on."""
        settings = self._settings
        children_ttl_ms = (settings.result_ttl_seconds + round(settings.job_timeout_seconds)) * 1000
        args: list[Any] = [children_ttl_ms, settings.max_queue_depth, settings.queue_depths]
        for p in batch:
            args += [p.task_id, p.due, p.record, p.fp, p.index_score, p.reply, p.lane]
        script_keys = [keys.schedule(settings.queue_name), keys.task_index(settings.queue_name)]
        if not settings.redis_wait_replicas:
            replies = await self._scripts.enqueue(keys=script_keys, args=args)
            return [_outcome(p, reply) for p, reply in zip(batch, replies, strict=True)]
        replies, confirmed = await durability.script_then_wait(
            self._pool, self._scripts.enqueue, script_keys, args, settings
        )
        outcomes = [_outcome(p, reply) for p, reply in zip(batch, replies, strict=True)]
        return [
            (durability.check(settings, confirmed, o.task_id) or o) if isinstance(o, Submitted) else o for o in outcomes
        ]


def _task_id(prepared: Prepared) -> str:
    return prepared.task_id


_STATES: Final = {state.value.encode(): state for state in TaskState}


def _outcome(prepared: Prepared, reply: list[bytes]) -> Submitted | SubmissionError:
    """The script's answer for one item: a ``Submitted``, or the exception to raise for it."""
    kind = reply[0]
    if kind == b"created":
        return Submitted(prepared.task_id, prepared.task, True, _STATES[reply[1]])
    if kind == b"aborting":
        return ParentAborting("this task's abort was requested: it submits no more children")
    if kind == b"full":
        queue = lanes.parse(prepared.lane).queue
        message = f"queue {queue!r} holds {reply[1].decode()} waiting tasks, its maximum; retry later"
        return QueueFull(message, queue, prepared.task_id)
    if reply[2] == b"same":
        return Submitted(prepared.task_id, prepared.task, False, TaskState(reply[1].decode()))
    return IdConflict(
        f"id {tenancy.client_id(prepared.task_id)!r} is already taken"
    )  # ``Enqueuer.enqueue`` says what differs


async def enqueue_task(
    pool: ArqRedis,
    registry: TaskRegistry,
    settings: Settings,
    submission: TaskSubmission,
    reply: dict[str, Any] | None = None,
) -> Submitted:
    """One submission from outside an API process (benchmarks, tests, schedules): validate and enqueue it."""
    spec = registry.get(submission.task)
    return await Enqueuer(pool, settings).enqueue(prepare(spec, settings, submission, reply))
