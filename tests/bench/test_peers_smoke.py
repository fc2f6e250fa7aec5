"""The peers benchmark's harness, run for real on Relay and bare arq with tiny numbers so it cannot rot.

SAQ, taskiq and Celery are left out: they live in their own virtualenv, installed from the network on the
benchmark's first run. Nothing here asserts a speed: only that every measurement happened, every job was
verified, and every process the harness started is gone afterwards.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from bench.peers import relay_adapter, report, runner, venv
from tests.support.heavy import heavy


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(90)
@heavy
def test_relay_and_bare_arq_are_measured_verified_and_cleaned_up() -> None:
    options = runner.Options(
        systems=("relay", "arq"),
        jobs=30,
        rounds=1,
        rt_requests=5,
        rt_short_requests=1,
        idle_seconds=0.2,
        settle_seconds=0,
        load_tasks=20,
        load_clients=3,
        scale_workers=(2,),
        wait_quiet=0,
        drain_timeout=30,
    )
    results = runner.run(options)

    assert results.failures == []
    drains = {(d.system, d.workers): d for d in [*results.drains, *results.scaling]}
    assert set(drains) == {("relay", 1), ("arq", 1), ("relay", 2), ("arq", 2)}
    for drain in drains.values():
        assert (drain.verified, drain.early) == (30, 0), drain
        assert drain.seconds > 0  # (worker CPU is not asserted: 30 jobs can take less than a clock tick of it)
    # Preloaded through Relay's own enqueue script (concurrent submits share one call, as in the API).
    assert 1 <= drains["relay", 1].enqueue_calls["evalsha"] <= 30
    assert drains["relay", 1].enqueue_calls["mset"] >= 1
    assert "evalsha" not in drains["arq", 1].enqueue_calls  # ... and bare arq through arq's enqueue_job
    assert {(r.system, r.profile, r.variant, len(r.ms)) for r in results.round_trips} == {
        ("relay", "defaults", "defaults", 5),
        ("arq", "tuned", "tuned", 5),
        ("arq", "defaults", "defaults", 1),
    }
    assert min(ms for r in results.round_trips for ms in r.ms) > 0
    idle = {(i.system, i.profile): i for i in results.idles}
    assert idle["arq", "tuned"].calls.get("zrangebyscore", 0) > 0  # an idle arq worker polls its queue
    assert "info" not in idle["relay", "defaults"].calls  # the benchmark's own INFO is not counted
    loads = {ld.system: ld for ld in results.loads}
    assert loads["relay"].calls["xadd"] >= 20  # started, result, end stored for every task (one entry or two)
    assert loads["relay"].calls["subscribe"] >= 20  # ... and delivered to a streaming client
    assert not [pid for pid in results.started_pids if _alive(pid)]

    text = report.render(results, "smoke", {})
    assert "| Relay, defaults " in text
    assert "| bare arq, poll 0.01 s " in text
    assert "NOT VERIFIED" not in text
    assert "## Failures" not in text


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
    assert f"redis[hiredis]=={metadata.version('redis')}" in pins  # one client library for every system
