"""Reading what an API started with ``tests.support.heap_app`` holds: its resident memory (from /proc), the
blocks Python has allocated and its live objects by type (from the app's ``/_test/heap``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness.processes import wait_until
from tests.support.heap_app import HEAP_PATH

HEAP_FACTORY = "tests.support.heap_app:create_app"


def rss_kib(pid: int) -> int:
    """The process's resident set (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


@dataclass(frozen=True)
class Heap:
    """What the API holds: resident memory, Python's allocated blocks and its objects by type."""

    rss_kib: int
    blocks: int
    types: dict[str, int]
    lost_connections: int  # connections whose client has gone, still alive

    @property
    def connections(self) -> int:
        """HTTP connections, open (idle keep-alive ones too) or lost: each has one ``HttpProtocol``."""
        return self.types.get("HttpProtocol", 0)

    @staticmethod
    def change(before: Heap, after: Heap) -> str:
        """The change from ``before`` to ``after``, with the types that grew most, for a test's message."""
        return (
            f"RSS {before.rss_kib} -> {after.rss_kib} KiB, blocks {before.blocks} -> {after.blocks}, "
            f"connections {before.connections} -> {after.connections} ({after.lost_connections} lost, still held); "
            f"most grown: {grown(before, after)[:4]}"
        )


def heap(api_pid: int, base: str) -> Heap:
    body = httpx.get(f"{base}{HEAP_PATH}", timeout=30).json()
    return Heap(rss_kib(api_pid), body["blocks"], body["types"], body["lost_connections"])


def grown(before: Heap, after: Heap) -> list[tuple[int, str]]:
    """The types whose count grew most, most first."""
    return sorted(((n - before.types.get(name, 0), name) for name, n in after.types.items()), reverse=True)[:8]


def settled(api_pid: int, base: str, connections: int | None = None, timeout: float = 10) -> Heap:
    """The heap once the API holds no lost connection (one is let go a loop turn or two after its client's
    close arrives) and, if given, no more than ``connections`` connections (a client may take a moment to
    close its own: Chromium drains an aborted fetch's body for up to 5 s). After ``timeout``, the heap as
    it is (a test then sees what is still held)."""

    def at_rest() -> bool:
        now = heap(api_pid, base)
        return now.lost_connections == 0 and (connections is None or now.connections <= connections)

    with contextlib.suppress(TimeoutError):
        wait_until(at_rest, timeout, "lost connections to be let go")
    return heap(api_pid, base)
