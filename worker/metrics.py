"""Prometheus metrics of one worker process, served on its own port (``RELAY_WORKER_METRICS_PORT``).

The engine calls these hooks where things happen (a run starts, an outcome is recorded, a batch of events is
stored); the in-flight gauge is read from the engine at scrape time. Labels are bounded: task names (the
registry's), outcome and re-queue reasons (Relay's own words), event types, error class names.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.tasks import TaskState

if TYPE_CHECKING:
    from worker.engine.commit import Op, OpResult
    from worker.engine.outcomes import Ending

logger = logging.getLogger("relay.worker.metrics")

# Seconds: from a no-op task (milliseconds) to the default maximum timeout (300 s) and beyond.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
OUTCOMES = {
    TaskState.SUCCEEDED: "succeeded",
    TaskState.FAILED: "failed",
    TaskState.ABORTED: "aborted",
    TaskState.RETRYING: "retrying",
    TaskState.QUEUED: "requeued",
}
_TYPE_START = len(b'{"type":"')  # an event body starts with its type (see shared.events.body)


class WorkerMetrics:
    """This worker's counters, histograms and gauges, in a registry of their own."""

    def __init__(self, concurrency: int, in_flight: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.duration = Histogram(
            "relay_worker_task_duration_seconds",
            "Time from a try's start to its recorded outcome, by task.",
            ["task"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "relay_worker_task_queue_wait_seconds",
            "Time a try waited between being due and starting, by task.",
            ["task"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.started = Counter("relay_worker_tasks_started", "Tries started, by task.", ["task"], registry=r)
        self.outcomes = Counter(
            "relay_worker_task_outcomes",
            "Recorded outcomes of tries: succeeded, failed, aborted, retrying (will run again after a backoff) "
            "or requeued (back on the queue at once).",
            ["task", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "relay_worker_task_retries",
            "Failed tries that will be retried, by task and error class.",
            ["task", "error_type"],
            registry=r,
        )
        self.requeues = Counter(
            "relay_worker_task_requeues",
            "Jobs put back on the queue, by task and reason (worker shutdown, worker lost).",
            ["task", "reason"],
            registry=r,
        )
        self.events = Counter(
            "relay_worker_events_published", "Task events stored and published, by type.", ["type"], registry=r
        )
        self.refused = Counter(
            "relay_worker_outputs_refused",
            "Results and events refused as too large (RELAY_MAX_RESULT_BYTES, RELAY_MAX_EVENT_BYTES); each fails "
            "its try. By task and kind: result, partial or progress.",
            ["task", "kind"],
            registry=r,
        )
        self.held_back = Counter(
            "relay_claim_waits",
            "Due lanes a claim held back by a limit (their jobs wait): reason concurrency (the task's limit is "
            "full) or rate (its next start is not allowed yet).",
            ["reason"],
            registry=r,
        )
        self.handoffs = Counter(
            "relay_worker_handoffs",
            "Jobs an enqueue (or a commit releasing a workflow step) handed straight to this idle worker, claimed for "
            "it (RELAY_HANDOFF): each started, or handed back if the worker was stopping.",
            registry=r,
        )
        self._held_concurrency = self.held_back.labels("concurrency")
        self._held_rate = self.held_back.labels("rate")
        self.in_flight = Gauge("relay_worker_jobs_in_flight", "Jobs running on this worker now.", registry=r)
        self.in_flight.set_function(lambda: float(in_flight()))
        self.concurrency = Gauge(
            "relay_worker_concurrency", "Jobs this worker runs at once (RELAY_WORKER_CONCURRENCY).", registry=r
        )
        self.concurrency.set(concurrency)
        self.bridge_received = Counter(
            "relay_bridge_messages_received", "Service Bus messages the bridge received.", registry=r
        )
        self.bridge_completed = Counter(
            "relay_bridge_messages_completed", "Messages completed once their task was enqueued.", registry=r
        )
        self.bridge_dead_lettered = Counter(
            "relay_bridge_messages_dead_lettered", "Messages dead-lettered, by reason.", ["reason"], registry=r
        )
        self.bridge_abandoned = Counter(
            "relay_bridge_messages_abandoned", "Messages abandoned for redelivery (Redis down).", registry=r
        )
        self.totals: Tally[str] = Tally()  # outcomes of this process, for its presence record
        # Labelled children, looked up once: ``labels()`` takes a lock and builds a key on every call.
        self._per_task: dict[str, tuple[Any, Any, Any]] = {}
        self._outcome_of: dict[tuple[str, str], Any] = {}
        self._event_of: dict[bytes, Any] = {}

    def claim_waits(self, concurrency: int, rate: int) -> None:
        """A claim held back lanes by their limits (``claim.lua``)."""
        if concurrency:
            self._held_concurrency.inc(concurrency)
        if rate:
            self._held_rate.inc(rate)

    def _task(self, task: str) -> tuple[Any, Any, Any]:
        """(started, queue wait, duration) of ``task``."""
        found = self._per_task.get(task)
        if found is None:
            found = self._per_task[task] = (
                self.started.labels(task),
                self.queue_wait.labels(task),
                self.duration.labels(task),
            )
        return found

    # --- the engine's hooks ------------------------------------------------------------------------------

    def task_started(self, task: str, waited_ms: int | None) -> None:
        """A try starts; ``waited_ms`` is its start minus its due time (None if unknown)."""
        started, queue_wait, _ = self._task(task)
        started.inc()
        if waited_ms is not None:
            queue_wait.observe(max(0.0, waited_ms / 1000))

    def task_ended(self, task: str, ending: Ending, started_ms: int | None) -> None:
        """An outcome was recorded (by this worker, for a run it started or a job it took over or refused)."""
        outcome = OUTCOMES.get(ending.state)
        if outcome is None:
            return
        counter = self._outcome_of.get((task, outcome))
        if counter is None:
            counter = self._outcome_of[task, outcome] = self.outcomes.labels(task, outcome)
        counter.inc()
        self.totals[outcome] += 1
        if started_ms is not None:
            self._task(task)[2].observe(max(0.0, time.time() - started_ms / 1000))
        if ending.state is TaskState.RETRYING:
            error_type = ending.data.get("error_type", "Error") if isinstance(ending.data, dict) else "Error"
            self.retries.labels(task, str(error_type)).inc()
        elif ending.state is TaskState.QUEUED:
            self.requeues.labels(task, ending.reason).inc()

    def output_refused(self, task: str, kind: str) -> None:
        """A result or event of ``task`` was over its limit and not stored."""
        self.refused.labels(task, kind).inc()

    def events_stored(self, ops: Sequence[Op], results: Sequence[OpResult]) -> None:
        """A commit call returned: count the events of the ops it applied."""
        for op, result in zip(ops, results, strict=False):
            if result.status != "ok":
                continue
            for body in op.bodies:
                kind = body[_TYPE_START : body.find(b'"', _TYPE_START)]
                counter = self._event_of.get(kind)
                if counter is None:
                    counter = self._event_of[kind] = self.events.labels(kind.decode())
                counter.inc()
