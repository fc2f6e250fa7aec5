"""The supervision behind scripts/dev: start the children, watch them, stop them in an order that loses nothing.

Start-up gives up at once on Ctrl-C or a child's exit. Stopping says what it waits for every few
seconds; a second Ctrl-C hurries (workers get a second signal, the API is killed), a third kills
everything but Redis, which always gets SIGTERM last so it flushes its append-only file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from devchild import Child, say
from devplace import InstanceDir, next_free_port
from redis.exceptions import AuthenticationError, NoPermissionError

from shared.queuecounts import queue_counts
from shared.redis import close, probe_client, public_url
from shared.scripts import Scripts
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKER_READY = "relay worker ready"  # the line a worker logs once it polls its queue
STARTUP_WITHIN = 60.0
REDIS_WITHIN = 30.0
FIRST_COUNTDOWN_AFTER = 1.0  # a child that stops at once is not worth a countdown line
COUNTDOWN_EVERY = 5.0
API_STOP_MARGIN = 10.0  # past RELAY_API_DRAIN_SECONDS: Sanic's close margin and its wait for requests
WORKER_STOP_MARGIN = 15.0  # past RELAY_WORKER_GRACE_SECONDS: cancelling and re-queueing the jobs
HURRY_WITHIN = 10.0  # after a second Ctrl-C, how long workers get to re-queue their jobs before SIGKILL
REDIS_STOP_WITHIN = 15.0
# What Redis says when it will never let us in as configured: no point waiting REDIS_WITHIN for it.
REDIS_REFUSALS = (AuthenticationError, NoPermissionError)


def metrics_ports(first: int, workers: int) -> list[int]:
    """The metrics port of each worker scripts/dev starts (none when ``RELAY_WORKER_METRICS_PORT`` is 0)."""
    return [first + i for i in range(workers)] if first else []


def guide(
    base: str,
    api_port: int,
    redis_url: str,
    redis_port: int | None,
    others: list[str],
    task_modules: str,
    worker_metrics: list[int] | None = None,
    next_metrics_port: int = 0,
) -> list[str]:
    """What to type next to a running scripts/dev (docs/development.md shows the same, for the defaults).

    ``api_port`` is the port another API may take; ``redis_port`` the private Redis's port, None when
    RELAY_REDIS_URL names the user's own; ``worker_metrics`` the metrics ports of its workers,
    ``next_metrics_port`` the one another worker may take (see ``Runner.spare_ports``)."""
    shown_url = public_url(redis_url)
    env = f"RELAY_REDIS_URL={shlex.quote(shown_url)} RELAY_TASK_MODULES={shlex.quote(task_modules)}"
    worker_env = f"{env} RELAY_WORKER_METRICS_PORT={next_metrics_port}"  # the next free one, or 0 (none)
    api = f"{shown(BIN / 'sanic')} api.app:create_app --factory --single-process --port {api_port}"
    lines = [
        f"dashboard:       {base}/dashboard/",
        f"try:             curl -N -H 'Accept: application/x-ndjson' -d '{{\"task\":\"count\"}}' {base}/tasks",
    ]
    if worker_metrics:
        lines.append(f"worker metrics:  {'  '.join(f'http://127.0.0.1:{p}/metrics' for p in worker_metrics)}")
    lines += [
        f"another worker:  {worker_env} {shown(BIN / 'arq')} worker.settings",
        f"another API:     {env} {api}",
    ]
    if shown_url != redis_url:
        lines.append("                 (with your Redis password in place of ***)")
    if others:
        lines.append(f"                 (and the other RELAY_* variables you set here: {', '.join(others)})")
    if redis_port is not None:
        lines.append(f"clear the queue: stop, then scripts/dev --reset (or now: redis-cli -p {redis_port} FLUSHDB)")
    lines.append("added a task?   stop and start again: workers import task modules only when they start")
    return lines


def stop_times(settings: Settings) -> str:
    """What Ctrl-C waits for, and the variables that set it (scripts/dev's own defaults are shorter)."""
    deployed = Settings.model_fields
    drain, grace = settings.api_drain_seconds, settings.worker_grace_seconds
    return (
        f"on Ctrl-C:      open streams get {drain:g} s to end, running tasks {grace:g} s, then are re-queued "
        f"(RELAY_API_DRAIN_SECONDS, RELAY_WORKER_GRACE_SECONDS; deployed: {deployed['api_drain_seconds'].default:g} "
        f"s and {deployed['worker_grace_seconds'].default:g} s)"
    )


class Runner:
    """Starts the children, watches them, and stops them; ``stop`` and ``hurry`` are the two Ctrl-Cs."""

    def __init__(self, args: argparse.Namespace, settings: Settings, place: InstanceDir, private: bool) -> None:
        self.args = args
        self.settings = settings
        self.place = place
        self.private = private
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.redis: Child | None = None
        self.workers: list[Child] = []
        self.api: Child | None = None
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()
        self.stopping: set[Child] = set()  # children we signalled: their exit is not a crash
        self.overstayed: list[str] = []
        self.failure: str | None = None

    @property
    def children(self) -> list[Child]:
        return [c for c in (self.redis, *self.workers, self.api) if c is not None]

    @property
    def base(self) -> str:
        return f"http://{self.args.host}:{self.args.port}"

    @property
    def metrics_ports(self) -> list[int]:
        return metrics_ports(self.settings.worker_metrics_port, self.args.workers)

    def on_signal(self) -> None:
        if not self.stop.is_set():
            self.stop.set()
            say("dev", "stopping (Ctrl-C again to stop at once: running jobs are re-queued, never lost)")
        elif not self.hurry.is_set():
            self.hurry.set()
            say("dev", "stopping at once (Ctrl-C a third time kills the workers and the API)")
        else:
            say("dev", "killing the workers and the API; Redis still stops cleanly")
            for child in [*self.workers, self.api]:
                if child is not None:
                    child.kill()

    async def _spawn(self, name: str, argv: list[str], ready_marker: str | None = None) -> Child:
        return await Child.start(name, argv, self.env, REPO, self.place.logs, ready_marker)

    # -- start-up ------------------------------------------------------------------------------

    async def start(self) -> bool:
        """Everything up (True), or stopped by Ctrl-C, a child's exit or a timeout (False)."""
        url = self.settings.redis_url
        if self.private:
            server = shutil.which("redis-server")
            if server is None:
                self.failure = "redis-server is not installed: apt-get install redis-server (or brew install redis)"
                return False
            self.redis = await self._spawn("redis", self._redis_argv(server))
        else:
            say("dev", f"using your Redis at {public_url(url)} (RELAY_REDIS_URL); not starting one")
        reachable = _poll(lambda: _pings(self.settings), fatal=REDIS_REFUSALS)
        if not await self._starting(reachable, f"Redis at {public_url(url)}", REDIS_WITHIN):
            return False
        ports = self.metrics_ports
        for i in range(self.args.workers):
            argv = [str(BIN / "arq"), "worker.settings"]
            env = {**self.env, "RELAY_WORKER_METRICS_PORT": str(ports[i] if ports else 0)}  # one port each
            worker = await Child.start(f"worker-{i + 1}", argv, env, REPO, self.place.logs, WORKER_READY)
            self.workers.append(worker)
        self.api = await self._spawn("api", self._api_argv())
        everything = _all([*(w.ready.wait() for w in self.workers), _poll(lambda: _ready(self.base))])
        if not await self._starting(everything, "the workers and the API", STARTUP_WITHIN):
            return False
        for child in self.children:
            child.folding = False
        return True

    def _redis_argv(self, server: str) -> list[str]:
        port = str(self.args.redis_port)
        data = str(self.place.path)
        return [server, "--port", port, "--bind", "127.0.0.1", "--dir", data, "--appendonly", "yes", "--save", ""]

    def _api_argv(self) -> list[str]:
        return [
            str(BIN / "sanic"),
            "api.app:create_app",
            "--factory",
            "--single-process",
            "--no-motd",
            "--host",
            self.args.host,
            "--port",
            str(self.args.port),
        ]

    async def _starting(self, step: Awaitable[Any], what: str, within: float) -> bool:
        """Wait for ``step``, but give up at once on Ctrl-C or when any child exits (no 30 s hang)."""
        job = asyncio.ensure_future(step)
        watchers = [asyncio.create_task(self.stop.wait()), *(asyncio.create_task(c.proc.wait()) for c in self.children)]
        try:
            await asyncio.wait([job, *watchers], timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [job, *watchers]:
                task.cancel()
        if self.stop.is_set() or self._crashed() is not None:
            return False
        if job.done() and not job.cancelled() and job.exception() is None:
            return True
        if job.done() and not job.cancelled():
            self.failure = f"{what} refused the connection: {' '.join(str(job.exception()).split())}"
            return False
        self.failure = f"{what} did not come up within {within:g} s (full logs: {shown(self.place.logs)})"
        return False

    def _crashed(self) -> Child | None:
        return next((c for c in self.children if not c.running and c not in self.stopping), None)

    def announce(self) -> None:
        say("dev", f"Relay is up: {self.base}   (Ctrl-C stops everything)")
        say("dev", stop_times(self.settings))
        shown_in_commands = {"RELAY_REDIS_URL", "RELAY_TASK_MODULES", "RELAY_WORKER_METRICS_PORT"}
        others = [k for k in self.args.variables if k.upper() not in shown_in_commands]
        redis_port = self.args.redis_port if self.private else None
        modules = self.settings.task_modules
        api_port, metrics_port = self.spare_ports()
        url, ports = self.settings.redis_url, self.metrics_ports
        lines = guide(self.base, api_port, url, redis_port, others, modules, ports, metrics_port)
        for line in lines:
            say("dev", line)

    def spare_ports(self) -> tuple[int, int]:
        """The ports the guide's commands give another API and another worker's metrics (0: none): the next ones
        that are free and none of this instance's (``port + 1`` was once the dev Redis's own port)."""
        first = self.settings.worker_metrics_port
        own = {self.args.port, *self.metrics_ports, *([self.args.redis_port] if self.private else [])}
        host = self.settings.worker_metrics_host
        metrics = next_free_port(host, first + self.args.workers, own) if first else 0
        api = next_free_port(self.args.host, self.args.port + 1, own | {metrics})
        return api, metrics

    async def supervise(self) -> None:
        """Until Ctrl-C or a child's exit."""
        watchers = [asyncio.create_task(self.stop.wait()), *(asyncio.create_task(c.proc.wait()) for c in self.children)]
        try:
            await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in watchers:
                task.cancel()

    # -- shutdown ------------------------------------------------------------------------------

    async def shutdown(self) -> int:
        """Stop whatever runs, API first and Redis last; the exit code says whether anything went wrong."""
        crashed = self._crashed()
        if crashed is not None:
            say("dev", f"{crashed.name} exited with code {crashed.proc.returncode}; stopping the rest")
        if self.api is not None:
            drain = self.settings.api_drain_seconds
            await self._stop_group([self.api], drain + API_STOP_MARGIN, self._api_waiting, self._hurry_api)
        if self.workers:
            grace = self.settings.worker_grace_seconds
            await self._stop_group(self.workers, grace + WORKER_STOP_MARGIN, self._workers_waiting, self._hurry_workers)
        await self._report_queue()
        if self.redis is not None:
            await self._stop_group([self.redis], REDIS_STOP_WITHIN, None, None)
        codes = {c.name: await c.finished() for c in self.children}
        return self._conclude(crashed, codes)

    async def _stop_group(
        self,
        group: list[Child],
        within: float,
        waiting: Callable[[float, float], Awaitable[str]] | None,
        hurry: Callable[[list[Child]], Awaitable[None]] | None,
    ) -> None:
        """SIGTERM the group, then say every few seconds what it waits for; Ctrl-C again calls ``hurry``."""
        loop = asyncio.get_running_loop()
        for child in group:
            if child.running:
                say("dev", f"stopping {child.name}")
                self.stopping.add(child)
                child.send(signal.SIGTERM)
        started = loop.time()
        deadline, hurried, pause = started + within, False, FIRST_COUNTDOWN_AFTER
        while any(c.running for c in group):
            if hurry is not None and self.hurry.is_set() and not hurried:
                hurried = True
                await hurry(group)
                deadline = min(deadline, loop.time() + HURRY_WITHIN)
                continue
            left = deadline - loop.time()
            if left <= 0:
                self._kill_overstayed(group, loop.time() - started, hurried)
                break
            hurry_event = None if hurried or hurry is None else self.hurry
            await _until_exit([c for c in group if c.running], hurry_event, min(pause, left))
            if any(c.running for c in group) and waiting is not None and not hurried and not self.hurry.is_set():
                say("dev", await waiting(loop.time() - started, deadline - loop.time()))
            pause = COUNTDOWN_EVERY
        for child in group:
            await child.finished()

    def _kill_overstayed(self, group: list[Child], waited: float, hurried: bool) -> None:
        names = ", ".join(c.name for c in group if c.running)
        if hurried:
            say("dev", f"{names} did not stop within {HURRY_WITHIN:g} s of the second signal; killing it")
            if any(c in self.workers for c in group):
                say("dev", "its running jobs stay in Redis (not lost) and run again once their worker counts as lost")
        else:
            say("dev", f"{names} did not stop within {waited:.0f} s; killing it")
            self.overstayed.append(names)
        for child in group:
            child.kill()

    async def _api_waiting(self, elapsed: float, left: float) -> str:
        return f"waiting for the API to let its open streams finish: {left:.0f} s left (Ctrl-C again: stop now)"

    async def _workers_waiting(self, elapsed: float, left: float) -> str:
        jobs = await _jobs_in_progress(self.settings)
        running = "jobs in progress: unknown" if jobs is None else f"{jobs} job{'s' * (jobs != 1)} in progress"
        grace_left = self.settings.worker_grace_seconds - elapsed
        if grace_left > 0:
            what = f"they may finish for {grace_left:.0f} s more, then are re-queued"
        else:
            what = f"re-queueing them; {left:.0f} s before the workers are killed"
        return f"waiting for the workers ({running}): {what} (Ctrl-C again: re-queue them now)"

    async def _hurry_api(self, group: list[Child]) -> None:
        say("dev", "killing the API (it holds no jobs; open streams are cut and their clients reconnect)")
        for child in group:
            child.kill()

    async def _hurry_workers(self, group: list[Child]) -> None:
        say("dev", f"second signal to the workers: they re-queue their running jobs now (up to {HURRY_WITHIN:g} s)")
        for child in group:
            child.send(signal.SIGINT)

    async def _report_queue(self) -> None:
        """How many jobs stay queued, and how to clear them: nothing in Redis is lost by stopping."""
        depth = await _queue_depth(self.settings)
        if not depth:
            return
        jobs = f"{depth} job{'s' * (depth != 1)}"
        if self.private:
            say("dev", f"the dev queue keeps {jobs} for the next scripts/dev (scripts/dev --reset starts without them)")
        else:
            say("dev", f"your Redis keeps {jobs} in {self.settings.queue_name}")

    def _conclude(self, crashed: Child | None, codes: dict[str, int | None]) -> int:
        if crashed is not None:
            say("dev", f"stopped because {crashed.name} exited with code {crashed.proc.returncode}:")
            for line in crashed.last_words():
                say("dev", f"    {line}")
            say("dev", f"(its full output: {shown(crashed.log_path)})")
            code = crashed.proc.returncode or 1
            return code if code > 0 else 1
        if self.failure is not None:
            say("dev", f"stopped: {self.failure}")
            return 1
        failed = {name: code for name, code in codes.items() if code not in (0, -signal.SIGKILL)}
        if failed or self.overstayed:
            say("dev", f"stopped; exit codes {codes}")
            return 1
        say("dev", "stopped cleanly")
        return 0


async def _until_exit(children: list[Child], event: asyncio.Event | None, within: float) -> None:
    """Until every child has exited, ``event`` (if any) is set, or ``within`` seconds pass."""
    tasks = [asyncio.create_task(_all_exited(children))]
    if event is not None:
        tasks.append(asyncio.create_task(event.wait()))
    try:
        await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _all_exited(children: list[Child]) -> None:
    for child in children:
        await child.proc.wait()


async def _all(steps: list[Coroutine[Any, Any, Any]]) -> None:
    """Each step in turn (unlike gather, cancelling this leaves no orphaned failure or coroutine behind)."""
    try:
        while steps:
            await steps.pop(0)
    finally:
        for step in steps:
            step.close()


async def _poll(check: Callable[[], Awaitable[bool]], fatal: tuple[type[Exception], ...] = ()) -> None:
    """Until ``check`` is true; a failed check is tried again, unless it raised one of ``fatal``."""
    while True:
        try:
            if await check():
                return
        except fatal:
            raise
        except Exception:  # not up yet
            pass
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    """A client built as Relay's own processes build theirs (RELAY_REDIS_PASSWORD, _USERNAME, TLS, Sentinel),
    trying each command once."""
    client = probe_client(settings)
    try:
        yield client
    finally:
        await close(client)


async def _pings(settings: Settings) -> bool:
    async with _redis(settings) as client:
        return bool(await client.ping())


async def _ready(base: str) -> bool:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{base}/health/ready", timeout=1)).status_code == 200


async def _jobs_in_progress(settings: Settings) -> int | None:
    with contextlib.suppress(Exception):
        async with _redis(settings) as client:
            return sum([1 async for _ in client.scan_iter(match=in_progress_key_prefix + "*", count=1000)])
    return None


async def _queue_depth(settings: Settings) -> int | None:
    with contextlib.suppress(Exception):
        async with _redis(settings) as client:
            return (await queue_counts(Scripts(client), settings.queue_name)).waiting
    return None


def shown(path: Path) -> str:
    """A path as short as it can be said from where the user stands."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)
