"""CPU time per submit in the API's own code: the ``POST /tasks`` handler and the enqueue, without HTTP.

Usage: .venv/bin/python -m bench.submit_cpu [--submits 20000] [--rounds 3] [--tree DIR]

Fifty coroutines call the route's handler with a minimal request (``echo``, auth off) as fast as they can, against
a private redis-server (no worker: the queue grows), and the process's CPU time is divided by the submits. Sanic's
own work (parsing HTTP, writing the response) is left out: ``bench.http_submit`` measures everything, this measures
what Relay adds. CPU time, not wall time, so other processes on the machine move it much less than a throughput.
``--tree DIR`` also measures another checkout (``git worktree add /tmp/base <rev>``) in a child process that
imports that checkout's ``api`` and ``shared``, alternating with this tree's, on the same Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

from bench.common import bench_scope, table

BODY = b'{"task":"echo","kwargs":{"message":"hello"}}'
WORKERS = 50


def child(redis_url: str, submits: int) -> float:
    """In this process (whichever checkout it imports): CPU microseconds per submit, after a warm-up."""
    import uvloop

    from api.access import ANONYMOUS_CALLER
    from api.resources import Resources
    from api.routes import tasks
    from bench.harness.processes import DEMO_TASK_MODULES, offer_tasks
    from shared.settings import Settings

    queue = f"bench:cpu:{uuid.uuid4().hex[:8]}"
    offer_tasks(redis_url, queue, DEMO_TASK_MODULES)
    settings = Settings(redis_url=redis_url, queue_name=queue, max_queue_depth=100_000_000)  # type: ignore[call-arg]

    async def main() -> float:
        res = await Resources.open(settings)
        await res.connected.wait()
        app = SimpleNamespace(ctx=SimpleNamespace(res=res))

        def request() -> SimpleNamespace:
            ctx = SimpleNamespace(caller=ANONYMOUS_CALLER, key_name="anonymous", span=None)
            return SimpleNamespace(body=BODY, headers={}, ctx=ctx, app=app)

        left = [submits // 4]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                response = await tasks.submit(request())
                if response is None or response.status != 202:
                    raise RuntimeError(f"a submit was not accepted: {response and response.body!r}")

        await asyncio.gather(*(worker() for _ in range(WORKERS)))  # warm-up: a quarter of the run
        left[0] = submits
        started = time.process_time()
        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        used = time.process_time() - started
        await res.close()
        return used / submits * 1e6

    return uvloop.run(main())


def measure(redis_url: str, submits: int, tree: Path | None) -> float:
    """One measurement in a fresh process: this tree's code, or ``tree``'s."""
    # Its api/, shared/ and bench/ first (this file is run by its path, and imports the checkout's bench.common).
    env = dict(os.environ) | {"PYTHONPATH": str((tree or Path(__file__).resolve().parents[1]).resolve())}
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", redis_url, "--submits", str(submits)]
    out = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{out.stderr[-4000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def label(tree: Path | None) -> str:
    if tree is None:
        return "this tree"
    rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return rev.stdout.strip() or str(tree)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submits", type=int, default=20_000, help="timed submits per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each checkout, alternating")
    parser.add_argument("--tree", type=Path, action="append", default=[], help="also measure this checkout")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the measuring process: a Redis URL
    args = parser.parse_args(argv)
    if args.child:
        print(f"{child(args.child, args.submits):.2f}", flush=True)
        return ""
    trees: list[Path | None] = [None, *args.tree]
    runs: dict[str, list[float]] = {label(t): [] for t in trees}
    with bench_scope() as bench:
        server = bench.redis()
        for round_ in range(args.rounds):
            for tree in trees if round_ % 2 == 0 else trees[::-1]:
                runs[label(tree)].append(measure(server.url, args.submits, tree))
    rows = [[name, f"{statistics.median(us):.1f}", ", ".join(f"{u:.1f}" for u in us)] for name, us in runs.items()]
    output = table(["code", "median CPU us per submit", "rounds"], rows)
    print(output, flush=True)
    return output


if __name__ == "__main__":
    main()
