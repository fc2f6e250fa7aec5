"""What the failover tests share (Sentinel's, ``tests/e2e/test_sentinel_failover.py``, and a Redis Cluster's,
``tests/e2e/test_cluster_failover.py``): an SSE client that follows a task through outages, and the reckoning of
every accepted task afterwards."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.harness.client import read_events, sse_messages, submit_ok, types
from bench.harness.processes import ManagedProcess
from bench.harness.redis_servers import Server
from tests.support.load import SubmitLoad

FINAL = {"succeeded", "failed", "aborted"}
STREAMED_EVENTS = 60  # partial results per streamed task, one every 0.1 s: they outlive the failover


@dataclass(eq=False)  # threads must stay hashable
class Follower(threading.Thread):
    """An SSE client that follows one task to its ``end``, switching API and resuming from Last-Event-ID
    whenever its stream is cut, refused or told to reconnect."""

    bases: list[str]
    task_id: str
    seqs: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    partials: list[int] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first_seq, last_seq) of each gap event
    resumes: int = 0
    ended: bool = False

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, daemon=True)

    def run(self) -> None:
        deadline = time.monotonic() + 120
        turn = 0
        while not self.ended and time.monotonic() < deadline:
            headers = {"Accept": "text/event-stream"}
            if self.seqs:
                headers["Last-Event-ID"] = str(self.seqs[-1])
            url = f"{self.bases[turn % len(self.bases)]}/tasks/{self.task_id}/events"
            try:
                with httpx.stream("GET", url, headers=headers, timeout=10) as response:
                    if response.status_code == 200:
                        self._read(response)
            except httpx.HTTPError:
                pass
            if not self.ended:
                self.resumes += 1
                turn += 1
                time.sleep(0.2)  # a client's back-off before it reconnects

    def _read(self, response: httpx.Response) -> None:
        for message in sse_messages(response):
            if message.get("event") == "reconnect":
                return
            if "id" not in message:
                continue
            self.seqs.append(int(message["id"]))
            event = json.loads(message["data"])
            self.kinds.append(event["type"])
            if event["type"] == "partial":
                self.partials.append(event["data"]["i"])
            if event["type"] == "gap":
                self.gaps.append((event["data"]["first_seq"], event["data"]["last_seq"]))
            if event["type"] == "end":
                self.ended = True
                return

    @property
    def gapless(self) -> bool:
        """Every number from 1 to the end arrived, once, in order."""
        return self.ended and self.seqs == list(range(1, len(self.seqs) + 1)) and not self.gaps

    @property
    def honest(self) -> bool:
        """Ended, numbers strictly increasing, and every number that never arrived announced by a ``gap``
        event: a client can always tell what it missed."""
        increasing = all(a < b for a, b in zip(self.seqs, self.seqs[1:], strict=False))
        covered = set(self.seqs).union(*(range(first, last + 1) for first, last in self.gaps))
        return self.ended and increasing and covered == set(range(1, self.seqs[-1] + 1))

    @property
    def complete(self) -> bool:
        """Every partial result arrived once, in order (nothing lost with the old primary, no re-run)."""
        return self.partials == list(range(1, STREAMED_EVENTS + 1))

    @property
    def missed(self) -> int:
        """Partial results that never arrived: published to the old primary, never replicated."""
        return STREAMED_EVENTS - len(set(self.partials))


def settle(bases: list[str], task_ids: list[str], timeout: float = 90) -> tuple[dict[str, str], list[str]]:
    """Final state of every task; those Redis no longer knows at all (404) are lost."""
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    pending = list(task_ids)
    last: dict[str, object] = {}
    with httpx.Client(timeout=10) as http:
        while pending and time.monotonic() < deadline:
            still = []
            for task_id in pending:
                response = http.get(f"{bases[0]}/tasks/{task_id}")
                if response.status_code == 404:
                    states[task_id] = "lost"
                elif response.status_code == 200 and response.json()["state"] in FINAL:
                    states[task_id] = response.json()["state"]
                else:
                    last[task_id] = response.json()
                    still.append(task_id)
            pending = still
            if pending:
                time.sleep(0.2)
    assert pending == [], f"{len(pending)} tasks never finished: {[last[t] for t in pending]}"
    return states, [t for t, s in states.items() if s == "lost"]


def ran_any(worker: ManagedProcess, task_ids: list[str]) -> bool:
    output = worker.output()
    return any(f"task {task_id} " in output for task_id in task_ids)  # its "task <id> <name> try=..." line


def outcome(
    loads: list[SubmitLoad], accepted: list[str], lost: list[str], followers: list[Follower], workers: list[Any]
) -> dict[str, Any]:
    """What every failover test reports of its load, its streams and its workers (each adds its own figures)."""
    return {
        "statuses": {str(k): v for k, v in sum((load.statuses for load in loads), Counter()).items()},
        "codes_503": dict(sum((load.codes for load in loads), Counter())),
        "accepted": len(accepted),
        "accepted_lost": len(lost),
        "streams_gapless": sum(f.gapless for f in followers),
        "streams_with_a_gap_announced": sum(bool(f.gaps) for f in followers),
        "streams_with_every_event": sum(f.complete for f in followers),
        "events_missed_per_stream": [f.missed for f in followers],
        "stream_reconnect_attempts": [f.resumes for f in followers],
        "workers_restarted": sum(w.proc.poll() is not None for w in workers),
    }


def failed_errors(base: str, states: dict[str, str]) -> dict[str, Any]:
    """The error of every task that ended failed (none should: a failover is not the task's fault)."""
    return {t: httpx.get(f"{base}/tasks/{t}", timeout=10).json()["error"] for t, s in states.items() if s == "failed"}


def assert_the_load_rode_it_out(loads: list[SubmitLoad]) -> None:
    """No 500, no other status, no hung request: a submit was accepted (202) or told to retry, and when (503)."""
    for load in loads:
        assert load.errors == []
        assert set(load.statuses) <= {202, 503}
        assert load.without_retry_after == 0


def assert_every_stream_honest_and_each_task_ran_once(
    base: str, followers: list[Follower], streamed: list[str]
) -> None:
    """Every stream ended, its numbers only grew, and any it never got were announced by a gap event (events the
    old primary took with it); each streamed task ran once, on the worker that started it."""
    assert [f.honest for f in followers] == [True] * len(followers), [(f.seqs, f.gaps) for f in followers]
    for task_id in streamed:
        kinds = types(read_events(base, task_id))
        summary = [k for i, k in enumerate(kinds) if k != "partial" or kinds[i - 1] != "partial"]
        assert (kinds.count("started"), kinds.count("requeued"), kinds[-2:]) == (1, 0, ["result", "end"]), summary


def subscribers(server: Server) -> int:
    """Connections of ``server`` subscribed to at least one channel (sharded: ``ssub``, as Relay's on a cluster)."""
    with server.client() as client:
        return sum(int(c.get("sub", 0)) + int(c.get("ssub", 0)) > 0 for c in client.client_list())


def follow_and_load(bases: list[str], resubmit: bool = False) -> tuple[list[str], list[Follower], list[SubmitLoad]]:
    """Four streamed ``count`` tasks, each followed through both APIs in turn, and a steady submit load on every
    API (a 503 resubmitted with the same id when ``resubmit``): what the failover and reshard tests run through
    the fault. The followers are started and the loads entered; the caller ends both."""
    streamed = [
        submit_ok(bases[i % 2], {"task": "count", "kwargs": {"n": STREAMED_EVENTS, "interval": 0.1}}) for i in range(4)
    ]
    followers = [Follower([bases[i % 2], bases[(i + 1) % 2]], task_id) for i, task_id in enumerate(streamed)]
    for follower in followers:
        follower.start()
    body = {"task": "sleep", "kwargs": {"seconds": 0.1, "steps": 2}}
    loads = [SubmitLoad(base, body, interval=0.03, resubmit=resubmit) for base in bases]
    for load in loads:
        load.__enter__()
    return streamed, followers, loads
