"""The peers benchmark's harness, run for real on every system with tiny numbers so it cannot rot.

Relay and bare arq run from Relay's virtualenv; the peers (SAQ, taskiq, streaq, Celery, Dramatiq) from their
own, which the first run installs from the network (``bench.peers.venv``, exact pins, about 20 s). Nothing
here asserts a speed: only that every measurement happened (round trips at random arrival and back to back,
both drains), every job was verified, and every process the harness started is gone afterwards.
"""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest

from bench.peers import relay_adapter, report, runner, venv
from bench.peers.measure import BACK_TO_BACK, RANDOM
from bench.peers.spec import AWAIT_ONCE, CHAIN, NO_OP, SINGLES
from bench.peers.systems import SYSTEMS
from tests.support.heavy import heavy

JOBS, RT_REQUESTS, RT_SHORT_REQUESTS, LOAD_TASKS = 30, 5, 1, 20
PEERS = [name for name, system in SYSTEMS.items() if system.venv == "peers"]


def _tiny(systems: tuple[str, ...], scale_workers: tuple[int, ...] = ()) -> runner.Options:
    return runner.Options(
        systems=systems,
        jobs=JOBS,
        rounds=1,
        rt_requests=RT_REQUESTS,
        rt_short_requests=RT_SHORT_REQUESTS,
        idle_seconds=0.2,
        settle_seconds=0,
        load_tasks=LOAD_TASKS,
        load_clients=3,
        scale_workers=scale_workers,
        wait_quiet=0,
        drain_timeout=30,
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _assert_every_round_trip_measured(results: runner.Results, name: str) -> None:
    """Each client variant at random arrival, and back to back unless it polls slowly at its defaults."""
    expected = set()
    for profile in SYSTEMS[name].profiles:
        for variant in profile.variants:
            n = RT_SHORT_REQUESTS if variant.short else RT_REQUESTS
            arrivals = (RANDOM,) if variant.short else (RANDOM, BACK_TO_BACK)
            expected |= {(name, profile.name, variant.name, arrival, n) for arrival in arrivals}
    measured = {(r.system, r.profile, r.variant, r.arrival, len(r.ms)) for r in results.round_trips if r.system == name}
    assert measured == expected
    assert min(ms for r in results.round_trips for ms in r.ms) > 0


def _assert_clean_report(results: runner.Results) -> str:
    assert not [pid for pid in results.started_pids if _alive(pid)]
    text = report.render(results, "smoke", {})
    assert "NOT VERIFIED" not in text
    assert "## Failures" not in text
    return text


@pytest.mark.timeout(90)
@heavy
def test_relay_and_bare_arq_are_measured_verified_and_cleaned_up() -> None:
    results = runner.run(_tiny(("relay", "arq"), scale_workers=(2,)))

    assert results.failures == []
    drains = {(d.system, d.workers, d.workload): d for d in [*results.drains, *results.scaling]}
    one = {(s, 1, w) for s in ("relay", "arq") for w in (NO_OP, AWAIT_ONCE)}
    assert set(drains) == one | {("relay", 2, NO_OP), ("arq", 2, NO_OP)}
    for drain in drains.values():
        assert (drain.verified, drain.early) == (JOBS, 0), drain
        assert drain.seconds > 0  # (worker CPU is not asserted: 30 jobs can take less than a clock tick of it)
    # Preloaded through Relay's own enqueue script (concurrent submits share one call, as in the API).
    for workload in (NO_OP, AWAIT_ONCE):
        assert 1 <= drains["relay", 1, workload].enqueue_calls["evalsha"] <= JOBS
        assert drains["relay", 1, workload].enqueue_calls["mset"] >= 1
        assert "evalsha" not in drains["arq", 1, workload].enqueue_calls  # ... and bare arq through enqueue_job
    for name in ("relay", "arq"):
        _assert_every_round_trip_measured(results, name)
    idle = {(i.system, i.profile): i for i in results.idles}
    assert idle["arq", "tuned"].calls.get("zrangebyscore", 0) > 0  # an idle arq worker polls its queue
    assert "info" not in idle["relay", "defaults"].calls  # the benchmark's own INFO is not counted
    loads = {ld.system: ld for ld in results.loads}
    assert loads["relay"].calls["xadd"] >= 20  # started, result, end stored for every task (one entry or two)
    # ... and delivered to Relay's client (``run``: its events streamed back on the submit's response) through its
    # API process's inbox: no subscription per task; each task's events published on its own channel, and each
    # commit's on the inbox too (one message for all of the call's tasks: shared/keys.py "Inboxes").
    assert "subscribe" not in loads["relay"].calls
    assert loads["relay"].calls["publish"] > LOAD_TASKS

    text = _assert_clean_report(results)
    assert "| Relay, defaults " in text
    assert "| bare arq, poll 0.01 s " in text
    assert "| round trip at random arrival, p50 " in text  # Relay against the fastest peer
    assert "| drain, jobs that await once " in text


@pytest.fixture(scope="module")
def peers_venv() -> Path:
    return venv.ensure()  # installs on the first run (within the first test's timeout), then only checks the pins


@pytest.mark.timeout(120)
@heavy
@pytest.mark.parametrize("name", PEERS)
def test_each_peer_is_measured_verified_and_cleaned_up(name: str, peers_venv: Path) -> None:
    results = runner.run(_tiny((name,)))

    assert results.failures == []
    drains = {d.workload: d for d in results.drains}
    assert set(drains) == {NO_OP, AWAIT_ONCE}
    for drain in drains.values():
        assert (drain.verified, drain.early) == (JOBS, 0), drain
        assert drain.enqueue_calls, drain
        assert drain.run_calls, drain
    _assert_every_round_trip_measured(results, name)
    assert {i.system for i in results.idles} == {name}
    assert [ld.tasks for ld in results.loads] == [LOAD_TASKS]
    assert results.versions["peers venv"]["python"]

    assert f"| {SYSTEMS[name].label} " in _assert_clean_report(results)


CHAINED = ("relay", "celery-threads", "dramatiq-tuned", "streaq")


@pytest.mark.timeout(180)
@heavy
def test_chains_alone_run_every_native_chain_and_its_single_submits_to_the_right_value(peers_venv: Path) -> None:
    """``--workloads chain``: each system's chains of 3 steps (Relay's canvas and its HTTP POST, Celery's chain,
    Dramatiq's and streaq's pipelines) and the same steps as single submits; a chain that returned anything but
    3 (each step adds 1 to the value before it, from 0) is a failure of its block."""
    options = _tiny(CHAINED)
    results = runner.run(replace(options, workloads=frozenset({CHAIN}), chain_steps=(3,), chains=2, chain_at_once=2))

    assert results.failures == []
    expected = {(name, v.name) for name in CHAINED for v in [*SYSTEMS[name].chains]} | {(n, SINGLES) for n in CHAINED}
    assert {(c.system, c.variant) for c in results.chains} == expected
    assert {("relay", "canvas"), ("relay", "HTTP"), ("celery-threads", "chain")} <= expected
    for c in results.chains:
        assert (c.steps, len(c.ms), c.at_once) == (3, 2, 2), c
        assert min(c.ms) > 0, c
        assert c.at_once_seconds > 0, c
        assert c.per_step >= 1, c  # every step's work reached Redis and was counted
    relay_flow = next(c for c in results.chains if c.system == "relay" and c.variant == "HTTP")
    assert relay_flow.calls["hincrby"] >= 3 * 2  # the workflow's hash counted each step down (docs/workflows.md)
    assert [results.drains, results.round_trips, results.idles, results.loads, results.scaling] == [[]] * 5

    text = _assert_clean_report(results)
    assert "## Chains: N no-op steps as one workflow" in text
    assert "| Celery, threads -c 10 " in text
    assert "| streaq " in text
    assert "### Relay against the fastest peer" in text
    assert "## Summary" not in text  # only the workload asked for


@pytest.mark.parametrize(
    "entry",
    [
        [{"seq": 3, "type": "end", "data": {"state": "succeeded"}}],  # one event per stream entry
        [{"seq": 2, "type": "result", "data": {}}, {"seq": 3, "type": "end", "data": {"state": "succeeded"}}],
    ],
)
def test_relay_end_is_found_in_plain_and_packed_stream_entries(entry: list[dict[str, object]]) -> None:
    packed = "\n".join(json.dumps(event) for event in entry).encode()
    assert relay_adapter.ended([(b"0-3", {b"e": packed})], "succeeded")
    assert not relay_adapter.ended([(b"0-3", {b"e": packed})], "failed")
    assert not relay_adapter.ended([(b"0-2", {b"e": json.dumps(entry[0] | {"type": "started"}).encode()})])
    assert not relay_adapter.ended([])


def test_peers_venv_pins_every_package_exactly_and_redis_py_to_relays() -> None:
    pins = venv.pins()
    assert all("==" in pin for pin in pins), pins
    assert {"streaq", "coredis", "dramatiq"} <= {pin.split("==")[0] for pin in pins}
    assert f"redis[hiredis]=={metadata.version('redis')}" in pins  # one client library for every system
