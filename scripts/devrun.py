"""Run Relay locally: a private Redis, one or more arq workers and the API, supervised as one.

Children run in their own sessions, so Ctrl-C reaches only this supervisor, which then stops them in
the order that loses nothing: the API (drains its streams), the workers (finish or re-queue their
jobs), and Redis last (it flushes its append-only file on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

import httpx
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COLORS = {"redis": "\033[31m", "worker": "\033[33m", "api": "\033[36m", "dev": "\033[35m"}


def say(name: str, line: str) -> None:
    color = COLORS.get(name.split("-")[0], "") if sys.stdout.isatty() else ""
    reset = "\033[0m" if color else ""
    print(f"{color}{name:>9} |{reset} {line}", flush=True)


class Child:
    """A supervised process whose output is prefixed with its name."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.pump = asyncio.create_task(self._pump())

    @classmethod
    async def start(cls, name: str, argv: list[str], env: dict[str, str]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        say("dev", f"started {name} (pid {proc.pid})")
        return cls(name, proc)

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            say(self.name, raw.decode(errors="replace").rstrip())

    async def stop(self, within: float) -> int:
        """SIGTERM and wait; SIGKILL only if it overstays ``within`` seconds."""
        if self.proc.returncode is None:
            say("dev", f"stopping {self.name}")
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), within)
            except TimeoutError:
                say("dev", f"{self.name} overstayed {within:g}s; killing it")
                self.proc.kill()
                await self.proc.wait()
        await self.pump
        return self.proc.returncode or 0


async def wait_for(check, what: str, within: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(Exception):
            if await check():
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {within:g}s")


async def run(args: argparse.Namespace) -> int:
    data_dir = REPO / ".relay-dev"
    data_dir.mkdir(exist_ok=True)
    redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
    env = {**os.environ, "RELAY_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    env.setdefault("RELAY_TASK_MODULES", "worker.tasks.demo")  # the demo tasks, unless you name your own
    server = shutil.which("redis-server")
    if server is None:
        say("dev", "redis-server is not installed: apt-get install redis-server (or brew install redis)")
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: list[Child] = []
    try:
        redis = await Child.start(
            "redis",
            [
                server,
                "--port",
                str(args.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
            env,
        )
        children.append(redis)
        client = Redis.from_url(redis_url)
        await wait_for(client.ping, "Redis")
        await client.aclose()
        for i in range(args.workers):
            children.append(await Child.start(f"worker-{i + 1}", [str(BIN / "arq"), "worker.settings"], env))
        api_argv = [
            str(BIN / "sanic"),
            "api.app:create_app",
            "--factory",
            "--single-process",
            "--no-motd",
            "--host",
            args.host,
            "--port",
            str(args.port),
        ]
        children.append(await Child.start("api", api_argv, env))
        base = f"http://{args.host}:{args.port}"
        async with httpx.AsyncClient() as http:
            await wait_for(lambda: _ready(http, base), "the API")
        say("dev", f"Relay is up: {base}   (Ctrl-C stops everything)")
        say("dev", f"try: curl -N -H 'Accept: application/x-ndjson' -d '{{\"task\":\"count\"}}' {base}/tasks")
        await _until_stop_or_crash(stop, children)
    finally:
        codes = [await child.stop(within=60) for child in reversed(children)]
    say("dev", "stopped cleanly" if not any(codes) else f"stopped; exit codes {codes}")
    return 1 if any(codes) else 0


async def _ready(http: httpx.AsyncClient, base: str) -> bool:
    return (await http.get(f"{base}/health/ready", timeout=1)).status_code == 200


async def _until_stop_or_crash(stop: asyncio.Event, children: list[Child]) -> None:
    waits = [asyncio.create_task(c.proc.wait()) for c in children]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
    for child in children:
        if child.proc.returncode is not None and not stop.is_set():
            say("dev", f"{child.name} exited with code {child.proc.returncode}; stopping the rest")
    for task in [stopper, *waits]:
        task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="API bind address (default 127.0.0.1)")
    parser.add_argument("--redis-port", type=int, default=6380, help="private Redis port (default 6380)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
