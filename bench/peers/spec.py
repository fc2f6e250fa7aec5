"""What the runner needs to know about one system. Standard library only: the peers' virtualenv imports it too."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[2]
EXPECTED_RESULT = {"echo": "hello"}  # what every system's ``echo(message="hello")`` (and ``echo_await``) returns

# The drain's workloads: the task returns at once, or awaits once (``asyncio.sleep(0)``, or the closest thing a
# sync-only system has) first. Each names the task every system's app registers for it.
NO_OP, AWAIT_ONCE = "no-op", "await once"
TASKS = {NO_OP: "echo", AWAIT_ONCE: "echo_await"}

IDLE, ROUND_TRIP, LOAD, DRAIN, CHAIN = "idle", "round_trip", "load", "drain", "chain"
EVERYTHING = frozenset({IDLE, ROUND_TRIP, LOAD, DRAIN})
WORKLOADS = (IDLE, ROUND_TRIP, LOAD, DRAIN, CHAIN)  # what ``--workloads`` picks from (CHAIN: systems with ``chains``)
DEFAULT_WORKLOADS = (IDLE, ROUND_TRIP, LOAD, DRAIN)  # chains add about a fifth to a full run: asked for by name

# The chain workload: N steps of ``step(value) -> value + 1``, the first given 0, so a chain of N returns N. Every
# system's app registers ``step``. ``SINGLES`` is the baseline every system with a chain measures beside it: the
# same N steps as N single submits, each awaited and its result passed into the next by the client.
CHAIN_TASK = "step"
SINGLES = "single submits"  # the variant name of that baseline


def process_env(redis_url: str) -> dict[str, str]:
    """The environment of a peer's (or bare arq's) worker and client process: no RELAY_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return env | {"BENCH_REDIS_URL": redis_url, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class Variant:
    """One way a client waits for a result (``tuned`` polls every 2 ms, ``defaults`` as the library ships)."""

    name: str
    note: str
    short: bool = False  # waits a poll interval of ~0.5 s per request: measured with fewer requests


@dataclass(frozen=True)
class Profile:
    """One worker configuration of a system and what is measured on it."""

    name: str
    worker_env: dict[str, str]
    measures: frozenset[str]
    variants: tuple[Variant, ...] = ()
    load_variant: str | None = None  # the variant whose clients the commands-per-task run uses


@dataclass(frozen=True)
class Ready:
    """When a started worker takes jobs: it printed ``marker``, and/or Redis shows ``clients`` connections
    whose last command is ``command`` (a consumer blocked in BLMOVE/BRPOP, whatever its log level)."""

    marker: str | None = None
    command: str | None = None
    clients: int = 1


@dataclass(frozen=True)
class System:
    """A system under test. ``probe(ref)`` is one Redis command whose reply ``done(reply)`` says the job is
    finished; the runner pipelines it over the preloaded jobs to stop the drain clock."""

    name: str
    label: str
    venv: Literal["relay", "peers"]
    adapter: str  # module with the ``Client`` class, run inside ``bench.peers.client``
    worker_argv: Callable[[Path], list[str]]  # given the venv's bin directory
    worker_env: Callable[[str], dict[str, str]]  # given the Redis URL
    ready: Ready
    probe: Callable[[str], tuple[str, ...]]
    done: Callable[[Any], bool]
    profiles: tuple[Profile, ...]
    note: str = ""
    awaits: str = "`await asyncio.sleep(0)`"  # what its ``echo_await`` task does before returning
    api: bool = False  # Relay: round trips go through a real API process
    chains: tuple[Variant, ...] = ()  # its native chains (a workflow of N steps); empty: it has none
    scaling: bool = False  # drained with 1, 2, 4 worker processes too

    def profile(self, name: str) -> Profile:
        return next(p for p in self.profiles if p.name == name)

    @property
    def main_profile(self) -> Profile:
        """The profile whose drain, round trip and idle numbers go in the summary table."""
        return self.profiles[0]
