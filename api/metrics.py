"""Prometheus metrics for one API process; the queue's gauges are read from Redis at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.exceptions import RedisError

from shared.lanes import DEFAULT_QUEUE
from shared.queuecounts import NamedQueueCounts, QueueCounts
from shared.queuecounts import queue_counts as counts_of

if TYPE_CHECKING:
    from api.resources import Resources


EMPTY = NamedQueueCounts(0, 0, 0)


class ApiMetrics:
    """Gauges refreshed on each scrape (their own registry, so several apps can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_due = Gauge(
            "relay_queue_due",
            "Tasks due now and waiting for a worker.",
            registry=self.registry,
        )
        self.queue_deferred = Gauge(
            "relay_queue_deferred",
            "Tasks waiting for a later time: a delay, a run_at, or the backoff before a retry.",
            registry=self.registry,
        )
        self.queue_running = Gauge("relay_queue_running", "Tasks running on a worker.", registry=self.registry)
        self.queue_active = Gauge(
            "relay_queue_active",
            "Tasks due now or running: the work that needs a worker now (what worker autoscaling follows; "
            "due alone would scale in workers that are busy with long tasks).",
            registry=self.registry,
        )
        # Per named queue (``shared.lanes``), labelled queue="<name>": the totals above keep their unlabelled names
        # (dashboards and the KEDA trigger of k8s/base read them), and these split them for per-pool scaling.
        self.named_due = Gauge(
            "relay_named_queue_due", "Tasks of a named queue due now.", ["queue"], registry=self.registry
        )
        self.named_deferred = Gauge(
            "relay_named_queue_deferred", "Tasks of a named queue waiting for a later time.", ["queue"],
            registry=self.registry,
        )  # fmt: skip
        self.named_running = Gauge(
            "relay_named_queue_running", "Tasks of a named queue running.", ["queue"], registry=self.registry
        )
        self.named_active = Gauge(
            "relay_named_queue_active",
            "Tasks of a named queue due now or running: what that queue's worker pool scales on.",
            ["queue"],
            registry=self.registry,
        )
        self.named_queues: set[str] = {DEFAULT_QUEUE}
        self.streams_open = Gauge("relay_streams_open", "Event streams open on this process.", registry=self.registry)
        self.channels = Gauge(
            "relay_pubsub_channels", "Task channels this process is subscribed to.", registry=self.registry
        )
        self.redis_up = Gauge("relay_redis_up", "1 if Redis answered the scrape.", registry=self.registry)
        self.streams_max = Gauge(
            "relay_streams_max", "Streams this process serves at once (RELAY_MAX_STREAMS).", registry=self.registry
        )
        self.streams_refused = Counter(
            "relay_streams_refused", "Streams refused with 503 too_many_streams.", registry=self.registry
        )
        # Per API key, labelled by the key's NAME (never the key). Counters are this process's own.
        self.key_submits = Counter(
            "relay_key_submits", "Submits accepted (2xx) for each API key.", ["key"], registry=self.registry
        )
        self.key_refused = Counter(
            "relay_key_refused", "Submits refused by a per-key limit.", ["key", "code"], registry=self.registry
        )
        self.key_active = Gauge(
            "relay_key_active_tasks",
            "Tasks of each API key queued or running, counted in Redis (only when RELAY_KEY_MAX_ACTIVE is set).",
            ["key"],
            registry=self.registry,
        )
        # By route PATTERN (/tasks/<task_id:str>), never the raw path: ids would explode the label cardinality.
        self.http_requests = Counter(
            "relay_http_requests",
            "HTTP requests answered, by route pattern, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "relay_http_request_duration_seconds",
            "Time to a response's headers (a stream: until it starts), by route pattern, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        # Each labelled child looked up once (``labels()`` costs more than the count itself): few keys, all bounded.
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._key_children: dict[str, Any] = {}

    def http_answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its time to the response's headers."""
        children = self._http_children.get((route, method, status))
        if children is None:
            labels = (route, method, str(status))
            children = self.http_requests.labels(*labels), self.http_latency.labels(*labels)
            self._http_children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def key_submitted(self, key_name: str) -> None:
        """Count one submit accepted for an API key."""
        child = self._key_children.get(key_name)
        if child is None:
            child = self._key_children[key_name] = self.key_submits.labels(key=key_name)
        child.inc()


async def queue_counts(res: Resources) -> QueueCounts:
    """The queue's due, deferred and running jobs, in total and per task (one round trip)."""
    return await counts_of(res.scripts, res.settings.queue_name)


async def render_metrics(res: Resources) -> tuple[bytes, str]:
    """Refresh the gauges and render them."""
    metrics = res.metrics
    try:
        counts = await queue_counts(res)
        metrics.queue_due.set(counts.due)
        metrics.queue_deferred.set(counts.deferred)
        metrics.queue_running.set(counts.running)
        metrics.queue_active.set(counts.due + counts.running)
        # Every queue with jobs, or that a live worker serves or a live worker's task names (or that was either
        # since this process started): an empty queue reads 0 rather than vanish (a scaler reading its gauge
        # must find it, also to scale its pool to zero and back).
        metrics.named_queues.update(counts.queues, await res.catalogue.known_queues())
        for name in metrics.named_queues:
            named = counts.queues.get(name, EMPTY)
            metrics.named_due.labels(queue=name).set(named.due)
            metrics.named_deferred.labels(queue=name).set(named.deferred)
            metrics.named_running.labels(queue=name).set(named.running)
            metrics.named_active.labels(queue=name).set(named.due + named.running)
        metrics.redis_up.set(1)
    except (RedisError, OSError):
        metrics.redis_up.set(0)
    metrics.streams_open.set(res.streams.count)
    metrics.streams_max.set(res.settings.max_streams)
    try:
        for name, active in (await res.quotas.active_counts()).items():
            metrics.key_active.labels(key=name).set(active)
    except (RedisError, OSError):
        metrics.redis_up.set(0)
    metrics.channels.set(res.hub.channel_count)
    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
