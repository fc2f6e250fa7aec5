"""What a Service Bus reply carries (``worker.bridge.replies.reply_body``): the outcome, within the same
result limit as the worker's (issue #27)."""

from __future__ import annotations

import json

from worker.bridge.replies import reply_body


def test_a_result_within_the_limit_is_sent_whole() -> None:
    view = {"state": "succeeded", "result": "x" * 100, "error": None}
    assert json.loads(reply_body("t1", view, 1024)) == {"task_id": "t1", "state": "succeeded", "result": "x" * 100}


def test_a_stored_result_over_the_limit_is_replaced_by_a_result_too_large_error() -> None:
    # Stored by a worker with a higher limit (or before the limit existed): the reply still obeys this one.
    view = {"state": "succeeded", "result": "x" * 5000, "error": None}
    body = reply_body("t1", view, 1024)
    assert len(body) < 1024
    outcome = json.loads(body)
    assert (outcome["state"], outcome["result"]) == ("succeeded", None)
    assert outcome["error"]["error_type"] == "ResultTooLarge"
    assert "RELAY_MAX_RESULT_BYTES" in outcome["error"]["message"]
    assert "GET /tasks/t1" in outcome["error"]["message"]


def test_a_failure_carries_its_error() -> None:
    error = {"error_type": "Boom", "message": "no"}
    outcome = json.loads(reply_body("t1", {"state": "failed", "result": None, "error": error}, 1024))
    assert outcome == {"task_id": "t1", "state": "failed", "error": error}
