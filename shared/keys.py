"""Every Redis key and channel Relay owns, in one place (arq's own keys stay in ``arq.constants``).

Keys are unambiguous for every valid task id and queue name: each kind has its own prefix, no prefix is a
prefix of another, and the variable part (a task id or a queue name) always comes last. So no id can make one
kind of key equal another (``relay:reply:x:sent`` could once be read as two different keys). Where a key has
two variable parts, the first cannot contain the separator that follows it (a task name has no ``|``, an API
key name no ``:``).

The queue, lanes and claims (one design, shared by the enqueue, claim, commit, abort and retry scripts):

- **Namespace and named queues.** ``RELAY_QUEUE_NAME`` names a deployment's *schedule* (below); named queues
  (``default``, ``gpu``, ...: ``shared.lanes``) are a part of each lane's identity, not separate schedules, so
  a worker serving several queues claims from all of them in one script call, and one schedule still answers
  "what is due, what lapses" for the whole deployment (on a Redis Cluster, all in one hash slot: below).
- **Lanes.** A waiting job (queued, deferred, retrying) sits in its *lane*: a sorted set per lane id (``lane``),
  scored by the time it falls due (ms, Redis's clock). A lane id is ``<task>|<queue>|<priority>|<tenant>|<limit
  part>`` (``shared.lanes``; a bare task name is a lane from before named queues). Every job of one lane is
  alike for the claim: same code, queue, priority, owner and limit keys. So a worker claims only lanes of the
  tasks and queues it serves (never a job it lacks the code for), a lane whose limit is full is skipped whole (a
  job blocked by its limit never blocks another behind it), and a lane no live worker serves simply waits.
  A job's record names its lane (``ln``), and so does its in-progress marker while it runs.
- **The schedule** is the deployment's own sorted set (``settings.queue_name``), in two bands: each non-empty
  lane has a *marker* member (``LANE_MARKER`` + lane id, which no task id can be) scored by its lane's head
  (earliest due time), and each running job has its id scored ``RUNNING_BASE`` + its lease expiry. So one
  ``ZRANGE 0 0`` tells an idle worker whether anything is due or any lease lapses, and a claim reads the due
  markers, never a scan of jobs. Every add uses ``ZADD LT`` (a marker is never later than its lane's head)
  except a held lane's: a rate-limited lane's marker moves to when its next start is allowed, and a lane whose
  concurrency limit is full is *parked* (marker moved ``PARK_MS`` ahead, lane id noted in ``parked``); the
  commit that frees a slot of that limit puts the parked lanes' markers back at their heads and wakes workers.
  The claim corrects any marker that is early or whose lane emptied.
- **The claim's choice** among due lanes it serves: the worker's queues in its order (``RELAY_QUEUES``: earlier
  first); within a queue, tenants share the claim by weighted fair queueing (``RELAY_TENANT_WEIGHTS``; virtual
  times per tenant and named queue in ``fairness``, floors per named queue and pool of workers running the same
  tasks); within a tenant, higher priority first, then the earliest lane head (FIFO).
  Priority orders a tenant's own work: no tenant gets ahead of another by raising its priorities. Priority is
  strict: a steady stream of higher-priority work can starve that tenant's lower priorities (no aging).
- **Limits** are enforced in the claim, on Redis's clock: a concurrency limit's running jobs are a set per task
  and key value (``slots``; a job leaves it when its end, re-queue or retry is committed, and a lapsed lease's
  job is swept and handed back, which frees its slot); a rate limit is a GCRA schedule per task and key value
  (``rate_limit``: the theoretical time of the next allowed start). A rate-limited lane's next start has one
  waker: the worker that took the last one while it had a slot left (``rate_limit`` + ``|w``, its token, expiring
  with it). Only the waker's claim answers with that start as its next due time; any other worker that finds the
  lane held comes back 4 intervals later (20 ms at least), and takes the start itself then if it is still there.
  So the workers do not all claim at every allowed start (one claim per start, plus one per worker per five or so),
  and a waker that stopped, or whose slots filled, delays a start by 4 intervals at most.
- **Depth.** Waiting jobs per queue are counted in ``depth`` (a hash: queue -> count) by every script that moves
  jobs in or out of lanes, so a submit checks its queue's depth in O(1); the count is recounted from the lanes
  when missing or negative, and by the minute's maintenance. A submit handed off (below) never waits: it is not
  checked, and its depth is not read.
- **Time** that decides ownership (due, leases, the sweep, abort requests against enqueue times, rate limits) is
  Redis's ``TIME``, read inside each script (``relay_now`` in ``lib.lua``); callers pass delays, never "now".
- **Workflows** (``shared.workflows``; issue #23). A workflow's steps are ordinary task jobs (ids
  ``<workflow id>:<step>``), enqueued into their lanes exactly as ``enqueue.lua`` does (``lib.lua``
  ``relay_enqueue_jobs``, one code path), whose records name their workflow and step (``"wf"``, ``"ws"``, right
  after ``"ln"``). The workflow itself is one hash (``flow``: every step's record template, its predecessors and
  successors, the dependencies it still waits on, its state and its value once ended, plus the workflow's
  counters), and its own event log (``flow_events``, numbered by the hash's ``seq``, its entries and bytes
  counted there too). The commit that ends a step (``commit.lua``, op F, and ``abort.lua`` for a waiting step)
  also advances the workflow in the same script (``relay_flow_step_ended``): it records the step's value,
  counts down its successors' dependencies and enqueues those that reach zero, or skips them when the step
  failed (unless a chord's callback opted in to failures), and ends the workflow once no step is active. The
  step's state in the hash changes from active to ended once, so a commit applied twice (its replay is a
  ``dup`` anyway) never releases a successor twice. A map over the value before it is a step that expands, when
  released, into member steps numbered after the last one (``lib.lua``, ``relay_flow_expand``). A child task
  (``await ctx.submit``) names its parent (``"pt"``): its end publishes ``c<parent id>`` on the namespace's wake-up
  channel, for the waiting parent. The enqueue that creates a child adds it to its parent's ``children`` set (so
  any API process can cancel a parent's children, recursively: ``Transitions.abort_children``), and refuses it
  while its parent's abort is requested (so a child submitted as its parent is cancelled is never left behind).
  The hash and the log expire ``RELAY_RESULT_TTL_SECONDS`` after the workflow ends; ``flow_index`` lists them
  by submit time for ``GET /workflows`` and is pruned like the task index.
- **Redis Cluster** (``RELAY_REDIS_CLUSTER=true``; issue #22). A cluster runs a script only if every key it
  touches (its KEYS and the keys it builds from the prefixes here) hashes to one slot, so in cluster mode every
  key and channel of a namespace carries the namespace's *hash tag* ``{relay:<namespace>}`` (``cluster_tag``):
  the key is the tag followed by its single-Redis name, built from the *schedule key* ``schedule(namespace)``
  (the tag followed by the namespace) wherever that name holds the namespace. So ``arq:job:<id>`` becomes
  ``{relay:ns}arq:job:<id>``, ``relay:index:ns`` becomes ``{relay:ns}relay:index:{relay:ns}ns`` (the second
  tag is inert: Redis hashes the first ``{...}``, and it is always the one in front, before any id, task name
  or limit value that could hold a brace), and arq's global abort set becomes ``{relay:ns}arq:abort``.
  With one shard (``RELAY_QUEUE_SHARDS=1``, the default) one tag per namespace means one slot per deployment
  queue: like the Python peers that support a cluster, one queue does not scale past one shard. The namespace may
  hold no brace in cluster mode (``shared.settings``), so it cannot end the tag early.
  *Sharding* (``RELAY_QUEUE_SHARDS`` = S > 1, cluster mode only; issue #22). Shard ``s`` of 0..S-1 has the tag
  ``{relay:<namespace>:<s>}`` (``shard_tag``), and each shard is a whole namespace of the layout above (schedule,
  lanes, depth, index, fairness, limits' sets, abort set, claim requests, inbox and wake-up channels), so every
  script still runs on one slot, its text unchanged but for the tag compiled into it (``shared.scripts.Scripts``
  registers each shard's texts the first time a call works on that shard). S = 1 is the layout above exactly: no
  new name, no extra command.
  A task's shard is ``crc16(shard_key(id)) mod S`` (``shard_of``; the CRC16 Redis Cluster hashes keys with), so
  ``GET /tasks/{id}``, its stream and its abort find it from the id alone, a client-chosen id too. The *shard key*
  is the stored id (its tenant prefix included) without the suffixes Relay appends to ids it derives from another:
  a workflow's steps are ``<flow>:<n>`` (``step_id``) and a task's children ``<parent>.<n>`` or
  ``<parent>.r<n>.<n>`` (``worker.engine.children``), stripped from the end as often as they occur, so steps,
  children and their children share their workflow's or parent's shard, and ``flow_*``, the children set and a
  cancel's walk stay on one slot. The cost of needing no lookup: a client id that itself ends in ``.<digits>`` or
  ``:<digits>`` shares the shard of the id before it (``order:1``, ``order:2``, ... all land in ``order``'s shard),
  so such ids do not spread; uuids (the default) and ids like ``order-1`` do.
  *Which shard a call works on* is a ``contextvars.ContextVar`` (``on_shard``, ``on_task_shard``; ``tag()`` reads
  it, else the process's own tag, shard 0's), chosen over passing a shard through every key function because every
  key is built through ``tag()`` already, and a context is inherited by the tasks a block starts: a job claimed
  from shard ``s`` runs, emits events, submits children and commits in shard ``s`` with no code of its own knowing.
  Who sets it: the API's routes of one task or workflow (``api.sharding``), a submit once its id is drawn; the
  worker's claim (one per shard each poll, starting at the next shard each poll so free slots go to every shard in
  turn and a backlog in one never starves another), its abort checks and its minute's maintenance, per shard.
  Batches are split per shard (``shared.batching.per_shard``: the enqueues and the commits, one script call per
  shard, side by side); the lease renewal thread renews each shard's leases with that shard's script.
  Pub/sub per shard: each worker subscribes to each shard's wake-up channels, and each API process has a hub per
  shard (``api.shardhub``), each with its own inbox channel in that shard's slot (a submit names its task's
  shard's), on a connection to the primary that holds that slot (``shared.redis.RelayCluster.pubsub`` keeps a pool
  per slot): S connections per process, some to the same node.
  Reads across shards go to each and combine, each bounded: ``GET /tasks`` reads a page from each shard's index and
  merges by score, showing nothing past where a shard that stopped its bounded walk early could still hold a newer
  task (``shared.tasklist``); counts, waiting jobs and ``GET /workflows`` sum or merge per shard, ``why`` asks each
  task's shard. Presence, the catalogue, quotas and schedules stay in shard 0's slot (they are per deployment, not
  per task: their modules pin it with ``on_shard(0)``). What changes meaning with S > 1: a concurrency or rate
  limit, tenant fairness and ``RELAY_MAX_QUEUE_DEPTH`` are kept per shard (a limit of N allows up to N per shard).
  ``RELAY_KEY_MAX_ACTIVE`` still counts every shard: the key's set is in shard 0 and admission is one script there,
  which prunes nothing; the set's ended tasks are read in their own shards outside it and removed by a second
  script (``api.quotas``). The Service Bus bridge's reply outbox is per shard (the scripts that end a task fill
  its shard's): a bridge worker takes from each shard's in turn (``worker.bridge.replies``).
  A worker's sleeps are timed by shard 0's node's clock (nodes' clocks differ by little; ownership still reads
  each shard's own clock in its scripts).
  Outside cluster mode the tag is empty and every name is exactly what it was before: single Redis and
  Sentinel deployments need no migration, and their keys are no longer (so no slower) than before. Moving an
  existing single-Redis deployment onto a cluster is a new deployment (drain, then switch), not a rename.
  The tag is chosen per process (``use_layout``, called where a process builds its cluster clients): one
  process serves one namespace, on one kind of Redis.
  Pub/sub is sharded on a cluster (Redis 7): the scripts and ``shared.wakeup`` publish with ``SPUBLISH``
  (``publish_command``, rendered into the scripts as ``{{PUBLISH}}``), which only the nodes of the channel's slot
  hear, where a classic ``PUBLISH`` crosses the cluster bus to every node; the API's hub and the workers'
  wake-up listener subscribe with ``SSUBSCRIBE`` on the primary that holds the namespace's slot
  (``shared.sharded_pubsub``). Every channel of a namespace's shard carries its tag, so one connection per process
  and shard hears them all; when the slot moves, Redis ends the subscriptions and the process follows the slot (its
  streams re-read the log, its workers claim once). Single Redis and Sentinel keep ``PUBLISH``.
  Reads outside scripts (the task list, stats, presence, catalogue, quotas, ``MGET``s and pipelines) touch
  one namespace's keys (with several shards, each shard's, per shard); nothing scans across namespaces.
- **Inboxes** (issue #25). Each API process subscribes, once at start, to its own channel
  ``inbox_channel(namespace, process)``. A task submitted with its events streamed back on the POST response names
  that channel in its job record (``ib``), and every script that appends the task's events while the record lives
  (the worker's commits, an abort of a waiting task) publishes them there as well as on the task's channel (one
  message per inbox per script call, however many of that process's tasks the call wrote events for); the
  process routes them to the stream by the task id in each event. So the submit path has no per-task
  ``SUBSCRIBE`` round trip (nor its ``UNSUBSCRIBE``), and ordering is unchanged: the inbox is subscribed before any
  submit names it, so nothing of a task created by the submit can be published before its stream listens.
  Followers elsewhere (``GET .../events``, a repeated submit of an existing id) subscribe to the task's channel as
  before. What is published with no record to name the inbox (a repaired ``end``, a manual retry) reaches the
  stream by its heartbeat's re-read of the log, as a lost message always did.
- **Hand-off** (issue #25). An idle worker's claim registers it in its schedule's *idle registry* (``idle``: a
  hash, worker token -> ``<expiry ms>|<free slots>|<lease ms>|,<queues>,|,<tasks>,``, the tasks being those it
  runs, each with a concurrency or rate limit marked ``!``: ``,echo,!render,``); an enqueue whose job is due now
  and whose lane is empty hands the job straight to a registered worker that serves its queue and task (the one
  with the most free slots): it claims the job there, exactly as the claim would (marker, try, lease on Redis's
  clock, the running band), pushes the claimed item onto that worker's own list (``handoff``), which the worker
  waits on with ``BLMPOP`` (taking every item waiting; ``BLPOP`` before Redis 7.0), counts it in the worker's
  ``handed`` counter, and sends no wake-up notice (a call's hand-offs to one worker are written together: one push,
  one count, one registration update). So a submit to an idle system costs no claim round trip. A
  workflow step released alone (a chain's next step as the commit of the one before applies, a chord's callback,
  a workflow's only first step) is handed off by the same rules (lib.lua ``relay_taker``, ``relay_hand_off``); a
  commit that puts a job back in its lane, or lets a parked lane run, hands off nothing after it, and several steps
  released together go into their lanes for one claim. Why it is safe:
  *Nothing is overtaken.* A registration is written only by a claim that took everything it could (nothing it
  serves left due; a lane held back by a limit counts as due when it may start again) and expires, on Redis's
  clock, before anything it knows of falls due (its next due time, a parked lane's return; not a lane another
  worker watches, below) or
  ``RELAY_POLL_DELAY_SECONDS`` x 4 + 1 s at most (an idle worker renews it every third poll, and after any notice
  it hears); every script that makes a job due by a wake-up notice to all (enqueue, commit, retry, workflows, the
  sweep) deletes the whole registry, so the workers it wakes claim and register again; one that names a worker
  for the job instead (below) ends that worker's registration. A live registration therefore means: nothing that
  worker could take is waiting, other than jobs named for or watched by another worker (each waiting for that
  worker's claim: a named job due now on a slot of its own; a watcher busy at its time tells every worker, which
  ends every registration), and its free slots are what the claim left. Priorities,
  tenant fairness and limits only ever choose among waiting jobs, and with none waiting there is nothing to
  choose; a limited task is never handed off, and once a due job of an enqueue goes into its lane (it already
  holds due jobs, or no registered worker takes it), nothing after it in that call is handed off.
  *No slot is promised twice.* Each hand-off takes one of the registration's free slots (at zero it is removed).
  A claim that neither registers nor finds its worker idle removes the registration; one that registers writes
  its free slots less the hand-offs still in flight: the script compares the worker's ``handed`` counter with
  the count of handed jobs the worker has received (an argument of the claim), since a pushed item may be popped
  and on its way while the worker computes its free slots.
  *Nothing is lost.* The handed job is an ordinary running job of that worker: its lease lapses if the worker
  dies, and the sweep takes it over. A handed job that its worker never popped (dead before it could) goes back
  to its lane instead, its try given back (the sweep finds it still in the list), so a worker lost while idle
  costs no job a pickup. A stopping worker removes its registration first, then takes what is left in its list and
  hands it back. Registrations and lists are per shard; with several shards (``RELAY_QUEUE_SHARDS``) workers do
  not register (a slot promised on each shard could be taken on all), and jobs go into lanes as before.
- **Named claims** (issue #25). A job that a script leaves waiting in its lane (an enqueue's: a limited task's,
  never handed off, one behind a due job of its lane, or a deferred one; a commit's: a job put back or retried, a
  lane a freed concurrency slot lets run, a workflow step released; a workflow's first steps; a manual retry's) is
  given to one registered worker that serves its queue and runs its task, the one with the most free slots
  (``relay_name_claimer`` in lib.lua; a job due now takes one of them, so a worker is named for at most that
  many). The script ends that worker's registration and publishes, on the
  queue's channel, ``w<token>`` for a job due now or ``e<due ms>|<token>`` for a later one. That worker claims
  at once, as on any notice (which registers it again: for a later job, until just before it falls due) and, for
  a later job, again as it falls due (``worker.engine.promises``); the others ignore the notice and stay
  registered. A notice to all would have every idle worker claim, one taking the job and the others nothing: with
  8 idle workers, 8 claims per submit of a limited task, 16 per deferred one (at once, to register again, and as
  it fell due). Why it is safe: a job due now waits only for the named worker's claim, on a free slot no hand-off
  can take any more (the worker is out of the registry); a worker named for a job it cannot take (stopping, or
  its slots filled by hand-offs on their way) tells every worker of the channel instead (``j``, or ``d<due>``);
  one that is busy when its later job falls due tells them then, and one that stops first tells them when it
  falls due. A worker lost without stopping, or a lost notice, leaves the job to the others' polls
  (``RELAY_POLL_DELAY_SECONDS`` at most), during which registered workers may still be handed newer jobs of
  other lanes. With no registered worker for the job (none idle, none runs it, or several shards), the notice
  goes to all and ends every registration, as above. The worker named for a later job also watches its lane, by
  its claim at once (below), and a later job of a lane whose watcher claims by then is named for no one: no notice
  at all.
- **Watched due times** (issue #25). Each claim reports when the next job it could take falls due, and every idle
  worker claims at least every poll: so every worker used to learn each due time and claim as it came, one taking the
  job and the others nothing (3 workers, 20 deferred jobs: 126 script calls in tests/e2e/test_wakeup.py, 67 or 68
  now). Now one worker watches each lane's next due time: ``due_watch(queue, lane)`` holds ``<ms>|<token>``, that
  worker's promise to claim at that time (Redis's clock); it counts only before that time, and expires 10 s after it.
  A claim (``claim.lua``) looks at the first 8 lanes it serves that fall due later (rate-limited ones aside: their
  starts have a waker of their own, ``rate_limit``), the next heads of the lanes it has just taken from included; it
  leaves a lane watched by another worker for a time no later than the lane's head to that worker, and wakes for the
  others and watches them if it has a slot left after this claim or watched the lane already (busy at its time, it
  tells every worker) (written only when changed) and returns them (``watching``) for the worker to keep as promises
  (``worker.engine.promises``). At its time the watcher claims: it takes the lane's due jobs and watches the lane's
  next head. An enqueue or commit of a later job of a lane watched for a time no later than the job's names no one and
  sends no notice (``relay_name_claimer``); otherwise the worker it names watches the lane, by the claim it makes at
  once (the script writes no watch: a worker named as it stops would hold one it cannot keep, and the claims its
  pass-on sets off would leave the lane to it). Why nothing waits longer than before: a watch counts only before its
  time, so at it any claim takes the lane's due jobs and watches what follows, whoever watched before; a watcher busy
  at its time tells every worker of the channel (``j``), whose claims then watch the lane; one that stops ends its
  watches (``wake_all.lua``, compared with its token and time, so safe to apply twice) and tells every worker when the
  earliest falls due (``d<ms>``). A watcher lost without stopping leaves its lanes' jobs to the others' polls
  (``RELAY_POLL_DELAY_SECONDS`` at most after they fall due), as a lost notice does. A replayed claim returns the
  watches its first run wrote when that run took jobs (they are kept with the batch), and a claim sent again that
  had taken none runs anew and returns the lanes it watches: so a worker that stops with a claim unanswered (it
  sends it again to hand the jobs back) ends its watches too, as does one whose stop began while a claim was on
  its way. Workers from before watches ignore them, and claim as every due time comes, as they did.
- **Replays.** A script the client sends again after a timeout or a dropped connection is applied once: the
  claim records its request id and batch under ``claim_request(token)``, and a replay returns that batch;
  commits are fenced by the owner's token and skip events already in the log; enqueues are idempotent by id.
"""

from __future__ import annotations

import re
from binascii import crc_hqx
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Final

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

# Per task: prefix + task id.
EVENTS_PREFIX: Final = "relay:events:"
SEQ_PREFIX: Final = "relay:seq:"
EVENT_BYTES_PREFIX: Final = "relay:event-bytes:"
REPLY_PREFIX: Final = "relay:reply:"
# Per queue: prefix + queue name.
INDEX_PREFIX: Final = "relay:index:"
OUTBOX_PREFIX: Final = "relay:outbox:"
WAKEUP_PREFIX: Final = "relay:wakeup:"
INBOX_PREFIX: Final = "relay:inbox:"
MAINTENANCE_PREFIX: Final = "relay:maintenance:"
# Per queue and task name: prefix + task name (no '|' in a name) + '|' + queue name.
LANE_PREFIX: Final = "relay:lane:"
# Per lane: prefix + lane id + '|' + queue name ("Watched due times" above).
WATCH_PREFIX: Final = "relay:watch:"
# Per task and limit key value: prefix + task name + '|' + key value (no '|' in either) + '|' + queue name.
SLOTS_PREFIX: Final = "relay:slots:"
PARKED_PREFIX: Final = "relay:parked:"
RATE_PREFIX: Final = "relay:rate:"
# Per queue name (the schedule): prefix + queue name.
FAIRNESS_PREFIX: Final = "relay:fairness:"
DEPTH_PREFIX: Final = "relay:depth:"
IDLE_PREFIX: Final = "relay:idle:"
# Per worker: prefix + the worker's token.
CLAIM_REQUEST_PREFIX: Final = "relay:claim-request:"
HANDOFF_PREFIX: Final = "relay:handoff:"
HANDED_PREFIX: Final = "relay:handed:"
CATALOGUE_PREFIX: Final = "relay:catalogue:"
PRESENCE_PREFIX: Final = "relay:presence:"
# Per parent task: prefix + task id (its children's ids, a set).
CHILDREN_PREFIX: Final = "relay:children:"
# Per workflow: prefix + workflow id (a task id; its steps are ``<id>:<n>``).
FLOW_PREFIX: Final = "relay:flow:"
FLOW_EVENTS_PREFIX: Final = "relay:flow-events:"
# Per queue name (the schedule): prefix + queue name.
FLOW_INDEX_PREFIX: Final = "relay:flow-index:"
# Per API key and queue: prefix + key name (no ':' in a name) + ':' + queue name.
QUOTA_ACTIVE_PREFIX: Final = "relay:quota-active:"
QUOTA_RATE_PREFIX: Final = "relay:quota-rate:"
# Per queue name (the schedule): prefix + queue name. A key no one ever writes (see ``migration_guard``).
MIGRATION_GUARD_PREFIX: Final = "relay:migration-guard:"
# Per queue name (the schedule): prefix + queue name. Written right before each WAIT (see ``replication_mark``).
REPLICATION_MARK_PREFIX: Final = "relay:replication-mark:"

RELAY_PREFIXES: Final = (
    EVENTS_PREFIX,
    SEQ_PREFIX,
    EVENT_BYTES_PREFIX,
    REPLY_PREFIX,
    INDEX_PREFIX,
    OUTBOX_PREFIX,
    WAKEUP_PREFIX,
    MAINTENANCE_PREFIX,
    LANE_PREFIX,
    SLOTS_PREFIX,
    PARKED_PREFIX,
    RATE_PREFIX,
    FAIRNESS_PREFIX,
    DEPTH_PREFIX,
    CLAIM_REQUEST_PREFIX,
    HANDOFF_PREFIX,
    HANDED_PREFIX,
    IDLE_PREFIX,
    WATCH_PREFIX,
    CATALOGUE_PREFIX,
    PRESENCE_PREFIX,
    QUOTA_ACTIVE_PREFIX,
    QUOTA_RATE_PREFIX,
    FLOW_PREFIX,
    FLOW_EVENTS_PREFIX,
    FLOW_INDEX_PREFIX,
    CHILDREN_PREFIX,
    MIGRATION_GUARD_PREFIX,
    REPLICATION_MARK_PREFIX,
)
ARQ_PREFIXES: Final = (job_key_prefix, result_key_prefix, in_progress_key_prefix, retry_key_prefix)
ABORT_SET: Final = abort_jobs_ss

# A running job's score in the queue: this base plus its lease expiry (ms). Lane markers score their lane's
# head (ms since the epoch, far below 1e15), so one sorted set answers "what is due" and "what lapses" by range.
RUNNING_BASE: Final = 10**15
# A lane's member in the schedule: this character (never the first of a task id) + the task name.
LANE_MARKER: Final = "~"
# How far ahead a parked lane's marker moves (its limit's freed slot brings it back sooner): a safety net.
PARK_MS: Final = 60_000

# The hash tag in front of every key of this process's namespace in cluster mode (shard 0's when it has several);
# empty otherwise. Chosen per process (``use_layout``).
_tag = ""
# This process's namespace and its shards (``RELAY_QUEUE_SHARDS``; 1 outside cluster mode).
_namespace = ""
_shards = 1
# The tag of the shard a call works on (``on_shard``, ``on_task_shard``): set per request or per claim, in the task
# (and the tasks it starts) that works on that shard; empty: the process's own tag (shard 0).
_shard: ContextVar[tuple[str, int]] = ContextVar("relay_shard", default=("", 0))
# What Relay appends to the id of a task it makes out of another (``step_id``: ``:<n>``; a child, see
# ``worker.engine.children``: ``.<n>`` or ``.r<n>.<n>``), stripped from the end to find an id's shard key.
_DERIVED_SUFFIXES = re.compile(r"(?:\.r[0-9]+\.[0-9]+|\.[0-9]+|:[0-9]+)+$")


def cluster_tag(queue_name: str) -> str:
    """The hash tag of a namespace's keys on a Redis Cluster when it has one shard (see ``shard_tag``)."""
    return "{relay:" + queue_name + "}"


def shard_tag(queue_name: str, shard: int, shards: int) -> str:
    """The hash tag of shard ``shard`` of ``shards`` of a namespace: ``{relay:<namespace>:<shard>}``, or
    ``cluster_tag`` when the namespace has one shard (today's layout, unchanged)."""
    return cluster_tag(queue_name) if shards == 1 else "{relay:" + queue_name + ":" + str(shard) + "}"


def use_layout(queue_name: str, cluster: bool, shards: int = 1) -> None:
    """Choose this process's key layout: tagged for ``queue_name`` on a cluster, in ``shards`` shards
    (``shared.redis`` calls this when it builds a cluster client). A process serves one namespace on one kind of
    Redis; a plain client leaves the layout as it is, so a test process that also reads a cluster keeps its tag."""
    global _tag, _namespace, _shards
    if cluster:
        _tag, _namespace, _shards = shard_tag(queue_name, 0, shards), queue_name, shards


@contextmanager
def layout(queue_name: str, cluster: bool, shards: int = 1) -> Iterator[None]:
    """The layout of ``queue_name`` on a cluster (or the plain one) for a block, then the one before it again:
    for a test process that reads several kinds of Redis."""
    global _tag, _namespace, _shards
    previous = _tag, _namespace, _shards
    _tag, _namespace, _shards = (shard_tag(queue_name, 0, shards), queue_name, shards) if cluster else ("", "", 1)
    try:
        yield
    finally:
        _tag, _namespace, _shards = previous


@contextmanager
def layout_kept() -> Iterator[None]:
    """Whatever layout a block chooses (a cluster client it builds calls ``use_layout``), the one before it again
    afterwards: for a test process, whose next test may read another kind of Redis."""
    global _tag, _namespace, _shards
    previous = _tag, _namespace, _shards
    try:
        yield
    finally:
        _tag, _namespace, _shards = previous


def tag() -> str:
    """The hash tag of the shard this call works on (``on_shard``), else this process's: empty outside cluster
    mode."""
    if _shards == 1:
        return _tag  # one shard: no context to read (half the cost of a key's name, on every key of every call)
    return _shard.get()[0] or _tag


def current_shard() -> int:
    """The shard this call works on (``on_shard``): 0 outside one."""
    return _shard.get()[1]


def shard_count() -> int:
    """How many shards this process's namespace has (``RELAY_QUEUE_SHARDS``; 1 outside cluster mode)."""
    return _shards


def shard_key(task_id: str) -> str:
    """The part of a (stored) task id that chooses its shard: the id without the suffixes Relay appends to the
    ids it derives from another (a workflow's steps, a task's children), so those land in their workflow's or
    parent's shard. A client id ending in such a suffix (``order.5``, ``order:5``) shares ``order``'s shard."""
    return _DERIVED_SUFFIXES.sub("", task_id) or task_id


def shard_of(task_id: str, shards: int | None = None) -> int:
    """The shard of a task: ``crc16(shard_key) mod shards`` (the CRC16 Redis Cluster hashes keys with), with this
    process's count of shards unless given, so any process finds a task's keys from its id alone."""
    count = _shards if shards is None else shards
    return 0 if count == 1 else crc_hqx(shard_key(task_id).encode(), 0) % count


@contextmanager
def on_shard(shard: int) -> Iterator[None]:
    """Build the keys of shard ``shard`` in this block (and in the tasks it starts); with one shard, a no-op."""
    if _shards == 1:
        yield
        return
    token = _shard.set((shard_tag(_namespace, shard, _shards), shard))
    try:
        yield
    finally:
        _shard.reset(token)


def on_task_shard(task_id: str) -> AbstractContextManager[None]:
    """``on_shard`` of the shard that holds ``task_id``."""
    return on_shard(shard_of(task_id))


def shards() -> range:
    """Every shard of this process's namespace, 0 first."""
    return range(_shards)


def publish_command() -> str:
    """How this layout publishes: ``SPUBLISH`` on a cluster (only the channel's slot's nodes hear it, see the module
    docstring), ``PUBLISH`` otherwise."""
    return "SPUBLISH" if tag() else "PUBLISH"


def schedule(queue_name: str) -> str:
    """The schedule's key (the namespace's sorted set; what scripts receive as ``queue``): the namespace itself
    outside cluster mode."""
    return tag() + queue_name


def abort_set() -> str:
    """arq's set of abort requests (one per Redis; per namespace on a cluster)."""
    return tag() + ABORT_SET


def events_stream(task_id: str) -> str:
    """The capped Redis Stream that keeps a task's events for replay."""
    return tag() + EVENTS_PREFIX + task_id


def events_channel(task_id: str) -> str:
    """The pub/sub channel a task's live events are published on (channels are not keys)."""
    return tag() + EVENTS_PREFIX + task_id


def event_seq(task_id: str) -> str:
    """The task's event counter: outlives its stream, so numbering never restarts while the task lives."""
    return tag() + SEQ_PREFIX + task_id


def event_bytes(task_id: str) -> str:
    """The bytes of events a task's stream holds (``RELAY_EVENT_LOG_MAX_BYTES``); expires with the stream."""
    return tag() + EVENT_BYTES_PREFIX + task_id


def reply_request(task_id: str) -> str:
    """Where a Service Bus request asked its task's outcome to be sent."""
    return tag() + REPLY_PREFIX + task_id


def job(task_id: str) -> str:
    """arq's job record."""
    return tag() + job_key_prefix + task_id


def result(task_id: str) -> str:
    """arq's result record."""
    return tag() + result_key_prefix + task_id


def in_progress(task_id: str) -> str:
    """arq's in-progress marker; Relay stores the owning worker's token, the try and the start time in it."""
    return tag() + in_progress_key_prefix + task_id


def tries(task_id: str) -> str:
    """arq's try counter."""
    return tag() + retry_key_prefix + task_id


def task_index(queue_name: str) -> str:
    """Every task of the queue by submit time, newest last: ``GET /tasks`` pages through it."""
    return tag() + INDEX_PREFIX + schedule(queue_name)


def reply_outbox(queue_name: str) -> str:
    """Tasks whose Service Bus reply is due, by next attempt time."""
    return tag() + OUTBOX_PREFIX + schedule(queue_name)


def inbox_channel(queue_name: str, process: str) -> str:
    """An API process's own channel: the events of the tasks it streams to their submitters (module docstring)."""
    return tag() + INBOX_PREFIX + schedule(queue_name) + ":" + process


def wakeup_channel(queue_name: str) -> str:
    """Where enqueuers tell idle workers of this queue that a job is due (or when one will be)."""
    return tag() + WAKEUP_PREFIX + schedule(queue_name)


def queue_channel(queue_name: str, queue: str) -> str:
    """Where enqueuers tell the workers serving named queue ``queue`` that a job is due (the default queue's
    notices share the namespace's own channel, with aborts and reply notices)."""
    return wakeup_channel(queue_name) if queue == "default" else f"{tag()}{WAKEUP_PREFIX}{queue}|{schedule(queue_name)}"


def migration_guard(queue_name: str) -> str:
    """A key in the namespace's slot that never exists, declared by every script call on a cluster
    (``shared.redis.RelayCluster.register_script``). While a reshard moves the slot, a command whose keys are
    not all on one node is refused with ``TRYAGAIN``; this key is missing on both nodes, so every script is
    refused until the slot has settled, instead of running on a node that lacks keys it builds itself."""
    return tag() + MIGRATION_GUARD_PREFIX + schedule(queue_name)


def replication_mark(queue_name: str) -> str:
    """A key in the slot of the shard the call works on (``tag``: the script's node; shard 0's tag was refused
    with MOVED by any other primary), written on the submit's connection between its script and ``WAIT``
    (``shared.durability``): WAIT confirms the writes of its own connection up to its last one, and a resend
    that finds its task already there writes nothing itself; after this write, a confirmation covers
    whatever an earlier send (or anyone) wrote before it, so a 200 for an existing id is confirmed too."""
    return tag() + REPLICATION_MARK_PREFIX + schedule(queue_name)


def lane(queue_name: str, lane_id: str) -> str:
    """The waiting jobs of one lane, by due time (see the module docstring)."""
    return f"{tag()}{LANE_PREFIX}{lane_id}|{schedule(queue_name)}"


def lane_marker(lane_id: str) -> str:
    """The member of the schedule that stands for a lane, scored by the lane's head."""
    return LANE_MARKER + lane_id


def slots(queue_name: str, task_name: str, key_value: str) -> str:
    """The running jobs that hold a concurrency limit's slots (a set of task ids)."""
    return f"{tag()}{SLOTS_PREFIX}{task_name}|{key_value}|{schedule(queue_name)}"


def parked(queue_name: str, task_name: str, key_value: str) -> str:
    """The lanes parked until a slot of this concurrency limit frees (a set of lane ids)."""
    return f"{tag()}{PARKED_PREFIX}{task_name}|{key_value}|{schedule(queue_name)}"


def rate_limit(queue_name: str, task_name: str, key_value: str) -> str:
    """A rate limit's theoretical time of the next allowed start (ms, Redis's clock)."""
    return f"{tag()}{RATE_PREFIX}{task_name}|{key_value}|{schedule(queue_name)}"


def fairness(queue_name: str) -> str:
    """Tenants' virtual times for weighted fair queueing (see "The claim's choice" above): a hash of
    ``<named queue>|<tenant>`` -> time, and ``#<named queue>|<pool>`` -> the floor of that queue's contests among
    the workers that run the same tasks (``claim.lua``)."""
    return tag() + FAIRNESS_PREFIX + schedule(queue_name)


def depth(queue_name: str) -> str:
    """Waiting jobs per named queue (a hash: queue -> count)."""
    return tag() + DEPTH_PREFIX + schedule(queue_name)


def claim_request(token: str) -> str:
    """A worker's last claim (its request id and what it claimed), kept briefly so a replayed claim returns the
    same jobs instead of claiming more."""
    return tag() + CLAIM_REQUEST_PREFIX + token


def handoff(token: str) -> str:
    """Jobs claimed for a worker by the enqueue that handed them off (see "Hand-off" above), oldest first."""
    return tag() + HANDOFF_PREFIX + token


def handed(token: str) -> str:
    """How many jobs were ever handed off to a worker (see "Hand-off" above)."""
    return tag() + HANDED_PREFIX + token


def idle_registry(queue_name: str) -> str:
    """The workers of the schedule that wait for a hand-off (see "Hand-off" above)."""
    return tag() + IDLE_PREFIX + schedule(queue_name)


def due_watch(queue_name: str, lane: str) -> str:
    """Which worker claims as lane ``lane``'s next job falls due (see "Watched due times" above)."""
    return f"{tag()}{WATCH_PREFIX}{lane}|{schedule(queue_name)}"


def maintenance_lock(queue_name: str) -> str:
    """Held by the one worker that trims the task index this round."""
    return tag() + MAINTENANCE_PREFIX + schedule(queue_name)


def catalogue(digest: str) -> str:
    """A published task catalogue, named by its digest (``shared.catalogue``)."""
    return tag() + CATALOGUE_PREFIX + digest


def worker_presence(queue_name: str) -> str:
    """The live workers of this queue (a hash: worker id -> what it is doing, refreshed every few seconds)."""
    return tag() + PRESENCE_PREFIX + schedule(queue_name)


def quota_active(queue_name: str, key_name: str) -> str:
    """The sorted set of task ids an API key (by name) has queued or running, scored by reservation time."""
    return f"{tag()}{QUOTA_ACTIVE_PREFIX}{key_name}:{schedule(queue_name)}"


def quota_rate(queue_name: str, key_name: str) -> str:
    """An API key's submit token bucket (a hash: tokens, ts)."""
    return f"{tag()}{QUOTA_RATE_PREFIX}{key_name}:{schedule(queue_name)}"


def flow(flow_id: str) -> str:
    """A workflow's state: its steps, their dependencies, states and values (a hash; see the module docstring)."""
    return tag() + FLOW_PREFIX + flow_id


def flow_events(flow_id: str) -> str:
    """A workflow's event log (a capped Redis Stream, like a task's) and the pub/sub channel of its live events."""
    return tag() + FLOW_EVENTS_PREFIX + flow_id


def flow_index(queue_name: str) -> str:
    """Every workflow of the namespace by submit time, newest last: ``GET /workflows`` pages through it."""
    return tag() + FLOW_INDEX_PREFIX + schedule(queue_name)


def children(task_id: str) -> str:
    """The ids of the tasks ``task_id`` submitted (``ctx.submit``), added by the enqueue that created each; it
    expires ``RELAY_RESULT_TTL_SECONDS`` plus ``RELAY_JOB_TIMEOUT_SECONDS`` after its last child was submitted."""
    return tag() + CHILDREN_PREFIX + task_id


def step_id(flow_id: str, step: int) -> str:
    """The task id of a workflow's step."""
    return f"{flow_id}:{step}"


def queue_name_problem(queue_name: str) -> str | None:
    """Why ``queue_name`` cannot be used (it would share keys with Relay's or arq's), or None."""
    if "|" in queue_name:
        return "it contains '|', which separates the parts of Relay's lane keys"
    for prefix in (*RELAY_PREFIXES, *ARQ_PREFIXES, ABORT_SET):
        if queue_name.startswith(prefix) or f"{queue_name}:".startswith(prefix):
            return f"it would share keys with {prefix!r}"
    return None
