"""Workflows from the Python client: Celery's canvas (``.s()``, ``|``, ``chain``, ``group``, ``chord``, ``.map``),
handles that follow the one stream and give the value, against the real API and worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.client import (
    AsyncClient,
    Client,
    NotRetryable,
    TaskAborted,
    TaskFailed,
    chain,
    chord,
    group,
    signature,
)


def test_the_canvas_is_celerys_and_becomes_the_json_the_api_takes() -> None:
    with Client("http://127.0.0.1:9") as client:
        add, mul, tsum = client.task("add"), client.task("mul"), client.task("tsum")
        assert (add.s(2, 2) | mul.s(4)).to_json() == {
            "chain": [{"task": "add", "args": [2, 2], "kwargs": {}}, {"task": "mul", "args": [4], "kwargs": {}}]
        }
        # a chain of chains is one chain; a group piped into a task is a chord (as in Celery)
        assert (add.s(1) | (mul.s(2) | mul.s(3))).to_json()["chain"][2]["args"] == [3]
        header = group([add.s(i, i) for i in range(3)])
        piped = (header | tsum.s()).to_json()
        assert set(piped) == {"chord", "callback"}
        assert len(piped["chord"]) == 3
        assert chord(header)(tsum.s()).to_json() == piped  # Celery's chord(header)(callback)
        assert chord([add.s(1)], tsum.s(), allow_failures=True).to_json()["allow_failures"] is True
        assert add.si(1).to_json()["immutable"] is True
        assert add.s(1).set(queue="gpu", priority=7).to_json() == {
            "task": "add",
            "args": [1],
            "kwargs": {},
            "queue": "gpu",
            "priority": 7,
        }
        assert client.task("inc").map([1, 2]).to_json() == {"map": "inc", "items": [1, 2], "args": [], "kwargs": {}}
        # no items: a map over the value before it (Celery's chain into a map of the previous result)
        assert (add.s(1) | client.task("inc").map()).to_json()["chain"][1] == {"map": "inc", "args": [], "kwargs": {}}
        assert add.map(None, 10).to_json() == {"map": "add", "args": [10], "kwargs": {}}
        assert chain(signature("add", (1, 2)), signature("mul", (3,))).client is None
        with pytest.raises(TypeError, match="unknown step option"):
            add.s(1).set(expires=3)


def test_a_chain_and_a_chord_run_and_give_their_value(relay: str) -> None:
    with Client(relay) as client:
        add, mul, tsum = client.task("add"), client.task("mul"), client.task("tsum")
        handle = (add.s(2, 2) | mul.s(4)).delay()
        assert handle.result(timeout=30) == 16
        events = list(handle.events())
        assert events[-1].type == "workflow_end"
        assert {e.raw.get("step") for e in events if e.type == "result"} == {0, 1}
        flow = chord([add.s(i, i) for i in range(10)], tsum.s()).apply_async(id=f"{handle.id}-chord")
        assert flow.id == f"{handle.id}-chord"
        assert flow.get(timeout=30) == 90
        view = flow.state()
        assert view.is_final
        assert view.counts == {"succeeded": 11}
        assert view.step_ids() == [f"{flow.id}:{i}" for i in range(11)]
        assert client.workflow({"map": "inc", "items": [1, 2, 3]}).result(timeout=30) == [2, 3, 4]
        over = (client.task("numbers").s(3) | add.map(None, 10) | tsum.s()).delay()
        assert over.result(timeout=30) == 36
        assert over.state().step_ids() == [f"{over.id}:{i}" for i in (0, 2, 3, 4, 5)]  # the map's members: 3, 4, 5


def test_a_failed_step_raises_naming_it_and_retry_runs_it_again(relay: str, tmp_path: Path) -> None:
    marker = tmp_path / "pass"
    with Client(relay) as client:
        handle = (client.task("inc").s(1) | client.task("fails_until").s(marker=str(marker))).delay()
        with pytest.raises(TaskFailed, match=r"step 1 \(.*:1\)"):
            handle.result(timeout=30)
        marker.write_text("ok")
        assert handle.retry().result(timeout=30) == 2
        with pytest.raises(NotRetryable):
            handle.retry()


def test_cancel_from_the_handle(relay: str) -> None:
    with Client(relay) as client:
        handle = (client.task("sleeps").si(30) | client.task("inc").s()).delay()
        assert handle.cancel() in ("aborted", "aborting")
        with pytest.raises(TaskAborted):
            handle.result(timeout=30)


async def test_the_async_client_runs_workflows_too(relay: str) -> None:
    async with AsyncClient(relay) as client:
        add, mul = client.task("add"), client.task("mul")
        handle = await (add.s(1, 2) | mul.s(10)).delay()
        assert await handle.result(timeout=30) == 30
        types = [event.type async for event in handle.events()]
        assert types[0] == "workflow_started"
        assert types[-1] == "workflow_end"
        assert (await handle.state()).state == "succeeded"
