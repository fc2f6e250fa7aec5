"""The client side of ``bench.fanout``: thousands of SSE followers in one process (run by the bench).

Usage (from bench.fanout): python -m bench.sse_clients --port P --ids FILE --per-task 10 --expect 23

A bare ``asyncio.Protocol`` per connection on uvloop, with no HTTP library, so the client costs far
less per event than the server it measures; its CPU time is reported so that can be checked. It
prints ``CONNECTED <n>`` once every stream has its response headers, then one ``RESULT {json}`` line
when every stream has its ``end`` event (or at ``--timeout``), and exits.

Sanic sends each event as one HTTP chunk, so SSE frames are split on the blank line that ends them;
the chunk-size lines in between carry no ``id:`` and are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

CONNECT_BATCH = 100  # Sanic's listen backlog is 100: larger batches get SYNs dropped and retried later


@dataclass
class Totals:
    """Shared by every stream of the process."""

    events: int = 0
    first_event: float = 0.0
    last_event: float = 0.0
    lags_ms: list[float] = field(default_factory=list)
    worst_lag_by_second: dict[int, float] = field(default_factory=dict)

    def record(self, now: float, lag_ms: float) -> None:
        """Keep every lag, and the worst one per second of the run (shows whether a backlog builds)."""
        self.lags_ms.append(lag_ms)
        second = int(now - self.first_event)
        if lag_ms > self.worst_lag_by_second.get(second, 0.0):
            self.worst_lag_by_second[second] = lag_ms


class SseStream(asyncio.Protocol):
    """One ``GET /tasks/{id}/events`` with ``Accept: text/event-stream``, counting what arrives."""

    def __init__(self, request: bytes, expect: int, totals: Totals) -> None:
        self.request = request
        self.expect = expect
        self.totals = totals
        self.headers = asyncio.get_running_loop().create_future()
        self.ended = asyncio.get_running_loop().create_future()
        self.status = 0
        self.last_seq = 0
        self.count = 0
        self.in_order = True
        self._buf = b""
        self._in_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.headers, self.ended):
            if not fut.done():
                fut.set_result(False)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data
        if not self._in_body:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            self.status = int(buf[9:12])
            self._in_body = True
            self.headers.set_result(self.status == 200)
            buf = buf[end + 4 :]
        frames = buf.split(b"\n\n")
        self._buf = frames.pop()
        now = time.time()
        for frame in frames:
            self._frame(frame, now)

    def _frame(self, frame: bytes, now: float) -> None:
        start = frame.find(b"id: ")
        if start < 0:
            return  # a heartbeat comment, or only chunk framing
        seq = int(frame[start + 4 : frame.index(b"\n", start)])
        self.in_order = self.in_order and seq == self.last_seq + 1
        self.last_seq = seq
        self.count += 1
        totals = self.totals
        totals.events += 1
        totals.first_event = totals.first_event or now
        totals.last_event = now
        ts = frame.find(b'"ts":')
        if ts >= 0:
            totals.record(now, (now - float(frame[ts + 5 : frame.index(b",", ts)])) * 1000)
        if b"event: end\n" in frame and not self.ended.done():
            self.ended.set_result(True)
            self.transport.close()

    @property
    def complete(self) -> bool:
        """Every event, in order, exactly once."""
        return self.in_order and self.count == self.expect and self.last_seq == self.expect


async def connect_all(
    port: int, ids: list[str], per_task: int, expect: int, totals: Totals, batch_size: int
) -> list[SseStream]:
    """Open every stream, ``batch_size`` at a time, each batch waiting for its response headers."""
    loop = asyncio.get_running_loop()
    wanted = [task_id for task_id in ids for _ in range(per_task)]
    streams: list[SseStream] = []
    for start in range(0, len(wanted), batch_size):
        batch = []
        for task_id in wanted[start : start + batch_size]:
            request = (
                f"GET /tasks/{task_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
            _, stream = await loop.create_connection(lambda r=request: SseStream(r, expect, totals), "127.0.0.1", port)
            batch.append(stream)
        await asyncio.gather(*(s.headers for s in batch))
        streams.extend(batch)
    return streams


async def run(
    port: int, ids: list[str], per_task: int, expect: int, timeout: float, batch_size: int = CONNECT_BATCH
) -> dict[str, object]:
    """Connect, announce, wait for every ``end`` (bounded by ``timeout``), summarise."""
    totals = Totals()
    began = time.perf_counter()
    streams = await connect_all(port, ids, per_task, expect, totals, batch_size)
    connect_seconds = time.perf_counter() - began
    connected = sum(s.status == 200 for s in streams)
    print(f"CONNECTED {connected}", flush=True)
    done, _ = await asyncio.wait([asyncio.ensure_future(s.ended) for s in streams], timeout=timeout)
    for s in streams:
        s.transport.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "streams": len(streams),
        "connected": connected,
        "connect_seconds": connect_seconds,
        "ended": sum(bool(d.result()) for d in done),
        "complete": sum(s.complete for s in streams),
        "events": totals.events,
        "expected_events": expect * len(streams),
        "first_event": totals.first_event,
        "last_event": totals.last_event,
        "lag_ms": {str(p): _pct(totals.lags_ms, p) for p in (50, 90, 99, 100)},
        "worst_lag_by_second": [round(v) for _, v in sorted(totals.worst_lag_by_second.items())],
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ids", type=Path, required=True, help="JSON list of task ids")
    parser.add_argument("--per-task", type=int, default=10)
    parser.add_argument("--expect", type=int, required=True, help="events per task, end included")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--connect-batch", type=int, default=CONNECT_BATCH, help="streams opened at once")
    args = parser.parse_args()
    ids = json.loads(args.ids.read_text())
    result = uvloop.run(run(args.port, ids, args.per_task, args.expect, args.timeout, args.connect_batch))
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
