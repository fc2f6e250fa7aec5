"""Run Relay locally: a private Redis, one or more arq workers and the API, supervised as one.

Children run in their own sessions, so Ctrl-C reaches only this runner, which stops them in the order
that loses nothing: the API (drains its streams), the workers (finish or re-queue their jobs), and
Redis last (it flushes its append-only file on SIGTERM). A second Ctrl-C hurries: the workers get a
second signal (they cancel their running jobs and re-queue them), the API is killed (it holds no jobs).
A child that exits on its own stops the rest at once, and its own last words are printed last.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from devchild import say
from devplace import InstanceDir, Ports, Refused, check_ports_free

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere: Relay's own modules come from this checkout

from devsupervise import Runner, shown  # noqa: E402

from shared.settings import ConfigError, Settings, environment_warnings, load_settings  # noqa: E402

DEFAULT_REDIS_PORT = 6380
DEMO_TASKS = "worker.tasks.demo"
# Ctrl-C in development should not take the production 10 s + 25 s: an open stream gets 3 s, a running task 5 s
# (then it is re-queued, never lost). Variables you set yourself win.
DEV_STOP_SECONDS = {"RELAY_API_DRAIN_SECONDS": "3", "RELAY_WORKER_GRACE_SECONDS": "5"}


async def run(args: argparse.Namespace, settings: Settings, place: InstanceDir, private: bool) -> int:
    runner = Runner(args, settings, place, private)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.on_signal)
    try:
        if await runner.start():
            runner.announce()
            await runner.supervise()
    finally:
        code = await runner.shutdown()
    return code


def prepare(args: argparse.Namespace) -> tuple[Settings, InstanceDir, bool]:
    """Check everything that can be checked before starting anything; ``Refused``/``ConfigError`` otherwise."""
    private = "RELAY_REDIS_URL" not in os.environ
    if not private and args.redis_port is not None:
        raise Refused(
            "RELAY_REDIS_URL is set, so scripts/dev uses that Redis and starts none: "
            "drop --redis-port, or unset RELAY_REDIS_URL for a private one"
        )
    if not private and args.reset:
        raise Refused(
            "--reset clears only the private dev Redis; RELAY_REDIS_URL is yours: to empty its database, "
            'redis-cli -u "$RELAY_REDIS_URL" FLUSHDB (it deletes everything in it)'
        )
    args.redis_port = args.redis_port or DEFAULT_REDIS_PORT
    # The RELAY_* variables you set (the guide lists them), before this runner sets its own below.
    args.variables = sorted(k for k in os.environ if k.upper().startswith("RELAY_"))
    if private:
        os.environ["RELAY_REDIS_URL"] = f"redis://127.0.0.1:{args.redis_port}/0"
    if args.tasks is not None:
        os.environ["RELAY_TASK_MODULES"] = args.tasks
    os.environ.setdefault("RELAY_TASK_MODULES", DEMO_TASKS)  # the demo tasks, unless you name your own
    if args.metrics_port is not None:
        os.environ["RELAY_WORKER_METRICS_PORT"] = str(args.metrics_port)
    for name, seconds in DEV_STOP_SECONDS.items():
        os.environ.setdefault(name, seconds)
    settings = load_settings()
    for warning in environment_warnings():
        say("dev", f"warning: {warning}")
    check_ports_free(ports(args, settings, private))
    root = Path(args.data_dir).resolve() if args.data_dir else REPO / ".relay-dev"
    place = InstanceDir(root, str(args.redis_port) if private else f"external-{args.port}")
    place.lock()
    if private and args.data_dir is None and args.redis_port == DEFAULT_REDIS_PORT and place.adopt_legacy(root):
        say("dev", f"moved the dev Redis data of an older scripts/dev into {shown(place.path)}")
    if args.reset:
        cleared = place.reset()
        say("dev", "reset: the dev queue, tasks and events are gone" if cleared else "reset: nothing to clear")
    return settings, place, private


def ports(args: argparse.Namespace, settings: Settings, private: bool) -> list[Ports]:
    """Every port this instance would listen on, with the option that moves it."""
    wanted = [Ports("the API", "--port", args.host, args.port)]
    first_metrics = settings.worker_metrics_port  # 0: no metrics server
    if first_metrics and args.workers:
        host = settings.worker_metrics_host
        wanted.append(Ports("worker-{n}'s metrics", "--metrics-port", host, first_metrics, args.workers))
    if private:
        wanted.append(Ports("the dev Redis", "--redis-port", "127.0.0.1", args.redis_port))
    return wanted


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="scripts/dev", description=__doc__.split("\n\n")[0])
    parse.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    parse.add_argument("--host", default="127.0.0.1", help="API bind address (default 127.0.0.1)")
    parse.add_argument(
        "--redis-port",
        type=int,
        default=None,
        help=f"private Redis port (default {DEFAULT_REDIS_PORT}); not started when RELAY_REDIS_URL is set",
    )
    parse.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parse.add_argument(
        "--tasks",
        metavar="MODULES",
        default=None,
        help=f"comma-separated modules that register your tasks, e.g. --tasks myproject.tasks; they must be "
        f"importable by .venv/bin/python (pip install -e your project into it, or set PYTHONPATH). "
        f"Sets RELAY_TASK_MODULES for the workers (default: {DEMO_TASKS}, the demo tasks)",
    )
    parse.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="the first worker's metrics port, the next workers take the next ones; 0: no metrics "
        "(sets RELAY_WORKER_METRICS_PORT; default 9191)",
    )
    parse.add_argument(
        "--data-dir", default=None, help="where instances keep Redis data and logs (default .relay-dev/)"
    )
    parse.add_argument("--reset", action="store_true", help="start with an empty dev Redis: no queued jobs, no tasks")
    return parse


def main() -> None:
    args = parser().parse_args()
    try:
        settings, place, private = prepare(args)
    except ConfigError as exc:
        for line in exc.problems:
            say("dev", line)
        sys.exit(exc.code)
    except Refused as exc:
        say("dev", f"not starting: {exc}")
        sys.exit(1)
    sys.exit(asyncio.run(run(args, settings, place, private)))


if __name__ == "__main__":
    main()
