"""The per-task arguments limit: measured as stored (JSON of [args, kwargs]), exact at the boundary."""

from __future__ import annotations

import pytest

from shared.limits import ArgsTooLarge, args_bytes, check_args_size
from shared.settings import Settings
from shared.tasks import TaskSubmission


def test_size_is_the_json_of_args_and_kwargs() -> None:
    submission = TaskSubmission(task="echo", args=["é"], kwargs={"n": 1})
    assert args_bytes(submission) == len('[["é"],{"n":1}]'.encode())


def test_the_limit_is_inclusive_and_the_error_names_it() -> None:
    at_limit = TaskSubmission(task="echo", kwargs={"message": "x" * 100})
    check_args_size(at_limit, args_bytes(at_limit))
    with pytest.raises(ArgsTooLarge) as caught:
        check_args_size(at_limit, args_bytes(at_limit) - 1)
    assert "RELAY_MAX_ARGS_BYTES" in caught.value.message
    assert caught.value.details["max_bytes"] == args_bytes(at_limit) - 1


def test_args_limit_may_not_exceed_the_body_limit() -> None:
    with pytest.raises(
        ValueError, match=r"RELAY_MAX_ARGS_BYTES \(2000000\) must not exceed RELAY_MAX_BODY_BYTES \(1048576\)"
    ):
        Settings(max_args_bytes=2_000_000)
