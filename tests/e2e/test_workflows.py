"""Workflows (issue #23) through the real API and worker: chains, groups, chords and maps (over items, or over the
value before them), their failure policy, cancel (with the steps' child tasks) and retry, the tree, and one stream
for the whole workflow."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.harness.client import (
    ndjson_lines,
    read_events,
    read_workflow_events,
    sse_messages,
    state,
    submit_workflow,
    types,
    wait_state,
    wait_workflow,
)
from tests.conftest import StartWorker


def task(name: str, *args: Any, immutable: bool = False, **kwargs: Any) -> dict[str, Any]:
    """A step, as the canvas's JSON has it (Celery's ``name.s(*args, **kwargs)``; ``.si`` when immutable)."""
    return {"task": name, "args": list(args), "kwargs": kwargs, "immutable": immutable}


def step_events(events: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """A step's own events as the workflow's stream carries them (tagged with the step)."""
    return [e for e in events if e.get("step") == step and "step_seq" in e]


def test_a_chain_passes_each_result_to_the_next(relay: str) -> None:
    flow = submit_workflow(relay, {"chain": [task("add", 2, 2), task("mul", 4), task("add", 1)]})
    view = wait_workflow(relay, flow)
    assert (view["state"], view["result"], view["error"]) == ("succeeded", 17, None)
    assert [c["state"] for c in view["tree"]["children"]] == ["succeeded"] * 3
    second = state(relay, f"{flow}:1")  # each step is an ordinary task, under <workflow id>:<step>
    assert (second["task"], second["arguments"], second["result"]) == ("mul", {"x": 4, "y": 4}, 16)


def test_a_group_collects_its_results_in_order_and_a_map_runs_one_step_per_item(relay: str) -> None:
    flow = submit_workflow(relay, {"group": [task("add", 1, 1), task("mul", 3, 3), {"map": "inc", "items": [5, 6, 7]}]})
    assert wait_workflow(relay, flow)["result"] == [2, 9, [6, 7, 8]]


def test_a_chord_runs_its_callback_once_every_member_ended(relay_any: str) -> None:
    members = [task("chatty", i, events=i % 3, interval=0.01) for i in range(8)]
    flow = submit_workflow(relay_any, {"chain": [{"chord": members, "callback": task("collect")}, task("collect")]})
    view = wait_workflow(relay_any, flow)
    assert view["result"] == list(range(8))
    events = read_workflow_events(relay_any, flow)
    callback = 8
    assert sum(1 for e in events if e["type"] == "step_started" and e["step"] == callback) == 1
    assert [e["type"] for e in step_events(events, callback)] == ["started", "result", "end"]
    ended = {e["step"] for e in events if e["type"] == "step_ended"}
    first_callback_event = next(i for i, e in enumerate(events) if e.get("step") == callback)
    assert {e["step"] for e in events[:first_callback_event] if e["type"] == "step_ended"} == set(range(8))
    assert ended == set(range(10))
    assert events[-1]["type"] == "workflow_end"


def test_a_failed_step_fails_the_chain_and_the_steps_after_it_are_skipped(relay: str) -> None:
    flow = submit_workflow(relay, {"chain": [task("add", 1, 1), task("fail", immutable=True), task("add", 1)]})
    view = wait_workflow(relay, flow)
    assert view["state"] == "failed"
    error = view["error"]
    assert (error["step"], error["task_id"], error["error_type"]) == (1, f"{flow}:1", "DemoFailure")
    assert [c["state"] for c in view["tree"]["children"]] == ["succeeded", "failed", "skipped"]
    events = read_workflow_events(relay, flow)
    skipped = [e for e in events if e["type"] == "step_ended" and e["step"] == 2]
    assert skipped[0]["data"]["error"] == {"error_type": "StepSkipped", "message": "step 1 failed"}
    assert events[-1]["data"]["state"] == "failed"
    assert httpx.get(f"{relay}/tasks/{flow}:2", timeout=10).status_code == 404  # never enqueued


def test_a_chords_callback_is_skipped_with_a_clear_error_unless_it_allows_failures(relay: str) -> None:
    chord = {"chord": [task("add", 1), task("fail")], "callback": task("collect")}
    flow = submit_workflow(relay, chord)
    view = wait_workflow(relay, flow)
    assert view["state"] == "failed"
    assert view["tree"]["callback"]["state"] == "skipped"
    assert view["error"]["error_type"] == "DemoFailure"

    flow = submit_workflow(relay, chord | {"allow_failures": True})
    view = wait_workflow(relay, flow)
    assert view["state"] == "succeeded"
    ok, failed = view["result"]
    assert ok == 1
    assert (failed["state"], failed["task_id"], failed["error"]["error_type"]) == ("failed", f"{flow}:1", "DemoFailure")


def test_cancelling_aborts_queued_and_running_steps(relay_any: str) -> None:
    sleepers = [task("sleeps", 30, immutable=True) for _ in range(3)]
    flow = submit_workflow(relay_any, {"chain": [{"group": sleepers}, task("collect")]})
    wait_workflow(relay_any, flow, wanted=frozenset({"running"}))
    deadline = time.monotonic() + 10
    while httpx.get(f"{relay_any}/workflows/{flow}", timeout=10).json()["counts"].get("running", 0) < 3:
        assert time.monotonic() < deadline, "the sleepers never ran"
        time.sleep(0.05)
    response = httpx.delete(f"{relay_any}/workflows/{flow}", timeout=10)
    assert response.status_code in (200, 202), response.text
    view = wait_workflow(relay_any, flow)
    assert view["state"] == "aborted"
    assert view["counts"] == {"aborted": 3, "skipped": 1}
    assert read_workflow_events(relay_any, flow)[-1]["data"]["state"] == "aborted"
    again = httpx.delete(f"{relay_any}/workflows/{flow}", timeout=10)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "not_abortable")


def test_retry_runs_the_workflow_again_from_the_failed_step(relay_any: str, tmp_path: Path) -> None:
    marker = tmp_path / "let-it-pass"
    steps = [task("inc", 1), task("fails_until", marker=str(marker)), task("inc")]
    flow = submit_workflow(relay_any, {"chain": steps})
    assert wait_workflow(relay_any, flow)["state"] == "failed"
    refused = httpx.post(f"{relay_any}/tasks/{flow}:1/retry", timeout=10)  # a step is retried with its workflow
    assert refused.status_code == 409
    assert f"/workflows/{flow}/retry" in refused.json()["error"]["message"]
    marker.write_text("now")
    response = httpx.post(f"{relay_any}/workflows/{flow}/retry", timeout=10)
    assert response.status_code == 202, response.text
    view = wait_workflow(relay_any, flow)
    assert (view["state"], view["result"]) == ("succeeded", 3)
    assert types(read_events(relay_any, f"{flow}:0")).count("started") == 1  # the step that succeeded kept its result
    again = types(read_events(relay_any, f"{flow}:1"))
    assert (again.count("started"), again.count("end")) == (2, 2)  # its log went on
    events = read_workflow_events(relay_any, flow)
    assert [e["type"] for e in events].count("workflow_end") == 2
    assert events[-1]["data"] == {"state": "succeeded", "result": 3}
    assert httpx.post(f"{relay_any}/workflows/{flow}/retry", timeout=10).status_code == 409


def test_the_stream_tags_every_step_and_a_late_or_resuming_follower_gets_every_event_once(relay: str) -> None:
    members = [task("chatty", i, immutable=True, events=4, interval=0.05) for i in range(3)]
    flow = submit_workflow(relay, {"chain": [task("chatty", 0, events=4, interval=0.05), {"group": members}]})
    late: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{relay}/workflows/{flow}/events", timeout=30) as response:  # connects mid-way
        lines = ndjson_lines(response)
        for event in lines:
            late.append(event)
            if len(late) == 6:
                break
    resumed = read_workflow_events(relay, flow, after=late[-1]["seq"])  # a reconnect from where it stopped
    whole = read_workflow_events(relay, flow)
    assert late + resumed == whole
    assert [e["seq"] for e in whole] == list(range(1, len(whole) + 1))
    assert whole[-1]["type"] == "workflow_end"
    for step in range(4):
        own = step_events(whole, step)
        assert [e["step_seq"] for e in own] == list(range(1, len(own) + 1))  # in order, once, per step
        assert [e["type"] for e in own] == ["started"] + ["progress"] * 4 + ["result", "end"]
        assert all(e["task_id"] == f"{flow}:{step}" for e in own)
        task_log = read_events(relay, f"{flow}:{step}")
        assert [e["data"] for e in task_log] == [e["data"] for e in own]


def test_sse_resumes_from_last_event_id_and_an_ended_stream_answers_204(relay: str) -> None:
    flow = submit_workflow(relay, {"chain": [task("add", 1, 2), task("mul", 2)]})
    wait_workflow(relay, flow)
    headers = {"Accept": "text/event-stream", "Last-Event-ID": "3"}
    with httpx.stream("GET", f"{relay}/workflows/{flow}/events", headers=headers, timeout=10) as response:
        assert response.headers["x-relay-workflow-id"] == flow
        messages = [m for m in sse_messages(response) if "id" in m]
    assert [int(m["id"]) for m in messages] == list(range(4, 4 + len(messages)))
    assert messages[-1]["event"] == "workflow_end"
    assert json.loads(messages[-1]["data"])["data"] == {"state": "succeeded", "result": 6}
    done = httpx.get(f"{relay}/workflows/{flow}/events", headers={"Last-Event-ID": messages[-1]["id"]}, timeout=10)
    assert done.status_code == 204


def test_submit_and_stream_on_one_response(relay: str) -> None:
    body = {"workflow": {"chain": [task("add", 1, 1), task("mul", 5)]}, "id": f"wf-{uuid.uuid4().hex[:8]}"}
    headers = {"Accept": "application/x-ndjson"}
    with httpx.stream("POST", f"{relay}/workflows", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["location"] == f"/workflows/{body['id']}"
        events = [e for e in ndjson_lines(response) if e["type"] != "heartbeat"]
    assert events[0]["type"] == "workflow_started"
    assert events[-1]["data"] == {"state": "succeeded", "result": 10}
    again = httpx.post(f"{relay}/workflows", json=body, timeout=10)  # the same id and canvas: idempotent
    assert (again.status_code, again.json()["state"], again.json()["created"]) == (200, "succeeded", False)
    other = httpx.post(f"{relay}/workflows", json=body | {"workflow": task("add", 1)}, timeout=10)
    assert (other.status_code, other.json()["error"]["code"]) == (409, "id_conflict")


@pytest.mark.parametrize(
    ("workflow", "code", "words"),
    [
        ({"chain": [task("add", 1), task("nope")]}, "unknown_task", "step 1 (nope)"),
        ({"chain": [task("add", 1), task("add", "x")]}, "invalid_arguments", "step 1 (add)"),
        ({"chain": [task("add", 1), task("not_json")]}, "invalid_request", "no positional parameter"),
        ({"chain": []}, "invalid_request", None),
        ({"map": "inc"}, "invalid_request", "no step before it whose value it could map over"),
        ({"chain": [task("inc", 1), {"map": "not_json"}]}, "invalid_request", "to take each item of the map"),
        ({"grop": []}, "invalid_request", None),
    ],
)
def test_a_canvas_that_cannot_run_is_refused_naming_the_step(
    relay: str, workflow: dict[str, Any], code: str, words: str | None
) -> None:
    response = httpx.post(f"{relay}/workflows", json={"workflow": workflow}, timeout=10)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    if words:
        assert words in response.json()["error"]["message"]


def test_unknown_workflows_are_404_and_listed_ones_show_their_state(relay: str) -> None:
    for path in ("/workflows/nope", "/workflows/nope/events"):
        response = httpx.get(f"{relay}{path}", timeout=10)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "workflow_not_found")
    flow = submit_workflow(relay, task("add", 1))
    wait_workflow(relay, flow)
    listed = httpx.get(f"{relay}/workflows", params={"limit": 500}, timeout=10).json()["workflows"]
    assert {"id": flow, "state": "succeeded", "steps": 1} in [
        {k: w[k] for k in ("id", "state", "steps")} for w in listed
    ]


def test_the_openapi_document_describes_workflows(relay: str) -> None:
    document = httpx.get(f"{relay}/openapi.json", timeout=10).json()
    for path in ("/workflows", "/workflows/{workflow_id}", "/workflows/{workflow_id}/events"):
        assert path in document["paths"]
    assert "text/event-stream" in document["paths"]["/workflows"]["post"]["responses"]["200"]["content"]
    assert "WorkflowSubmission" in document["components"]["schemas"]
    described = json.dumps(document["components"]["schemas"])
    assert "Absent (or null): the value of the step before it" in described  # a map over the value before it


def test_a_parent_waiting_on_children_with_every_slot_held_by_parents_still_finishes(
    spawn_api: Any, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": f"relay:wf:{uuid.uuid4().hex[:8]}", "RELAY_WORKER_CONCURRENCY": "2"}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    # Four parents on two slots: each sleeps first, so both slots hold parents before any child is submitted.
    body = {"task": "parent_of", "args": [3, "inc", 0.5]}
    parents = [httpx.post(f"{base}/tasks", json=body, timeout=10).json()["id"] for _ in range(4)]
    for parent in parents:
        deadline = time.monotonic() + 20
        while (view := state(base, parent))["state"] != "succeeded":
            assert view["state"] not in ("failed", "aborted"), view
            assert time.monotonic() < deadline, f"parent {parent} never finished: {view['state']}"
            time.sleep(0.05)
        assert view["result"] == [1, 2, 3]
    told = httpx.post(f"{base}/tasks", json={"task": "parent_of_failure"}, timeout=10).json()["id"]
    deadline = time.monotonic() + 20
    while (view := state(base, told))["state"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert view["result"] == f"{told}.1 failed: DemoFailure"


def test_a_steps_children_join_the_workflows_stream(relay: str) -> None:
    flow = submit_workflow(relay, {"chain": [task("parent_of", 2, "inc"), task("collect")]})
    assert wait_workflow(relay, flow)["result"] == [1, 2]
    events = read_workflow_events(relay, flow)
    children = {e["task_id"] for e in events if e.get("step") == 0 and e["task_id"] != f"{flow}:0"}
    assert children == {f"{flow}:0.1", f"{flow}:0.2"}


def test_a_follower_of_a_long_workflow_sees_it_end(relay: str) -> None:
    seen: list[str] = []

    def follow(flow: str) -> None:
        seen.extend(e["type"] for e in read_workflow_events(relay, flow))

    flow = submit_workflow(relay, {"chain": [task("inc", 0)] + [task("inc")] * 30})
    follower = threading.Thread(target=follow, args=(flow,))
    follower.start()
    follower.join(60)
    assert wait_workflow(relay, flow)["result"] == 31
    assert seen.count("step_started") == 31
    assert seen[-1] == "workflow_end"


def test_a_reader_of_events_the_workflows_log_no_longer_holds_gets_a_gap(
    spawn_api: Any, spawn_worker: StartWorker
) -> None:
    env = {"RELAY_QUEUE_NAME": f"relay:wf:{uuid.uuid4().hex[:8]}", "RELAY_WORKFLOW_LOG_MAX_LEN": "10"}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    flow = submit_workflow(base, {"chain": [task("inc", 0)] + [task("inc")] * 19})
    assert wait_workflow(base, flow)["result"] == 20
    events = read_workflow_events(base, flow)
    assert events[0]["type"] == "gap"  # the log keeps its newest 10 entries: the oldest events are gone
    assert events[0]["data"]["first_seq"] == 1
    assert [e["seq"] for e in events[1:]] == list(range(events[0]["data"]["last_seq"] + 1, events[-1]["seq"] + 1))
    assert events[-1]["type"] == "workflow_end"


def test_a_chain_maps_over_the_value_of_the_step_before_it_and_sums_the_list(relay: str) -> None:
    flow = submit_workflow(relay, {"chain": [task("numbers", 4), {"map": "add", "args": [10]}, task("tsum")]})
    view = wait_workflow(relay, flow)
    assert (view["state"], view["result"], view["steps"]) == ("succeeded", 50, 7)  # 11 + 12 + 13 + 14
    mapped = view["tree"]["children"][1]
    assert (mapped["kind"], mapped["task"], mapped["step"], mapped["state"]) == ("map", "add", 1, "succeeded")
    members = [f"{flow}:{j}" for j in (3, 4, 5, 6)]  # numbered after the last step of the canvas
    assert [(c["task_id"], c["state"]) for c in mapped["children"]] == [(m, "succeeded") for m in members]
    assert state(relay, members[2])["arguments"] == {"x": 3, "y": 10}  # its item first, then the fixed args
    assert state(relay, f"{flow}:2")["arguments"] == {"numbers": [11, 12, 13, 14]}  # the map's value, in order
    events = read_workflow_events(relay, flow)
    started = [e for e in events if e["type"] == "step_started"]
    assert [e["step"] for e in started] == [0, 1, 3, 4, 5, 6, 2]
    assert started[1]["data"] == {"task": "add", "members": {"first": 3, "count": 4}}
    tsum_started = events.index(started[-1])
    assert {e["step"] for e in events[:tsum_started] if e["type"] == "step_ended"} == {0, 1, 3, 4, 5, 6}
    for member in members:
        own = [e["type"] for e in events if e.get("task_id") == member and "step_seq" in e]
        assert own == ["started", "result", "end"]
    assert events[-1]["data"] == {"state": "succeeded", "result": 50}


def test_a_map_over_an_empty_list_is_empty_and_over_a_non_list_fails_the_chain(relay: str) -> None:
    empty = submit_workflow(relay, {"chain": [task("numbers", 0), {"map": "inc"}, task("tsum")]})
    view = wait_workflow(relay, empty)
    assert (view["state"], view["result"], view["steps"]) == ("succeeded", 0, 3)
    assert view["tree"]["children"][1]["children"] == []
    assert state(relay, f"{empty}:2")["arguments"] == {"numbers": []}

    flow = submit_workflow(relay, {"chain": [task("inc", 1), {"map": "inc"}, task("tsum")]})
    view = wait_workflow(relay, flow)
    assert view["state"] == "failed"
    assert (view["error"]["step"], view["error"]["error_type"]) == (1, "MapOverNonList")
    assert view["error"]["message"] == "step 1 maps over the value before it, which is a number, not a list"
    assert [c["state"] for c in view["tree"]["children"]] == ["succeeded", "failed", "skipped"]


def test_a_map_too_wide_for_the_workflow_fails_it_with_a_clear_error(spawn_api: Any, spawn_worker: StartWorker) -> None:
    env = {"RELAY_QUEUE_NAME": f"relay:wf:{uuid.uuid4().hex[:8]}", "RELAY_MAX_WORKFLOW_STEPS": "10"}
    _, base = spawn_api(**env)
    spawn_worker(**env)
    flow = submit_workflow(base, {"chain": [task("numbers", 8), {"map": "inc"}, task("tsum")]})
    view = wait_workflow(base, flow)
    assert (view["state"], view["steps"], view["error"]["error_type"]) == ("failed", 3, "TooManySteps")
    assert view["error"]["message"] == "step 1 would map over 8 items: the workflow has 3 steps and may have at most 10"
    assert httpx.get(f"{base}/tasks/{flow}:3", timeout=10).status_code == 404  # nothing half-enqueued


def test_cancelling_a_workflow_cancels_its_steps_children_and_theirs(relay: str) -> None:
    waiting = task("fans_out", 2, 2, immutable=True)  # waits on 2 children, each waiting on 2 that block
    left_running = task("fans_out", 2, 1, immutable=True, wait=False)  # ends at once, its 2 children run on
    flow = submit_workflow(relay, {"chain": [{"group": [waiting, left_running]}, task("collect")]})
    blocked = [f"{flow}:0.{i}.{j}" for i in (1, 2) for j in (1, 2)] + [f"{flow}:1.1", f"{flow}:1.2"]
    for child in blocked:
        wait_state(relay, child, {"running"})
    response = httpx.delete(f"{relay}/workflows/{flow}", timeout=10)
    assert response.status_code in (200, 202), response.text  # 200 once its step's worker already stopped it
    assert response.json()["children"] == 8  # 0.1, 0.2, their 4 children, and the 2 that step 1 left running
    view = wait_workflow(relay, flow)
    assert view["state"] == "aborted"
    assert view["counts"] == {"aborted": 1, "succeeded": 1, "skipped": 1}
    for child in [f"{flow}:0.1", f"{flow}:0.2", *blocked]:
        assert wait_state(relay, child, {"aborted", "succeeded", "failed"}, timeout=20)["state"] == "aborted"
    again = httpx.delete(f"{relay}/workflows/{flow}", timeout=10)  # a second cancel: nothing left to stop
    assert (again.status_code, again.json()["error"]["code"]) == (409, "not_abortable")


def test_aborting_a_parent_task_aborts_its_children_and_theirs(relay: str) -> None:
    parent = httpx.post(f"{relay}/tasks", json={"task": "fans_out", "args": [2, 2]}, timeout=10).json()["id"]
    grandchildren = [f"{parent}.{i}.{j}" for i in (1, 2) for j in (1, 2)]
    for child in grandchildren:
        wait_state(relay, child, {"running"})
    response = httpx.delete(f"{relay}/tasks/{parent}", timeout=10)
    assert response.status_code == 202, response.text
    assert response.json()["children"] == 6
    for task_id in [parent, f"{parent}.1", f"{parent}.2", *grandchildren]:
        assert wait_state(relay, task_id, {"aborted", "succeeded", "failed"}, timeout=20)["state"] == "aborted"
    again = httpx.delete(f"{relay}/tasks/{parent}", timeout=10)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "not_abortable")
