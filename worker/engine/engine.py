"""The engine of one worker process: what arq's poll loop calls instead of its own pickup.

Each poll iteration claims up to the free slots' worth of due jobs of the tasks this worker runs, in one script
call (``claim.lua``; the queue's layout is in ``shared/keys.py``), which also takes over jobs whose lease lapsed
and says when the next job falls due and the next lease lapses. Between iterations the worker sleeps until
exactly then, or until a wake-up notice (a new job, a retry, an abort), or at most ``RELAY_POLL_DELAY_SECONDS``
(a job an enqueue hands to an idle worker starts at once, with no claim: ``Engine.receive_handoff``);
an idle worker costs Redis about two commands per second (its claims, renewing its registration for hand-offs every
third poll, and its wait on its hand-off list: ``worker.handoff``).

Clocks: every time that decides who owns a job is Redis's, read inside the scripts. The worker's own clock only
times its sleeps: it keeps the offset between Redis's clock and its own (from each claim's answer) to turn due
times it hears of into delays, so a worker whose clock is off wakes on time and never takes a healthy job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from shared import catalogue, keys, tracing
from shared.enqueue import Enqueuer
from shared.errors import SubmissionError
from shared.jobs import JobRecord
from shared.queuecounts import recount_depths
from shared.redis import server_time, stop_retrying_at
from shared.scripts import Scripts
from shared.settings import Settings
from shared.tasks import TaskState
from shared.waiting import wait_set
from worker.engine import outcomes, tries
from worker.engine.commit import Committer, Op, OpResult
from worker.engine.handoffs import HandoffCount
from worker.engine.leases import LeaseKeeper
from worker.engine.outcomes import Ending, RunFacts
from worker.engine.promises import Promises, tell_all
from worker.engine.run import Claimed, JobRun, wait_for_redis
from worker.engine.schedules import Scheduler
from worker.engine.threads import TaskThreads
from worker.metrics import WorkerMetrics
from worker.registry import TaskRegistry

if TYPE_CHECKING:
    from arq.worker import Worker

logger = logging.getLogger("relay.worker")

ABORT_HEARD_SECONDS = 5.0  # how long an abort notice of a task not running here is kept for its start (``note_abort``)
ABORT_CHECK_SECONDS = 1.0  # how often running jobs are checked against arq's abort set without a notice
MAINTENANCE_SECONDS = 60.0
SWEEP_LIMIT = 50
INDEX_SCAN = 500  # index entries one maintenance call examines (a short Lua call)
INDEX_PRUNE_SECONDS = 0.5  # most time one pass spends pruning the index, in calls of INDEX_SCAN entries
# How long a stopping worker keeps trying an unreachable Redis: for its last writes (health key, presence)
# at once if it holds no job, else for handing its jobs back after the grace period.
STOP_REDIS_SECONDS = 2.0


class Engine:
    """Claims, runs and commits jobs for one arq ``Worker`` (see the module docstring)."""

    def __init__(self, pool: ArqRedis, settings: Settings, registry: TaskRegistry) -> None:
        self.pool = pool
        self.settings = settings
        self.registry = registry
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.scripts = Scripts(pool)
        self.metrics = WorkerMetrics(settings.worker_concurrency, lambda: len(self.runs))  # worker.metrics
        self.committer = Committer(pool, self.scripts, settings, self.metrics)
        self.threads = TaskThreads(settings.sync_task_threads)
        self.leases = LeaseKeeper(settings, self.token, self)
        self.runs: dict[str, JobRun] = {}
        self.waiting: dict[str, asyncio.Event] = {}  # runs waiting for their children (holding no slot) -> notice
        self.shutting_down = False
        self.stop_by: float | None = None  # time.monotonic() after which a stopping worker stops trying Redis
        self._claiming = True  # False once arq stops picking jobs: due jobs and lapsed leases wait for others
        self.wake = asyncio.Event()
        self._next_due_ms: float | None = None  # both on Redis's clock (see redis_now_ms)
        self._next_lease_ms: float | None = None
        # A wake-up notice of new work came while every slot was busy (``_wake_for_work``): the next slot to free
        # claims. Cleared as a claim goes out, so a notice that lands during the call still counts.
        self._work_noticed = False
        self.promises = Promises()  # jobs named for this worker to claim when they fall due (worker.engine.promises)
        self._clock_offset_ms = 0.0  # Redis's clock minus this process's, as of the last claim
        self._clock_synced = float("-inf")  # time.monotonic() of that
        self._claim_requests = 0
        # A claim request whose reply never came (a Redis error, or arq's stop cancelling its main loop mid-call):
        # it may have claimed jobs, so it is sent again as is (a replay returns that batch and claims nothing
        # more) by the next poll, or by ``stop`` to hand the batch back, instead of leaving it to lapse.
        # One per shard of the queue (``shared/keys.py``): shard -> its request id.
        self._unanswered_claims: dict[int, str] = {}
        self._claim_rotation = 0  # the shard the next claim starts at, modulo their count
        self._abort_notices: set[str] = set()
        self._due_wake: asyncio.TimerHandle | None = None  # ``_wake_when_due``
        self._aborts_heard: dict[str, float] = {}  # abort notices of tasks not running here: id -> monotonic time
        # The last poll failed on a Redis error: the next waits a whole step (notices end it sooner), since what
        # would otherwise end the sleep at once (a watch's time come, an abort notice) is still pending, and a
        # Redis refusing writes (OOM, MISCONF) would be asked again in a tight loop.
        self._poll_failed = False
        self._telling: set[asyncio.Task[None]] = set()  # promises being passed on (``_in_background``)
        self._pending_endings: set[asyncio.Task[OpResult | None]] = set()  # ``_keep_until_stop``
        self._shard_polls: dict[int, ShardPoll] = {}  # with several shards: why and when to ask each (``_claim``)
        self._last_abort_check = 0.0
        self._last_maintenance = 0.0
        self._last_stored = 0.0
        self.lease_ms = int(settings.lease_seconds * 1000)
        self.catalogue_digest, self._catalogue = catalogue.encode(
            [spec.describe(settings.job_timeout_seconds) for spec in registry]
        )
        self.enqueuer = Enqueuer(pool, settings, self.scripts)
        self.scheduler = Scheduler(registry, settings, self.enqueuer)
        self._catalogue_reader: catalogue.Catalogue | None = None
        self._claim_entries = registry.claim_entries()
        # Hand-offs (shared/keys.py "Hand-off"): how long a registration lasts (None: this worker takes none), the
        # handed jobs received so far (the claim counts those still on their way as taken), and the registered
        # free slots not yet used (at none, a finished job claims, so the worker registers again).
        self.handoff_ms: int | None = int((settings.poll_delay_seconds * 4 + 1) * 1000) if settings.handoff else None
        self.handoffs = HandoffCount(settings.lease_seconds)
        self._handoff_credit = 0
        self._maybe_registered = True  # False once a claim's answer said it left this worker unregistered
        # When an answer last said this worker is registered (time.monotonic()); None once a wake-up notice said the
        # registry was cleared (its script did that), or the registration was used up: the next claim registers.
        self._registered_at: float | None = None
        self._worker: Worker | None = None
        self.on_stop: Callable[[], Coroutine[Any, Any, None]] | None = None  # called as the stop begins

    # --- the loop ---------------------------------------------------------------------------------------

    async def timer(self, step: float) -> AsyncGenerator[float, None]:
        """arq's ``poll`` contract (yield, then sleep), sleeping until the next known due time or notice.

        A cancel of arq's main loop (its shutdown) that was lost during an iteration ends the loop here: on
        Python 3.11, ``asyncio.wait_for`` returns normally when its inner future completes in the same loop
        turn as the cancel (CPython gh-86296), and redis-py wraps every command's write in one, so a SIGTERM
        landing during a command left the worker polling forever, no longer claiming, never exiting. The
        task's count of cancel requests still shows it."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        main = asyncio.current_task()
        while True:
            self.wake.clear()  # a notice that lands during the iteration makes the next sleep end at once
            yield loop.time() - start
            if main is not None and main.cancelling():
                logger.info("the worker's stop request was lost inside a Redis call; stopping now")
                raise asyncio.CancelledError
            delay = self._sleep_seconds(step)
            if delay > 0:
                await wait_set(self.wake, delay)
            else:
                await asyncio.sleep(0)  # always let the loop run: signals, cancellations, other tasks

    def redis_now_ms(self) -> float:
        """Redis's clock as this worker estimates it (for sleeps and presence, never for ownership)."""
        return time.time() * 1000 + self._clock_offset_ms

    async def sync_clock(self, older_than_seconds: float = 0.0) -> None:
        """Read Redis's clock (``TIME``) unless a claim did within ``older_than_seconds``: an idle worker's claims
        do not read it (one command fewer per poll), so its presence refreshes ask now and then."""
        if time.monotonic() - self._clock_synced < older_than_seconds:
            return
        seconds, micros = await server_time(self.pool, keys.schedule(self.settings.queue_name))
        self._clock_offset_ms = seconds * 1000 + micros / 1000 - time.time() * 1000
        self._clock_synced = time.monotonic()

    def _sleep_seconds(self, step: float) -> float:
        if self._poll_failed:
            return step
        now_ms = self.redis_now_ms()
        wake_at = now_ms + step * 1000
        free = self._claiming and self.has_free_slot
        if self._next_due_ms is not None and free:
            wake_at = min(wake_at, self._next_due_ms)
        if self._next_lease_ms is not None and self._claiming:
            wake_at = min(wake_at, self._next_lease_ms + 1)
        promised = self.promises.next_ms()
        if promised is not None:  # with no slot free too: it then tells every worker (``_keep_promises``)
            wake_at = min(wake_at, promised)
        if self.scheduler.next_ms is not None:  # on this process's clock: schedules are wall-clock times here
            wake_at = min(wake_at, self.scheduler.next_ms + self._clock_offset_ms)
        if self.runs and self._abort_notices:
            return 0.0
        return max(0.0, (wake_at - now_ms) / 1000)

    async def poll(self, worker: Worker) -> None:
        """One iteration (replaces ``Worker._poll_iteration``). A Redis failure skips the rest of this
        iteration instead of ending the worker: jobs are safe in Redis, and the next iteration tries again."""
        for job_id, task in list(worker.tasks.items()):
            if task.done():
                del worker.tasks[job_id]
                task.result()
        self._claiming = worker.allow_pick_jobs and not self.shutting_down
        self._worker = worker
        self._poll_failed = False
        try:
            if self._claiming:
                await self._claim(worker)
            await self._keep_promises()
            if self.runs:
                await self._check_aborts()
            await worker.heart_beat()
            if time.monotonic() - self._last_stored >= catalogue.STORE_EVERY_SECONDS:
                await self.store_catalogue()
            await self.scheduler.enqueue_due()
        except (RedisError, OSError) as exc:
            logger.warning("poll failed on a Redis error (%s); polling again", exc)
            self._next_due_ms = None
            self._poll_failed = True
            return
        if time.monotonic() - self._last_maintenance > MAINTENANCE_SECONDS:
            self._last_maintenance = time.monotonic()
            await self._maintain()

    async def _keep_promises(self) -> None:
        """Jobs named for this worker that are due by now: the claim just made took them, unless it could not take
        everything due (no slot left, or not claiming): then every worker of their channels hears of them."""
        due = self.promises.take_due(self.redis_now_ms())
        if due and not (self._claiming and self.has_free_slot):
            notices = [(channel, b"j") for channel in due]
            await tell_all(self.scripts, self.settings.queue_name, notices, shard_of=self.promises.shard_of)

    async def store_catalogue(self) -> None:
        """Store what this worker runs (``shared.catalogue``); its presence record names it."""
        await catalogue.store(self.pool, self.catalogue_digest, self._catalogue)
        self._last_stored = time.monotonic()

    async def _claim(self, worker: Worker) -> None:
        self._work_noticed = False  # this claim looks at all there is, as of now
        if keys.shard_count() == 1:
            self._next_due_ms, self._next_lease_ms = await self._claim_shard(worker, 0)
            return
        # Several shards (``shared/keys.py``): one claim per shard, each in its shard's layout (the jobs it starts
        # run in it too), starting at the next shard each poll so that free slots go to every shard in turn.
        # A shard is asked only when there is a reason to: a notice from it, a job or lease of it due by now, or
        # half an idle poll since it was last asked (the safety net for a lost notice, as one shard has its poll);
        # so a notice costs one claim, not one per shard.
        shards = keys.shard_count()
        first, self._claim_rotation = self._claim_rotation % shards, self._claim_rotation + 1
        now_ms, now = self.redis_now_ms(), time.monotonic()
        for shard in (*range(first, shards), *range(first)):
            state = self._shard_polls.setdefault(shard, ShardPoll())
            if not state.due(now_ms, now, self.settings.poll_delay_seconds / 2):
                continue
            state.noticed, state.asked = False, now
            with keys.on_shard(shard):
                state.next_due_ms, state.next_lease_ms = await self._claim_shard(worker, shard)
        polls = self._shard_polls.values()
        self._next_due_ms = min((p.next_due_ms for p in polls if p.next_due_ms is not None), default=None)
        self._next_lease_ms = min((p.next_lease_ms for p in polls if p.next_lease_ms is not None), default=None)

    async def _claim_shard(self, worker: Worker, shard: int) -> tuple[float | None, float | None]:
        """One claim on shard ``shard`` (the one this call works on); when its next job falls due and its next
        lease lapses (Redis's clock)."""
        free = max(0, worker.max_jobs - self.busy)
        # A request id of its own: redis-py sends the same call again after a timeout or a dropped connection,
        # and the script then returns the jobs its first run claimed instead of claiming more.
        if shard not in self._unanswered_claims:
            self._claim_requests += 1
            self._unanswered_claims[shard] = f"{self._claim_requests}"
        received = self.handoffs.received
        argument, self._maybe_registered = self._handoff_argument(), True  # True until an answer says otherwise
        claimed, swept, next_due, next_lease, redis_now, held_back, *handoff = await self._claim_call(
            self._unanswered_claims[shard], free, argument
        )
        del self._unanswered_claims[shard]
        registered, handed, watching = [*handoff, None, None, None][:3]  # a replay answers without them
        for channel, at, lane in watching or ():  # shared/keys.py "Watched due times": kept as promises
            self.promises.add(channel, float(at), lane.decode(), shard)
        if watching and self.shutting_down and (telling := self._pass_on_promises()):
            self._in_background(telling)  # the stop began during the call: its pass-on (``begin_stop``) lacked these
        if registered is not None:  # less what was handed off since the call
            self._handoff_credit = int(registered) - (self.handoffs.received - received)
            self._maybe_registered = int(registered) > 0
            self._registered_at = time.monotonic() if int(registered) > 0 else None
        if handed is not None:
            self.handoffs.observe(int(handed), received, time.monotonic())
        self.metrics.claim_waits(int(held_back[0]), int(held_back[1]))
        if redis_now is not None:  # None: nothing queued or running (the script did not read the clock)
            self._clock_offset_ms = int(redis_now) - time.time() * 1000
            self._clock_synced = time.monotonic()
        now_ms = self.redis_now_ms()
        for item in claimed:
            self._start(worker, _claimed(item))
        for item in swept:
            claimed, own = _swept(item)
            if own and claimed.task_id in self.runs:
                continue  # still running here: the sweep has just extended its lease
            self._take_over(claimed)
        return (
            now_ms + float(next_due) if next_due is not None else None,
            now_ms + float(next_lease) if next_lease is not None else None,
        )

    async def _claim_call(self, request: str, free: int, handoff: str | None = None) -> list[Any]:
        """One call of claim.lua as request ``request``, taking at most ``free`` jobs."""
        args: list[str | int] = [request, free, self.lease_ms, self.token, SWEEP_LIMIT, self.settings.queues]
        args += [self.settings.tenant_weights, self._handoff_argument() if handoff is None else handoff]
        args += self._claim_entries
        reply: list[Any] = await self.scripts.claim(
            keys=[keys.schedule(self.settings.queue_name), keys.abort_set(), keys.claim_request(self.token)], args=args
        )
        return reply

    def _handoff_argument(self) -> str:
        """The claim's hand-off argument (``claim.lua``): none with several shards (a slot registered on each could
        be handed off on all) or once stopping."""
        if self.handoff_ms is None or keys.shard_count() > 1 or self.shutting_down:
            return ""
        renewal_due = (
            self._registered_at is None
            or self._handoff_credit < self.settings.worker_concurrency - self.busy
            or time.monotonic() - self._registered_at >= self.settings.poll_delay_seconds * 3
        )
        return f"{self.handoff_ms}:{self.handoffs.received}:{int(self._maybe_registered)}:{int(renewal_due)}"

    def receive_handoff(self, raw: bytes, stopping: bool = False) -> asyncio.Task[OpResult | None] | None:
        """A job an enqueue claimed for this worker (shared/keys.py "Hand-off"): it starts as a claimed one, or,
        once the worker stops, goes back to its lane as if never claimed (returns the task doing that)."""
        claimed = _handed(raw)
        self.handoffs.received += 1
        self._handoff_credit -= 1
        self.metrics.handoffs.inc()
        if self._worker is not None and not (stopping or self.shutting_down):
            self._start(self._worker, claimed)
            return None
        ending = self._refusal(claimed)
        if ending is not None:
            return self._commit_later(ending, claimed, claimed.record.function if claimed.record else "<unknown>", None)
        task = asyncio.create_task(self._hand_back(claimed.task_id))
        task.add_done_callback(_log_failure)
        return task

    async def _hand_back(self, task_id: str) -> OpResult | None:
        """A handed job that raced this worker's stop goes back to its lane as if never claimed (``handback.lua``):
        it never started here, so it has no event to record and costs no pickup."""
        try:
            await self.scripts.handback(keys=[keys.schedule(self.settings.queue_name)], args=[task_id, self.token])
        except (RedisError, OSError) as exc:
            logger.warning("task %s: not handed back as the worker stops (Redis: %s); it runs again once its lease "
                           "lapses", task_id, exc)  # fmt: skip
        return None

    async def _hand_back_unanswered_claim(self) -> None:
        """At stop: the jobs of a claim whose reply never came (arq cancels its main loop mid-call once no job
        runs) go back on the queue now, their pickup given back, instead of running again as a lost worker's
        once their leases lapse. Asking again cannot claim more: a replay returns only that batch, and a
        request that never reached Redis takes nothing (limit 0)."""
        unanswered, self._unanswered_claims = self._unanswered_claims, {}
        endings: list[Awaitable[OpResult | None]] = []
        for shard, request in unanswered.items():  # one per shard of the queue at most (``_claim``)
            with keys.on_shard(shard):
                reply = await self._claim_call(request, 0)
                claimed, swept, watching = reply[0], reply[1], reply[8] if len(reply) > 8 else None
                for channel, at, lane in watching or ():  # the watches it wrote: passed on below
                    self.promises.add(channel, float(at), lane.decode(), shard)
                for item in claimed:
                    job = _claimed(item)
                    ending = self._refusal(job) or outcomes.requeued("worker shutdown", give_back_try=True)
                    function = job.record.function if job.record else "<unknown>"
                    endings.append(self.commit_ending(ending, self._facts(job, function, started_ms=None), job.seq))
                for item in swept:
                    job, _ = _swept(item)
                    if job.task_id not in self.runs:
                        self._take_over(job)
        if telling := self._pass_on_promises():
            await telling
        if endings:
            logger.info("handing back %d jobs claimed as the worker stopped", len(endings))
            await asyncio.gather(*endings)

    # --- starting and ending jobs -----------------------------------------------------------------------

    @property
    def busy(self) -> int:
        """Slots in use: running jobs, not counting those waiting for their children (``worker.engine.children``)."""
        return len(self.runs) - len(self.waiting)

    @property
    def has_free_slot(self) -> bool:
        """Whether a claim could take a job now."""
        return self.busy < self.settings.worker_concurrency

    @property
    def can_claim(self) -> bool:
        """Whether a claim now could take a job: claiming (not stopping), and a slot free."""
        return self._claiming and not self.shutting_down and self.has_free_slot

    @property
    def catalogue(self) -> catalogue.Catalogue:
        """What the live workers offer: a child task this worker does not run is checked against it."""
        if self._catalogue_reader is None:
            self._catalogue_reader = catalogue.Catalogue(self.pool, self.settings.queue_name)
        return self._catalogue_reader

    def begin_wait(self, run: JobRun) -> asyncio.Event:
        """``run`` waits for its children: its slot is free for other work (a child, say) until ``end_wait``.
        Returns the event a child's end sets (``note_child``)."""
        notice = self.waiting.setdefault(run.task_id, asyncio.Event())
        self.wake.set()  # claim for the freed slot now
        return notice

    def end_wait(self, run: JobRun) -> None:
        """``run`` runs again (it holds a slot again, even if the worker is full meanwhile: it was running)."""
        self.waiting.pop(run.task_id, None)

    def note_child(self, parent_id: str) -> None:
        """A wake-up notice said a child of ``parent_id`` ended."""
        notice = self.waiting.get(parent_id)
        if notice is not None:
            notice.set()

    def _start(self, worker: Worker, claimed: Claimed) -> None:
        ending = self._refusal(claimed)
        if ending is not None:
            record = claimed.record
            function = record.function if record else "<unknown>"
            self._commit_later(ending, claimed, function, started_ms=None)
            return
        assert claimed.record is not None
        spec = self.registry.get(claimed.record.function)
        run = JobRun(self, claimed, spec, claimed.record)
        self.runs[claimed.task_id] = run
        if self._aborts_heard.pop(claimed.task_id, None) is not None:  # Redis's abort set decides (``_check_aborts``)
            self._abort_notices.add(claimed.task_id)
            self.wake.set()
        self.leases.hold(claimed.task_id, run.deadline + self.settings.lease_seconds, run)
        task = run.task = asyncio.create_task(run.run(), name=f"relay-task:{claimed.task_id}")
        worker.tasks[claimed.task_id] = task
        worker.job_counter += 1
        task.add_done_callback(lambda _: self._finished(worker, claimed.task_id, run))

    def _refusal(self, claimed: Claimed) -> Ending | None:
        """Why a claimed job must not run (arq's own exits, each with its events), or None."""
        record = claimed.record
        if claimed.aborted:
            return outcomes.aborted("aborted before it started")
        if record is None:
            return outcomes.failed(outcomes.JobRecordMissing("the job's record was missing when its turn came"))
        if record.function not in self.registry:
            message = f"no task {record.function!r} is registered on this worker"
            return outcomes.failed(outcomes.NotRunnable(message))
        spec = self.registry.get(record.function)
        count = tries.count(record, claimed.try_number, spec.retry.max_retries, self.settings.max_pickups)
        if count.beyond:
            return outcomes.failed(outcomes.TriesExhausted(f"the task was picked up {count.cap} times, its maximum"))
        return None

    def _take_over(self, claimed: Claimed) -> None:
        """A job whose worker was lost: back on the queue at once, or failed if that keeps happening."""
        record = claimed.record
        function = record.function if record else "<unknown>"
        logger.warning("task %s (%s): its worker stopped renewing its lease; taking it over", claimed.task_id, function)
        if claimed.aborted:
            ending = outcomes.aborted("aborted while its worker was lost")
        elif record is None:
            ending = outcomes.failed(outcomes.JobRecordMissing("the job's record was missing when its worker was lost"))
        elif record.function in self.registry:
            ending = self._lost_ending(claimed, record, self.registry.get(record.function).retry.max_retries)
        else:  # the sweep takes over any lapsed lease: the task's policy is the live workers' that run it
            task = asyncio.create_task(self._take_over_unknown(claimed, record))
            task.add_done_callback(_log_failure)
            self._keep_until_stop(task)
            return
        self._keep_until_stop(self._commit_later(ending, claimed, function, started_ms=None))

    async def _take_over_unknown(self, claimed: Claimed, record: JobRecord) -> OpResult | None:
        """``_take_over`` of a job whose task this worker does not run, with the retries its policy allows as the
        live workers that run it publish it (``shared.catalogue``; none if none does): read as 0, a task allowing
        more tries than ``RELAY_MAX_PICKUPS`` was failed early."""
        try:
            policy_retries = (await self.catalogue.get(record.function)).max_retries
        except (SubmissionError, RedisError, OSError):
            policy_retries = 0
        ending = self._lost_ending(claimed, record, policy_retries)
        return await self.commit_ending(ending, self._facts(claimed, record.function, None), claimed.seq)

    def _lost_ending(self, claimed: Claimed, record: JobRecord, policy_retries: int) -> Ending:
        count = tries.count(record, claimed.try_number, policy_retries, self.settings.max_pickups)
        if count.last:
            return outcomes.failed(outcomes.WorkerLost(f"its worker was lost on each of its {count.cap} tries"))
        return outcomes.requeued("worker lost", give_back_try=False)

    def _facts(self, claimed: Claimed, function: str, started_ms: int | None) -> RunFacts:
        return RunFacts(
            claimed.task_id,
            self.token,
            self.settings.queue_name,
            claimed.try_number,
            started_ms,
            claimed.record,
            function,
            tracing.context_span(tracing.carrier_of(claimed.record)).trace_id,
        )

    def _commit_later(
        self, ending: Ending, claimed: Claimed, function: str, started_ms: int | None
    ) -> asyncio.Task[OpResult | None]:
        task = asyncio.create_task(self.commit_ending(ending, self._facts(claimed, function, started_ms), claimed.seq))
        task.add_done_callback(_log_failure)
        return task

    def _finished(self, worker: Worker, task_id: str, run: JobRun | None = None) -> None:
        """``run`` of ``task_id`` ended. Its id may be running here again already: a retry committed with a short
        delay is claimed by this worker's next claim, which can start it before the first run's commit reply
        arrives; so the run and its lease hold are dropped only if they are still this run's."""
        was_full = not self.has_free_slot
        if run is None or self.runs.get(task_id) is run:
            self.runs.pop(task_id, None)
        self.leases.release(task_id, run)
        worker.job_counter -= 1
        if run is not None and not run.began:
            self._hand_back_unstarted(run)
        if self.shutting_down:
            self.wake.set()  # arq's grace period lasts while its tasks hold this one: the next poll drops it now
        elif self._work_noticed or (self._next_due_ms is not None and self._next_due_ms <= self.redis_now_ms()):
            self.wake.set()  # more work is due: claim for the free slot now
        elif self._handoff_argument() and self._handoff_credit <= 0:
            self.wake.set()  # its registration for hand-offs is used up: claim, and so register again
        elif was_full and self._next_due_ms is not None:
            self._wake_when_due(self._next_due_ms)  # the sleep begun while full ignored it (``_sleep_seconds``)

    def _hand_back_unstarted(self, run: JobRun) -> None:
        """``run`` was cancelled before its first step (a stop's cancel landing in the loop turn that started it):
        none of it ran and nothing was recorded, so the job is re-queued with its try given back, as a stop hands
        back the jobs it did not run, instead of lapsing into a lost worker's take-over that counts a try (and
        fails a task on its last one). ``stop`` waits for it."""
        ending = outcomes.requeued("worker shutdown", give_back_try=True)
        self._keep_until_stop(self._commit_later(ending, run.claimed, run.spec.name, None))

    def _keep_until_stop(self, task: asyncio.Task[OpResult | None]) -> None:
        """An ending being recorded that ``stop`` waits for before it drains the committer (a take-over found
        by the claim the stop sends again would otherwise be queued after the drain, and lapse once more)."""
        self._pending_endings.add(task)
        task.add_done_callback(self._pending_endings.discard)

    def _wake_when_due(self, due_ms: float) -> None:
        """Claim at ``due_ms`` (Redis's clock) if a slot is free then, else as one frees: for a known due time the
        current sleep does not end at (it began while every slot was busy), without a claim before it."""
        if self._due_wake is not None:
            self._due_wake.cancel()
        delay = max(0.0, (due_ms - self.redis_now_ms()) / 1000)
        self._due_wake = asyncio.get_running_loop().call_later(delay, self._wake_for_work)

    async def commit_ending(
        self,
        ending: Ending,
        facts: RunFacts,
        seq: int,
        queued: tuple[Op, asyncio.Future[OpResult]] | None = None,
    ) -> OpResult | None:
        """Record ``ending`` (its op already queued as ``queued``, if given; see ``commit_op``) and count it."""
        op, first = queued if queued is not None else (outcomes.op_for(ending, facts, seq), None)
        result = await self.commit_op(op, facts.task_id, first)
        if result is not None and result.applied:
            self.metrics.task_ended(facts.function, ending, facts.started_ms)
        return result

    def begin_stop(self, wait_seconds: float) -> None:
        """The worker was told to stop (a signal; ``worker.engine.patch``), its jobs given ``wait_seconds`` to
        finish: from ``STOP_REDIS_SECONDS`` after that, nothing waits on Redis any more (``stop_retrying_at``),
        so a worker whose Redis is away still exits. A later call (a second signal) only brings it closer."""
        if not self.shutting_down and self.on_stop is not None:
            task = asyncio.get_running_loop().create_task(self.on_stop())
            task.add_done_callback(_log_failure)
        if telling := self._pass_on_promises():  # this worker claims no more: every worker hears of them
            self._in_background(telling)
        self.shutting_down = True
        stop_by = time.monotonic() + wait_seconds + STOP_REDIS_SECONDS
        self.stop_by = stop_by if self.stop_by is None else min(self.stop_by, stop_by)
        stop_retrying_at(self.pool, self.stop_by)

    def _in_background(self, telling: Coroutine[Any, Any, None]) -> None:
        """Run ``telling`` as a task held until it ends (the loop keeps only a weak reference to a task)."""
        task = asyncio.get_running_loop().create_task(telling)
        self._telling.add(task)
        task.add_done_callback(self._telling.discard)

    def _pass_on_promises(self) -> Coroutine[Any, Any, None] | None:
        """Every promise of this worker, forgotten here, as the call that ends its watches and tells every worker
        of their channels (each at its earliest time: ``j`` if due, else ``d<ms>``); None when it has none."""
        promised = self.promises.take_all()
        if not promised:
            return None
        now_ms = self.redis_now_ms()
        notices = [(ch, b"j" if due <= now_ms else b"d%d" % due) for ch, (due, _) in promised.items()]
        ended = {ch: watches for ch, (_, watches) in promised.items()}
        return tell_all(self.scripts, self.settings.queue_name, notices, self.token, ended, self.promises.shard_of)

    async def commit_op(self, op: Op, task_id: str, first: asyncio.Future[OpResult] | None = None) -> OpResult | None:
        """Apply ``op`` (already queued as ``first``, if given), retrying while Redis is away: until the stop
        deadline once the worker is stopping (then the lease lapses and another worker runs the job again)."""
        attempt = 0
        while True:
            try:
                result = await asyncio.shield(first) if first is not None else await self.committer.apply(op)
            except (RedisError, OSError) as exc:
                first = None
                attempt += 1
                if self.stop_by is not None and time.monotonic() >= self.stop_by:
                    logger.error(
                        "could not hand back task %s before stopping (Redis: %s); another worker runs it again "
                        "once its lease lapses",
                        task_id,
                        exc,
                    )
                    return None
                await wait_for_redis(f"the outcome of task {task_id}", attempt, exc, self.stop_by)
                continue
            if result.status == "fenced":
                logger.warning("task %s: another worker owns it now; its outcome here is dropped", task_id)
            return result

    # --- aborts -----------------------------------------------------------------------------------------

    def note_abort(self, task_id: str) -> None:
        """A wake-up notice named a task to abort. One not running here is remembered briefly: a job handed to
        this worker is running as far as Redis knows (the abort answered ``aborting``) before the worker pops it,
        and it is checked as it starts (``_start``) instead of up to a poll later, when a short task has ended."""
        if task_id in self.runs:
            self._abort_notices.add(task_id)
            self.wake.set()
            return
        now = time.monotonic()
        heard = self._aborts_heard
        while heard and next(iter(heard.values())) < now - ABORT_HEARD_SECONDS:  # oldest first
            del heard[next(iter(heard))]
        heard.pop(task_id, None)
        heard[task_id] = now

    def note_job(self, shard: int = 0) -> None:
        """A wake-up notice (of ``shard``'s channel) said a job is due now."""
        self._registered_at = None  # the script that sent it cleared the idle registry
        self._shard_polls.setdefault(shard, ShardPoll()).noticed = True
        self._wake_for_work()

    def _wake_for_work(self) -> None:
        """Claim now if a slot is free; a worker with none claims as one frees instead. Every notice reaches every
        worker of the queue: with all of them busy and a backlog arriving, claiming on each would cost one claim
        per worker per submit (4 workers: 201 claims for 50 submits), each taking nothing."""
        if self.shutting_down or self.has_free_slot:
            self.wake.set()
        else:
            self._work_noticed = True

    def note_promised(self, due_ms: float, channel: bytes, shard: int = 0) -> None:
        """A notice named this worker to claim a job of ``channel`` that falls due at ``due_ms`` (Redis's clock)."""
        self.promises.add(channel, due_ms, shard=shard)
        self.note_due(due_ms, shard)  # its registration ended: it claims now, and so registers again

    def note_named_job(self, channel: bytes, shard: int = 0) -> None:
        """A notice named this worker to claim a job of ``channel`` due now: kept as a promise due now until the
        claim, so a stop that lands first tells every worker instead (the notice went to this worker alone)."""
        self.promises.add(channel, self.redis_now_ms(), shard=shard)
        self.note_job(shard)

    def catch_up(self, shard: int = 0) -> None:
        """``shard``'s wake-up channel is back after a loss: claim from it now, for any notice missed meanwhile."""
        self._registered_at = None
        self._shard_polls.setdefault(shard, ShardPoll()).noticed = True
        self.wake.set()

    def note_due(self, due_ms: float, shard: int = 0) -> None:
        """A wake-up notice (of ``shard``'s channel) said a job falls due at ``due_ms`` (Redis's clock)."""
        self._registered_at = None  # the script that sent it cleared the idle registry
        state = self._shard_polls.setdefault(shard, ShardPoll())
        if state.next_due_ms is None or due_ms < state.next_due_ms:
            state.next_due_ms = due_ms
        if self._next_due_ms is None or due_ms < self._next_due_ms:
            self._next_due_ms = due_ms
        self._wake_for_work()

    async def _check_aborts(self) -> None:
        now = time.monotonic()
        if not self._abort_notices and now - self._last_abort_check < ABORT_CHECK_SECONDS:
            return
        self._last_abort_check = now
        self._abort_notices.clear()
        ids: list[str] = []
        scores: list[float | None] = []
        for shard, shard_ids in _by_shard(list(self.runs)).items():  # each shard's abort set (shared/keys.py)
            with keys.on_shard(shard):
                scores += await self.pool.zmscore(keys.abort_set(), shard_ids)
            ids += shard_ids
        for task_id, score in zip(ids, scores, strict=True):
            run = self.runs.get(task_id)
            # Only a request made after this job's enqueue is for it (the claim's rule too): an older one was
            # meant for an earlier run of the id.
            if score is None or run is None or score < run.record.enqueue_ms:
                continue
            if not run.abort_requested:
                logger.info("task %s: abort requested", task_id)
                run.abort_requested = True
                self._cancel(task_id)

    def _cancel(self, task_id: str) -> None:
        run = self.runs.get(task_id)
        if run is not None and run.task is not None:
            run.task.cancel()

    def lease_lost(self, task_id: str, holder: object = None) -> None:
        """The lease keeper found another worker owns ``task_id`` (as held by ``holder``: a run of it that ended
        since, its id running here again, is not this one): stop this run without recording it."""
        run = self.runs.get(task_id)
        if holder is not None and run is not holder:
            return
        if run is not None and not run.lease_lost and not run.cancelled:
            run.lease_lost = True
            logger.warning("task %s: lease lost (this worker stalled past its lease); stopping this run", task_id)
            self._cancel(task_id)

    # --- upkeep -----------------------------------------------------------------------------------------

    async def _maintain(self) -> None:
        """One worker per minute prunes the task and workflow indexes and arq's stale abort entries, and counts the
        named queues' depths again (``shared/keys.py``), on each shard of the queue."""
        for shard in keys.shards():
            with keys.on_shard(shard):
                await self._maintain_shard()

    async def _maintain_shard(self) -> None:
        queue = self.settings.queue_name
        lock = keys.maintenance_lock(queue)
        try:
            if not await self.pool.set(lock, self.token, nx=True, px=int(MAINTENANCE_SECONDS * 1000)):
                return
            await self._prune_index(keys.task_index(queue))
            await self._prune_index(keys.flow_index(queue), "flows")
            await recount_depths(self.scripts, queue)
            stale_before = int(self.redis_now_ms()) - 60_000
            waiting = await self.pool.zrangebyscore(keys.abort_set(), "-inf", stale_before)
            if waiting:  # stale: its task neither runs nor waits (a running one put back waits with its abort)
                states = [await self.pool.exists(keys.in_progress(i.decode()), keys.job(i.decode())) for i in waiting]
                stale = [i for i, live in zip(waiting, states, strict=True) if not live]
                if stale:
                    await self.pool.zrem(keys.abort_set(), *stale)
        except (RedisError, OSError) as exc:
            logger.warning("maintenance skipped: %s", exc)

    async def _prune_index(self, index: str, kind: str = "tasks") -> None:
        """Drop expired entries, oldest first, batch after batch while they are mostly expired (at 100 tasks/s
        some 6,000 expire a minute), within a time budget; the few live ones among them are stepped over."""
        start, budget_ends = 0, time.monotonic() + INDEX_PRUNE_SECONDS
        while True:
            args: list[str | int] = [self.settings.task_index_max, INDEX_SCAN, start, kind]
            _, examined, kept = await self.scripts.maintenance(keys=[index], args=args)
            start += kept
            if examined < INDEX_SCAN or kept * 2 > examined or time.monotonic() > budget_ends:
                return

    async def stop(self) -> None:
        """After arq's shutdown: hand back a claim cancelled mid-call, flush what is queued, stop the lease keeper
        and the task threads."""
        try:
            await self._hand_back_unanswered_claim()
        except (RedisError, OSError) as exc:
            logger.error("could not hand back the jobs of a claim cut short by the stop (Redis: %s); other workers "
                         "run them once their leases lapse", exc)  # fmt: skip
        if self._pending_endings:
            await asyncio.gather(*self._pending_endings, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self.committer.drain()
        if self._due_wake is not None:
            self._due_wake.cancel()
        self.leases.stop()
        for task_id, name in self.threads.stop():
            logger.warning(
                "task %s %s: its thread is still running and is abandoned as the worker exits (Python cannot stop "
                "a thread; its run has already ended or been re-queued)",
                task_id,
                name,
            )

    # --- logging (task id, name, timing and outcome; never argument or result values unless asked) -------

    def log_start(self, run: JobRun) -> None:
        """A line when a task starts: at DEBUG (the INFO line comes at its end), or at INFO with its arguments
        when ``RELAY_LOG_TASK_VALUES`` asks for them."""
        values = self.settings.log_task_values
        if not values and not logger.isEnabledFor(logging.DEBUG):
            return
        waited = (run.started_ms - run.claimed.due_ms) / 1000
        params = f" params={run.record.params!r}" if values else ""
        level = logging.INFO if values else logging.DEBUG
        logger.log(level, "task %s %s try=%d started (waited %.3fs)%s", run.task_id, run.spec.name, run.try_number,
                   waited, params)  # fmt: skip

    def log_end(self, run: JobRun, ending: Ending, result: OpResult) -> None:
        took = time.time() - run.started_ms / 1000
        what = ending.state.value if ending.state is not TaskState.QUEUED else f"re-queued ({ending.reason})"
        if ending.state in (TaskState.FAILED, TaskState.RETRYING) and isinstance(ending.data, dict):
            what += f": {ending.data.get('error_type')}"
        values = f" result={ending.data!r}" if self.settings.log_task_values else ""
        waited = (run.started_ms - run.claimed.due_ms) / 1000
        logger.info("task %s %s try=%d %s in %.3fs (waited %.3fs)%s", run.task_id, run.spec.name, run.try_number,
                    what, took, waited, values)  # fmt: skip


@dataclass
class ShardPoll:
    """What a worker knows of one shard of its queue between claims (Redis's clock for the times)."""

    noticed: bool = False  # a wake-up notice came from it since it was last asked
    next_due_ms: float | None = None
    next_lease_ms: float | None = None
    asked: float = float("-inf")  # time.monotonic() of its last claim

    def due(self, now_ms: float, now: float, idle_seconds: float) -> bool:
        """Whether a claim should ask this shard now."""
        return (
            self.noticed
            or (self.next_due_ms is not None and self.next_due_ms <= now_ms)
            or (self.next_lease_ms is not None and self.next_lease_ms <= now_ms)
            or now - self.asked >= idle_seconds
        )


def _by_shard(ids: list[str]) -> dict[int, list[str]]:
    """``ids`` grouped by their shard (``keys.shard_of``): all in shard 0 when the queue has one."""
    if keys.shard_count() == 1:
        return {0: ids} if ids else {}
    groups: dict[int, list[str]] = {}
    for task_id in ids:
        groups.setdefault(keys.shard_of(task_id), []).append(task_id)
    return groups


def _claimed(item: list[Any]) -> Claimed:
    task_id, raw, try_number, aborted, due, seq = item
    due_ms = int(float(due or 0))  # a lane's scores may carry microseconds (enqueue.lua)
    return Claimed(task_id.decode(), _record(raw), int(try_number), bool(aborted), due_ms, int(seq))


def _swept(item: list[Any]) -> tuple[Claimed, bool]:
    task_id, raw, try_number, aborted, seq, own = item
    return Claimed(task_id.decode(), _record(raw), int(try_number), bool(aborted), 0, int(seq)), bool(own)


def _handed(raw: bytes) -> Claimed:
    """A handed job's item (``enqueue.lua``): the claimed item ``claim.lua`` would return, as JSON."""
    task_id, record, try_number, aborted, due, seq = json.loads(raw)
    return Claimed(task_id, _record(record.encode()), int(try_number), bool(aborted), int(due), int(seq))


def _record(raw: bytes | None) -> JobRecord | None:
    if not raw:
        return None
    try:
        return JobRecord.decode(raw)
    except ValueError:
        return None


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("could not record an outcome", exc_info=task.exception())
