"""What tenants cost a read: ``GET /tasks/{id}`` and ``GET /tasks`` with auth off, as a tenant and as an admin.

Usage: .venv/bin/python -m bench.tenant_reads [--tasks 2000] [--requests 300]

One private redis-server and one API with three keys (tenants ``a`` and ``b``, admin ``ops``); ``--tasks``
deferred tasks are submitted, half by each tenant. Then ``--requests`` sequential reads of each kind, and the
Redis commands each read cost (``INFO commandstats``: calls, over the requests), p50/p99 latency at the client.
The "auth off" rows use a second API on the same Redis and queue with no keys (it sees every task, as an admin).
The load generator shares the box's cores with the server and Redis: compare rows, not boxes.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import httpx
import redis

from bench.common import Bench, bench_scope, percentile, start_api_factory, table
from bench.harness.processes import relay_env

KEYS = "a:bench-key-a,b:bench-key-b,ops:bench-key-ops:admin"


def commands(client: redis.Redis) -> int:
    """Commands Redis has run so far (scripts' inner calls included)."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def measure(client: redis.Redis, http: httpx.Client, urls: list[str], headers: dict[str, str]) -> tuple[float, ...]:
    """(p50 ms, p99 ms, Redis commands per request) of GETs of ``urls``, one at a time."""
    took: list[float] = []
    before = commands(client)
    for url in urls:
        start = time.perf_counter()
        response = http.get(url, headers=headers)
        took.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.text
    per_request = (commands(client) - before - 1) / len(urls)  # the INFO call itself counts once
    return percentile(took, 50), percentile(took, 99), per_request


def run(bench: Bench, tasks: int, requests: int) -> list[list[object]]:
    server = bench.redis()
    queue = f"relay:bench:{uuid.uuid4().hex[:8]}"
    _, keyed = start_api_factory(bench, relay_env(server.url, RELAY_QUEUE_NAME=queue, RELAY_API_KEYS=KEYS))
    _, open_api = start_api_factory(bench, relay_env(server.url, RELAY_QUEUE_NAME=queue))
    who = {"a": {"X-API-Key": "bench-key-a"}, "b": {"X-API-Key": "bench-key-b"}, "ops": {"X-API-Key": "bench-key-ops"}}
    ids: dict[str, list[str]] = {"a": [], "b": []}
    with httpx.Client(timeout=30) as http:
        for i in range(tasks):
            tenant = "a" if i % 2 == 0 else "b"
            body = {"task": "echo", "delay_seconds": 3600}
            ids[tenant].append(http.post(f"{keyed}/tasks", json=body, headers=who[tenant]).json()["id"])
        client = redis.Redis.from_url(server.url)
        picks = [ids["a"][i % len(ids["a"])] for i in range(requests)]
        rows: list[list[object]] = []
        cases = [
            ("auth off", open_api, {}, lambda t: f"a~{t}"),  # with auth off every id is read as stored
            ("tenant a", keyed, who["a"], lambda t: t),
            ("admin", keyed, who["ops"], lambda t: f"a~{t}"),
        ]
        for label, base, headers, path_id in cases:
            rows.append(
                [
                    f"GET /tasks/{{id}} ({label})",
                    *measure(client, http, [f"{base}/tasks/{path_id(t)}" for t in picks], headers),
                ]
            )
        for label, base, headers, _ in cases:
            rows.append(
                [
                    f"GET /tasks?limit=50 ({label})",
                    *measure(client, http, [f"{base}/tasks?limit=50"] * requests, headers),
                ]
            )
        client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with bench_scope() as bench:
        rows = run(bench, args.tasks, args.requests)
    formatted = [[r[0], f"{r[1]:.2f}", f"{r[2]:.2f}", f"{r[3]:.1f}"] for r in rows]
    print(table(["read", "p50 ms", "p99 ms", "Redis commands / request"], formatted))
    print(json.dumps({"tasks": args.tasks, "requests": args.requests}))


if __name__ == "__main__":
    main()
