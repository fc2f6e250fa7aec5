"""A small HTTP/1.1 keep-alive load generator, used by ``bench.http_submit`` when ``wrk`` is missing.

Raw asyncio streams (no HTTP library) keep the client's cost per request low; it is still Python on
the same two cores as the server, so wrk (``apt-get install -y wrk``) is preferred when present.
Bounded in time (``seconds``) and in requests (``max_requests``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bench.common import percentile


@dataclass
class LoadResult:
    """What every connection saw, added up."""

    requests: int = 0
    non_2xx: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_us: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """The same keys as the wrk script's JSON line."""
        lat = self.latencies_us or [0.0]
        return {
            "requests": self.requests,
            "duration_us": self.seconds * 1e6,
            "status_errors": self.non_2xx,
            "connect_errors": self.errors,
            "read_errors": 0,
            "write_errors": 0,
            "timeouts": 0,
            "p50_us": percentile(lat, 50),
            "p99_us": percentile(lat, 99),
            "max_us": max(lat),
        }


def post_request(host: str, port: int, path: str, body: bytes) -> bytes:
    """One keep-alive POST, encoded once and reused for every request."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(
    host: str, port: int, request: bytes, deadline: float, budget: list[int], out: LoadResult
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            start = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            out.latencies_us.append((time.perf_counter() - start) * 1e6)
            out.requests += 1
            out.non_2xx += status_line[9:10] != b"2"
    except (OSError, asyncio.IncompleteReadError):
        out.errors += 1
    finally:
        writer.close()


async def run_load(
    host: str, port: int, path: str, body: bytes, connections: int, seconds: float, max_requests: int
) -> dict[str, float]:
    """``connections`` keep-alive connections POSTing back to back for ``seconds`` (or ``max_requests``)."""
    out = LoadResult()
    request = post_request(host, port, path, body)
    budget = [max_requests]
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(_connection(host, port, request, deadline, budget, out) for _ in range(connections)))
    out.seconds = time.perf_counter() - start
    return out.summary()
