"""What waking an idle process costs on this host: the floor under every round trip at random arrival.

A round trip measured back to back meets processes that are still running; one that arrives after a pause
(issue #25's headline mode) meets processes asleep in ``epoll_wait``, and each hop then pays for waking one.
This measures single hops, each back to back and after a random 0-20 ms pause, interleaved round by round:

- ``redis PING``: redis-server (C), the cheapest process to wake;
- ``python echo``: a 30-line asyncio TCP echo server, the floor for any Python process;
- ``bare Sanic POST``: ``bench.hello_app`` (Sanic, no Relay, no Redis);
- ``Relay GET /``: the Relay API's ping route (middleware, no Redis);
- ``Relay POST /tasks``: a real submit (validation, the enqueue script), no worker and no stream.

A Relay round trip over HTTP wakes the API (the request), the worker (the wake-up notice), the API again (the
events) and the client; a peer whose client reads Redis directly wakes the worker and the client. The
difference between the two columns of each hop is what the pause costs it.

    .venv/bin/python -m bench.wakeups --requests 400 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
import urllib3

from bench.common import OtherLoad, bench_scope, machine_facts, percentile, table
from bench.harness.processes import BIN, ManagedProcess, free_port, relay_env, start_api, wait_until

ECHO_SERVER = """
import asyncio, sys

async def serve(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""
MAX_PAUSE_S = 0.020
SUBMIT = b'{"task": "echo"}'
JSON = {"Content-Type": "application/json"}
Hop = Callable[[], object]


def timed(hop: Hop, requests: int, paused: bool) -> list[float]:
    """``requests`` calls of ``hop``, in ms; after a random pause of up to 20 ms each if ``paused``."""
    samples = []
    for _ in range(requests):
        if paused:
            time.sleep(random.uniform(0, MAX_PAUSE_S))
        start = time.perf_counter()
        hop()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def echo_hop(port: int) -> tuple[Hop, socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def hop() -> None:
        sock.sendall(b"ping\n")
        sock.recv(64)

    return hop, sock


@dataclass(frozen=True)
class HopResult:
    """One hop's medians over the rounds (ms): back to back, and after a random pause."""

    hop: str
    b2b_p50: float
    b2b_p99: float
    paused_p50: float
    paused_p99: float


def measure(requests: int, rounds: int) -> list[HopResult]:
    """Every hop, ``requests`` calls per mode and round, the modes and hops interleaved round by round."""
    with bench_scope() as bench:
        server = bench.redis()
        env = relay_env(server.url)
        relay_api, relay_base = start_api(bench.log_dir, env)
        bench.own(relay_api)
        bare_api, bare_base = start_api(bench.log_dir, env, factory="bench.hello_app:create_app", offers=False)
        bench.own(bare_api)
        echo_port = free_port()
        argv = [str(BIN / "python"), "-c", ECHO_SERVER, str(echo_port)]
        bench.own(ManagedProcess("echo", argv, env, bench.log_dir))
        wait_until(lambda: _accepts(echo_port), 10, "the echo server")
        client = bench.stack.enter_context(contextlib.closing(redis.Redis.from_url(server.url)))
        relay = bench.stack.enter_context(http_pool(relay_base))
        bare = bench.stack.enter_context(http_pool(bare_base))
        echo_call, echo_sock = echo_hop(echo_port)
        bench.stack.callback(echo_sock.close)
        hops: dict[str, Hop] = {
            "redis PING": client.ping,
            "python echo": echo_call,
            "bare Sanic POST": lambda: bare.request("POST", "/tasks", body=SUBMIT, headers=JSON),
            "Relay GET /": lambda: relay.request("GET", "/"),
            "Relay POST /tasks": lambda: _submitted(relay.request("POST", "/tasks", body=SUBMIT, headers=JSON)),
        }
        for hop in hops.values():
            timed(hop, 50, paused=False)  # warm-up: connections open, code paths run once
        runs: dict[tuple[str, bool], list[list[float]]] = {}
        for round_ in range(rounds):
            for name, hop in hops.items():
                for paused in (False, True):
                    runs.setdefault((name, paused), []).append(timed(hop, requests, paused))
            print(f"round {round_ + 1} done", file=sys.stderr)
    results = []
    for name in hops:
        b2b, paused = runs[(name, False)], runs[(name, True)]
        results.append(HopResult(name, _median(b2b, 50), _median(b2b, 99), _median(paused, 50), _median(paused, 99)))
    return results


def _median(rounds: list[list[float]], pct: float) -> float:
    """The median over the rounds of each round's percentile ``pct``."""
    return statistics.median(percentile(samples, pct) for samples in rounds)


def report(results: list[HopResult], requests: int, rounds: int, other_load: float) -> str:
    facts = machine_facts()
    rows = [
        [r.hop, f"{r.b2b_p50:.3f} / {r.b2b_p99:.3f}", f"{r.paused_p50:.3f} / {r.paused_p99:.3f}",
         f"{r.paused_p50 - r.b2b_p50:+.3f}"]
        for r in results
    ]  # fmt: skip
    headers = ["hop", "back to back p50 / p99 ms", "after a 0-20 ms pause p50 / p99 ms", "the pause costs (p50)"]
    return (
        f"# bench.wakeups: {rounds} rounds x {requests} calls per hop and mode (medians of the rounds)\n"
        f"machine: {facts['nproc']} cores, {facts['cpu']}; other load {other_load:.2f} cores\n\n" + table(headers, rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="calls per hop, mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    other = OtherLoad()
    results = measure(args.requests, args.rounds)
    print(report(results, args.requests, args.rounds, other.cores()))


def http_pool(base_url: str) -> urllib3.HTTPConnectionPool:
    """A keep-alive HTTP client of ``base_url`` on urllib3, the library Relay's blocking client sends with."""
    host, port = base_url.removeprefix("http://").split(":")
    return urllib3.HTTPConnectionPool(host, int(port), maxsize=1, retries=False, timeout=10.0)


def _submitted(response: urllib3.BaseHTTPResponse) -> None:
    if response.status != 202:
        raise RuntimeError(f"submit refused: {response.status} {response.data[:200]!r}")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


if __name__ == "__main__":
    main()
