"""Every error code of the HTTP contract maps to one exception class, and unknown ones to their family."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from relay.client import errors
from relay.client.errors import (
    ERROR_CODES,
    ClientError,
    RelayError,
    ServerError,
    ServiceUnavailableError,
    StoreUnavailable,
    TooManyRequestsError,
    error_from_response,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
HTTP_API = DOCS / "http-api.md"  # the HTTP contract
CLIENT = DOCS / "client.md"  # the client's exceptions


def server_error_table() -> dict[int, list[str]]:
    """The codes the API answers with, by status: the "Errors" table of docs/http-api.md (the HTTP contract)."""
    text = HTTP_API.read_text()
    section = text[text.index("\n## Errors\n") :]
    section = section[: section.index("\n\n", section.index("| Status |"))]
    contract: dict[int, list[str]] = {}
    for status, codes in re.findall(r"^\| (\d{3}) \| ([^|]+) \|", section, flags=re.MULTILINE):
        contract.setdefault(int(status), []).extend(re.findall(r"`([a-z_]+)`", codes))
    return contract


CONTRACT = server_error_table()


def response(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"the {code} message", "details": {"where": "here"}}}
    return httpx.Response(status, json=body, headers=headers)


def contract_codes() -> list[tuple[int, str]]:
    return [(status, code) for status, codes in CONTRACT.items() for code in codes]


@pytest.mark.parametrize(("status", "code"), contract_codes())
def test_each_contract_code_has_its_own_class(status: int, code: str) -> None:
    exc = error_from_response(response(status, code, {"Retry-After": "3"}))
    assert type(exc) is ERROR_CODES[code]
    assert (exc.status, exc.code, exc.message, exc.details) == (status, code, f"the {code} message", {"where": "here"})
    assert exc.retryable == (status in {429, 503})
    assert exc.retry_after == 3.0


def test_the_contract_was_read() -> None:
    assert sum(map(len, CONTRACT.values())) >= 30
    assert "not_replicated" in CONTRACT[503]
    assert "args_too_large" in CONTRACT[413]


def test_no_two_codes_share_a_class() -> None:
    assert set(ERROR_CODES) == {code for _, code in contract_codes()}
    assert len(set(ERROR_CODES.values())) == len(ERROR_CODES)


@pytest.mark.parametrize(
    ("status", "code", "family", "retryable"),
    [
        (503, "brand_new_outage", ServiceUnavailableError, True),
        (503, "redis_cluster_down", StoreUnavailable, True),
        (429, "slow_down_please", TooManyRequestsError, True),
        (409, "not_pausable", errors.ConflictError, False),
        (422, "invalid_schedule", errors.UnprocessableError, False),
        (418, "teapot", ClientError, False),
        (500, "internal_error", errors.InternalServerError, False),
        (501, "not_implemented", ServerError, False),
        (404, "unauthorized", errors.NotFoundError, False),  # a known code under another status: trust the status
    ],
)
def test_unknown_codes_fall_back_to_their_status_family(
    status: int, code: str, family: type[RelayError], retryable: bool
) -> None:
    exc = error_from_response(response(status, code))
    assert type(exc) is family
    assert exc.code == code  # what the server said is kept
    assert exc.status == status
    assert exc.retryable is retryable


@pytest.mark.parametrize(("status", "retryable"), [(502, True), (504, True), (500, False)])
def test_a_proxy_page_is_still_an_error_with_its_status(status: int, retryable: bool) -> None:
    exc = error_from_response(httpx.Response(status, text="<html>Bad Gateway</html>"))
    assert isinstance(exc, ServerError)
    assert exc.code == f"http_{status}"
    assert "Bad Gateway" in exc.message
    assert exc.retryable is retryable


def test_retry_after_must_be_seconds() -> None:
    assert error_from_response(response(503, "queue_full", {"Retry-After": "soon"})).retry_after is None
    assert error_from_response(response(503, "queue_full")).retry_after is None


def test_documented_exception_table_matches_the_mapping() -> None:
    rows = re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \| `(\w+)` \| `(\w+)` \|", CLIENT.read_text(), flags=re.MULTILINE)
    table = {code: (int(status), cls, base) for status, code, cls, base in rows}
    assert set(table) == set(ERROR_CODES)
    for code, (status, cls, base) in table.items():
        assert ERROR_CODES[code].__name__ == cls
        assert ERROR_CODES[code].status == status
        assert base in {c.__name__ for c in ERROR_CODES[code].__mro__[1:]}


def test_str_says_status_code_and_message() -> None:
    assert str(error_from_response(response(422, "unknown_task"))) == "422 unknown_task: the unknown_task message"


def test_a_422_without_its_first_problem_in_the_message_gets_it_from_details() -> None:
    details = [{"loc": ["n"], "msg": "'3' is not of type 'integer'"}, {"loc": ["x"], "msg": "unexpected argument"}]
    body = {"error": {"code": "invalid_arguments", "message": "the arguments do not fit the task", "details": details}}
    exc = error_from_response(httpx.Response(422, json=body))
    assert str(exc) == (
        "422 invalid_arguments: the arguments do not fit the task: n: '3' is not of type 'integer' (and 1 more problem)"
    )
    said = body["error"] | {"message": "the arguments do not fit the task: n: '3' is not of type 'integer'"}
    assert error_from_response(httpx.Response(422, json={"error": said})).message == said["message"]  # not twice


def test_every_exception_is_re_exported_from_relay_client() -> None:
    """``relay.client`` says every failure is re-exported there: ``from relay.client import RedisSlotMoving``."""
    import relay.client

    families = (RelayError, errors.TaskError, errors.ResultTimeout)
    classes = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, families)}
    assert classes - set(relay.client.__all__) == set()
    assert all(getattr(relay.client, name) is getattr(errors, name) for name in classes)
