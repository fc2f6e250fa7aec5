"""Builds the pieces ``worker.settings`` hands to arq: functions, Redis settings and lifecycle hooks."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from typing import Any

import uvloop
from arq.worker import Function, func

from shared import keys
from shared.config_errors import refuse
from shared.logs import configure as configure_logging
from shared.redis import probe_client, public_url, redis_settings
from shared.serialization import dumps, loads
from shared.settings import Settings, get_settings
from worker import observe
from worker.engine import patch
from worker.engine.engine import Engine
from worker.engine.stalls import StallWatchdog
from worker.handoff import HandoffListener
from worker.registry import TaskSpec
from worker.tasks import TaskModuleError, load, registry
from worker.wakeup import WakeupListener

__all__ = [
    "HEALTH_CHECK_INTERVAL_SECONDS",
    "dumps",
    "functions",
    "health_check_key",
    "loads",
    "on_shutdown",
    "on_startup",
    "redis_settings",
    "settings",
    "tune_cli_process",
]

logger = logging.getLogger("relay.worker")

WAKEUP_CTX_KEY = "relay_wakeup"
STALLS_CTX_KEY = "relay_stalls"
BRIDGE_CTX_KEY = "relay_bridge"
HANDOFF_CTX_KEY = "relay_handoff"
HANDOFF_WAIT_SECONDS = 10.0
# arq --check passes while the health key is younger than this (+1 s): keeps liveness probes meaningful.
HEALTH_CHECK_INTERVAL_SECONDS = 10
# arq's own timeout only backs Relay's up (Relay's engine runs jobs; this bounds arq's in-progress expiry).
ARQ_TIMEOUT_MARGIN_SECONDS = 5.0


def tune_cli_process() -> None:
    """How ``arq worker.settings`` starts the worker, set where arq's CLI starts it (``arq.cli.run_worker``, looked
    up at call time) rather than at import, so a process that only imports these settings (a test building a
    ``Worker``) is left as it is (so is ``arq --watch``, a development reload that starts its workers itself):

    - on uvloop, as Sanic runs the API: each hop of a round trip costs the worker less (a round trip at random
      arrival 5 % shorter side by side: BENCHMARKS.md section 2, ``bench.ab_round_trip``). arq's ``Worker``
      takes the loop the policy gives.
    - with the ~60,000 objects of the loaded code frozen out of the garbage collector (``gc.freeze``, as the API
      does once it serves): each full collection walked them all, 11 to 14 ms with every running job paused here."""
    import arq.cli  # click, arq's own dependency; only the CLI's start is wrapped

    start = arq.cli.run_worker
    if getattr(start, "relay_tuned", False):
        return

    def run_worker(settings_cls: Any, **kwargs: Any) -> Any:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        gc.collect()
        gc.freeze()
        return start(settings_cls, **kwargs)

    run_worker.relay_tuned = True  # type: ignore[attr-defined]
    arq.cli.run_worker = run_worker


def settings() -> Settings:
    """The process settings, with their task modules loaded; installs Relay's engine into arq before arq
    builds its Worker. No task to run, or a task module that cannot be loaded, ends the process as a bad
    variable does: one line on stderr, exit code 78."""
    patch.install()
    config = get_settings()
    modules = config.task_module_list()
    try:
        load(modules)
    except TaskModuleError as exc:
        refuse([str(exc)])
    if not modules:
        refuse(
            [
                "no tasks to run: set RELAY_TASK_MODULES to the modules that register them "
                "(RELAY_TASK_MODULES=worker.tasks.demo runs the demo tasks; see docs/tasks.md)"
            ]
        )
    if not len(registry):
        refuse(
            [
                f"RELAY_TASK_MODULES={config.task_modules!r} registers no task: set RELAY_TASK_MODULES to the "
                "modules that register them with @registry.task() (from worker.tasks import registry)"
            ]
        )
    return config


def health_check_key(config: Settings) -> str:
    """Per host (per pod), so ``arq --check worker.settings`` checks this worker, not any on the queue."""
    return f"{config.queue_name}:health-check:{socket.gethostname()}"


def functions(config: Settings) -> list[Function]:
    """One arq function per registered task: what arq is told can run (Relay's engine runs them)."""
    return [_function(spec, config) for spec in registry]


def _function(spec: TaskSpec, config: Settings) -> Function:
    async def run_by_relay(ctx: dict[str, Any], **_: Any) -> None:
        raise RuntimeError(f"task {spec.name!r} is run by Relay's engine, not by arq's job runner")

    run_by_relay.__qualname__ = spec.name
    timeout = (spec.timeout_seconds or config.job_timeout_seconds) + ARQ_TIMEOUT_MARGIN_SECONDS
    return func(run_by_relay, name=spec.name, timeout=timeout, max_tries=config.max_pickups)


async def on_startup(ctx: dict[str, Any]) -> None:
    """Start the engine, its lease keeper and stall watchdog, the wake-up subscription and the bridge."""
    configure_logging()
    config = get_settings()
    engine = Engine(ctx["redis"], config, registry)
    await engine.store_catalogue()  # what it runs; its presence record (observe.start) names it
    patch.attach(engine)
    ctx[patch.ENGINE_CTX_KEY] = engine
    # Metrics server, presence record, tracing (worker.observe); its first presence record is written before
    # "ready": an API accepts this worker's tasks from then on.
    await observe.start(ctx, config, engine)
    engine.leases.start(asyncio.get_running_loop().call_soon_threadsafe)
    code = {getattr(spec.fn, "__code__", None): spec.name for spec in registry}
    watchdog = ctx[STALLS_CTX_KEY] = StallWatchdog(config.stall_warning_seconds, {c: n for c, n in code.items() if c})
    watchdog.start()
    listener = ctx[WAKEUP_CTX_KEY] = WakeupListener(ctx["redis"], config.queue_name, engine, config.queue_list)
    await listener.start()
    if engine.handoff_ms is not None and keys.shard_count() == 1:
        # Its own client, each command tried once (a pop sent again could take more items while the first pop's
        # reply is lost), whose timeout outlasts the wait: an idle worker asks once per HANDOFF_WAIT_SECONDS.
        waits = config.model_copy(update={"redis_timeout_seconds": config.redis_timeout_seconds + HANDOFF_WAIT_SECONDS})
        handoffs = ctx[HANDOFF_CTX_KEY] = HandoffListener(probe_client(waits), engine, config.queue_name,
                                                          HANDOFF_WAIT_SECONDS)  # fmt: skip
        engine.on_stop = handoffs.leave_at_stop
        handoffs.start()
    if config.servicebus_enabled:
        from worker.bridge.service import ServiceBusBridge  # the SDK loads only where it is used

        bridge = ctx[BRIDGE_CTX_KEY] = await ServiceBusBridge.start(config, registry, engine.metrics)
        listener.on_outbox = bridge.replies.wake
    where = public_url(config.redis_url) + (
        " (a Redis Cluster)" if config.redis_cluster else ""
    )  # said at start, so a worker on the wrong Redis is not silent
    logger.info(
        "relay worker ready: %d tasks on queue %s (serving %s), using Redis at %s, on %s",
        len(registry),
        config.queue_name,
        config.queues,
        where,
        type(asyncio.get_running_loop()).__module__.split(".")[0],  # uvloop, or asyncio where a test runs it
    )


async def on_shutdown(ctx: dict[str, Any]) -> None:
    """Stop the bridge, the wake-up subscription, then the engine (arq closes its pool after this)."""
    bridge = ctx.get(BRIDGE_CTX_KEY)
    if bridge is not None:
        await bridge.stop()
    listener: WakeupListener | None = ctx.get(WAKEUP_CTX_KEY)
    if listener is not None:
        await listener.close()
    handoffs: HandoffListener | None = ctx.get(HANDOFF_CTX_KEY)
    if handoffs is not None:
        await handoffs.stop()
    engine: Engine | None = ctx.get(patch.ENGINE_CTX_KEY)
    if engine is not None:
        await engine.stop()
    watchdog: StallWatchdog | None = ctx.get(STALLS_CTX_KEY)
    if watchdog is not None:
        watchdog.stop()
    await observe.stop(ctx)
