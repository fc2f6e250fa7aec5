"""A worker's writes, batched: events, final outcomes, re-queues and retries of the tasks it owns.

Every write goes through ``commit.lua`` (see it for the fencing and de-duplication rules), and concurrent
writes share one call: a no-op job's ``started``, ``result`` and ``end`` usually cost one stream entry, one
pub/sub message and a share of one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from arq.connections import ArqRedis

from shared import keys
from shared.batching import Batcher, per_shard
from shared.scripts import Scripts
from shared.settings import Settings

if TYPE_CHECKING:
    from worker.metrics import WorkerMetrics


class OpKind(StrEnum):
    """What a commit op does (see ``commit.lua``)."""

    EVENTS = "E"
    FINAL = "F"
    REQUEUE = "R"
    RETRY_LATER = "T"


@dataclass
class Op:
    """One task's change; ``seq_before`` is the seq its events follow; ``inbox`` is where its events go as well
    (``JobRecord.inbox``: the API process streaming them to the task's submitter)."""

    kind: OpKind
    task_id: str
    token: str
    seq_before: int
    bodies: list[bytes]
    extra: list[Any] = field(default_factory=list)
    inbox: str = ""

    def args(self) -> list[Any]:
        """The op's share of the script's ARGV."""
        head = [self.kind.value, self.task_id, self.token, self.seq_before, len(self.bodies)]
        return [*head, *self.bodies, *self.extra, self.inbox]


@dataclass(frozen=True)
class OpResult:
    """``status`` is ``ok``, ``dup`` (it had been applied already) or ``fenced`` (the task is no longer ours)."""

    status: str
    seq: int

    @property
    def applied(self) -> bool:
        return self.status in ("ok", "dup")


def final_op(
    task_id: str,
    token: str,
    seq: int,
    bodies: list[bytes],
    record: bytes,
    reply: bool,
    aborted: bool = False,
    link: str = "",
    value: bytes = b"",
) -> Op:
    """The task ended: store its result record and remove its job records, with its last events (and, for an
    aborted task, its abort request). A linked task (``JobRecord.link``: a workflow's step, a child task) gives
    ``value``, its result's or error's JSON: its workflow takes it as the step's value."""
    return Op(OpKind.FINAL, task_id, token, seq, bodies, [record, int(reply), int(aborted), link, value])


def requeue_op(
    task_id: str, token: str, seq: int, bodies: list[bytes], delay_ms: int, give_back_try: bool, link: str = ""
) -> Op:
    """Back on the queue, due ``delay_ms`` from now (Redis's clock); a shutdown gives its try back, a lost
    worker's try counts."""
    return Op(OpKind.REQUEUE, task_id, token, seq, bodies, [delay_ms, int(give_back_try), link])


def retry_op(
    task_id: str, token: str, seq: int, bodies: list[bytes], delay_ms: int, record: bytes, link: str = ""
) -> Op:
    """Wait ``delay_ms`` (Redis's clock) for the next try, with the job record rewritten to say so."""
    return Op(OpKind.RETRY_LATER, task_id, token, seq, bodies, [delay_ms, record, link])


def events_op(task_id: str, token: str, seq: int, bodies: list[bytes], link: str = "", inbox: str = "") -> Op:
    """Just events (``started``, ``progress``, ``partial``); a workflow's step's go to its workflow's log too."""
    return Op(OpKind.EVENTS, task_id, token, seq, bodies, [link], inbox)


class Committer:
    """Applies ops in the order they were queued, many per round trip."""

    def __init__(
        self, pool: ArqRedis, scripts: Scripts, settings: Settings, metrics: WorkerMetrics | None = None
    ) -> None:
        self._scripts = scripts
        self._metrics = metrics
        self._settings = settings
        self._batcher: Batcher[Op, OpResult] = Batcher(self._flush, max_batch=256)
        self.calls = 0

    def queue(self, op: Op) -> Any:
        """Queue ``op`` now; returns the future of its ``OpResult``."""
        return self._batcher.submit_nowait(op)

    async def apply(self, op: Op) -> OpResult:
        """Queue ``op`` and wait until it is applied."""
        return await self._batcher.submit(op)

    async def drain(self) -> None:
        """Until every queued op has been applied (or has failed)."""
        await self._batcher.wait_idle()

    async def _flush(self, ops: list[Op]) -> list[OpResult]:
        return list(await per_shard(ops, _task_id, self._flush_shard))

    async def _flush_shard(self, ops: list[Op]) -> list[OpResult]:
        """One script call for ``ops``, all of the shard this call works on (``keys.on_shard``)."""
        import time

        settings = self._settings
        queue = settings.queue_name
        args: list[Any] = [int(time.time() * 1000), settings.event_log_max_len, settings.event_log_max_bytes]
        args.append(settings.result_ttl_seconds * 1000)
        args.append(keys.wakeup_channel(queue))
        for op in ops:
            args += op.args()
        self.calls += 1
        script_keys = [keys.schedule(queue), keys.abort_set(), keys.reply_outbox(queue)]
        replies = await self._scripts.commit(keys=script_keys, args=args)
        results = [OpResult(status.decode(), int(seq)) for status, seq in replies]
        if self._metrics is not None:
            self._metrics.events_stored(ops, results)
        return results


def _task_id(op: Op) -> str:
    return op.task_id
