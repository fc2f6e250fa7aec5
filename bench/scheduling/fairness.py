"""Part 4: tenant B's few tasks behind tenant A's big backlog, one worker.

Tenant A's ``pause`` jobs are preloaded under A's namespace (``shared.enqueue.prepare`` with ``tenant="a"``: the
records and lanes a POST with A's key makes) while the worker is stopped; the worker resumes, and once it drains
A's backlog tenant B POSTs its jobs one at a time with its own key. Measured from the jobs' own start and end
times: the time from B's last submit (the moment its POST was sent) until B's last job ended (target at most 2 s),
and how many of A's jobs started in that time. With FIFO across tenants, B's jobs would have waited for A's whole
backlog.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.common import table
from bench.scheduling.stage import Conditions, Job, preload, stage
from shared import tenancy

KEYS = "a:key-a,b:key-b"
SETTLE_SECONDS = 0.5  # after the resume, before B's first submit: the drain is in its stride


@dataclass(frozen=True)
class Options:
    backlog: int = 10_000
    submits: int = 10
    task_ms: float = 10.0


@dataclass
class Result:
    options: Options
    a_runs: list[dict[str, Any]]
    b_runs: list[dict[str, Any]]
    b_sent: list[float]  # when each of B's POSTs was sent (wall clock)
    a_waiting: int  # A's jobs waiting when B first submitted
    conditions: Conditions = field(default_factory=Conditions)

    def render(self) -> str:
        o = self.options
        last_sent, b_done = self.b_sent[-1], max(r["ended"] for r in self.b_runs)
        first_sent = self.b_sent[0]
        a_meanwhile = sum(1 for r in self.a_runs if last_sent <= r["started"] <= b_done)
        a_since_first = sum(1 for r in self.a_runs if first_sent <= r["started"] <= b_done)
        waits = [(r["started"] - sent) * 1000 for r, sent in zip(self.b_runs, self.b_sent, strict=True)]
        fifo = self.a_waiting * o.task_ms / 1000 / 10
        rows = [
            ["B's last submit -> B's last job ended", f"{(b_done - last_sent) * 1000:.0f} ms", "<= 2 s",
             "met" if b_done - last_sent <= 2 else "missed"],
            ["A's jobs started meanwhile", f"{a_meanwhile}", "", ""],
            ["B's first submit -> B's last job ended", f"{(b_done - first_sent) * 1000:.0f} ms", "", ""],
            ["A's jobs started meanwhile", f"{a_since_first}", "", ""],
            ["each B job, its submit -> its start: median / max", f"{sorted(waits)[len(waits) // 2]:.0f} /"
             f" {max(waits):.0f} ms", "", ""],
        ]  # fmt: skip
        return "\n".join([
            "### 4. Fairness: tenant B's tasks behind tenant A's backlog",
            "",
            table(["measure", "value", "target", "verdict"], rows),
            "",
            f"One worker (RELAY_WORKER_CONCURRENCY 10, the default, no RELAY_TENANT_WEIGHTS), an API process with"
            f" keys for tenants a and b; A's {o.backlog:,} `pause` jobs of {o.task_ms:g} ms preloaded under A's"
            f" namespace, {self.a_waiting:,} of them still waiting when B POSTed its {o.submits} (`pause`,"
            f" {o.task_ms:g} ms) one after another. Behind A's backlog in FIFO order, B would have waited about"
            f" {fifo:.0f} s.",
            self.conditions.line(),
        ])  # fmt: skip


def run(options: Options) -> Result:
    conditions = Conditions()
    job = Job("pause", {"seconds": options.task_ms / 1000})
    with stage(RELAY_API_KEYS=KEYS) as stage_:
        api = stage_.start_api()
        [worker] = stage_.start_workers(1)
        worker.pause()
        a_ids = preload(stage_, [job] * options.backlog, tenant="a")
        worker.resume()
        time.sleep(SETTLE_SECONDS)
        a_waiting = stage_.waiting()
        b_ids, b_sent = [], []
        with httpx.Client(base_url=api, timeout=30, headers={"Authorization": "Bearer key-b"}) as http:
            for _ in range(options.submits):
                b_sent.append(time.time())
                response = http.post("/tasks", json={"task": job.task, "kwargs": job.kwargs})
                response.raise_for_status()
                b_ids.append(tenancy.stored_id("b", response.json()["id"]))
        stage_.wait_ended(b_ids, timeout=120)
        stage_.wait_drained(timeout=3 * options.backlog * options.task_ms / 1000 + 60)
        b_runs, a_runs = stage_.results(b_ids), stage_.results(a_ids)
    return Result(options, a_runs, b_runs, b_sent, a_waiting, conditions.close())
