"""Every way a call can fail, as exceptions a caller can catch by what they can do about it.

Two families. ``RelayError``: the API refused the request (one class per error code, under one base per
HTTP status, so new codes still land somewhere sensible) or could not be reached. ``TaskError``: the
request worked but the task itself did not succeed (it failed, was aborted, or vanished).
``ResultTimeout`` is a ``TimeoutError``: waiting gave up, the task goes on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import httpx


class RelayError(Exception):
    """The API answered with an error (``status``, ``code``, ``message``, ``details``) or could not be reached.

    ``retryable`` is true when the same request may succeed later (429, 503, lost connections);
    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    status: int | None = None
    code: str = "error"
    retryable: bool = False
    # The API refused before acting on the request, so resending it is safe even when it is not idempotent
    # (a cancel, a retry). A proxy's 502/504 is not such a refusal: the API may have acted, the answer was lost.
    refused_before_acting: bool = False

    def __init__(
        self,
        message: str,
        details: Any = None,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.retry_after = retry_after
        # An unknown code or status keeps what the server said, on the instance.
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"


class RelayConnectionError(RelayError):
    """The API could not be reached (or the connection broke) and retrying did not help."""

    code = "connection_error"
    retryable = True


class NotRelayAnswer(RelayConnectionError):
    """A success whose body is not the JSON object the API sends: something else answered at that URL (a proxy's
    or a captive portal's page, another web server), so Relay's API was not reached. Not retried: a cancel or a
    retry may have been carried out behind it."""

    code = "not_relay_answer"
    retryable = False


class ClientError(RelayError):
    """A 4xx the client does not know by code."""

    status = 400
    code = "client_error"


class BadRequestError(ClientError):
    status, code = 400, "bad_request"


class MalformedJson(BadRequestError):
    code = "malformed_json"


class UnauthorizedError(ClientError):
    """No API key, or a wrong one (``RELAY_API_KEY`` / ``api_key=``)."""

    status, code = 401, "unauthorized"


class ForbiddenError(ClientError):
    """The key's role does not allow this (a read-only key submitting, a tenant listing another tenant)."""

    status, code = 403, "forbidden"


class NotFoundError(ClientError):
    status, code = 404, "not_found"


class TaskNotFound(NotFoundError):
    """No such task: never submitted, or its record expired."""

    code = "task_not_found"


class WorkflowNotFound(NotFoundError):
    """No such workflow: never submitted, or its record expired."""

    code = "workflow_not_found"


class RouteNotFound(NotFoundError):
    """No such route (a base URL pointing at something other than Relay's API?)."""

    code = "not_found"


class MethodNotAllowedError(ClientError):
    status, code = 405, "method_not_allowed"


class NotAcceptableError(ClientError):
    status, code = 406, "not_acceptable"


class ConflictError(ClientError):
    status, code = 409, "conflict"


class IdConflict(ConflictError):
    """This id already names a task with another task name or other arguments."""

    code = "id_conflict"


class NotAbortable(ConflictError):
    """The task has already ended."""

    code = "not_abortable"


class NotRetryable(ConflictError):
    """Only a failed or aborted task can be retried."""

    code = "not_retryable"


class PayloadTooLargeError(ClientError):
    status, code = 413, "payload_too_large"


class ArgsTooLarge(PayloadTooLargeError):
    """The task's JSON-encoded arguments are over the API's ``RELAY_MAX_ARGS_BYTES``: pass big data by reference."""

    code = "args_too_large"


class UnprocessableError(ClientError):
    """Valid JSON that is not a valid request (``details`` lists each problem)."""

    status, code = 422, "unprocessable"


class InvalidRequest(UnprocessableError):
    code = "invalid_request"


class UnknownTask(UnprocessableError):
    code = "unknown_task"


class InvalidArguments(UnprocessableError):
    code = "invalid_arguments"


class TooManyRequestsError(ClientError):
    """429: slow down; retried for you while ``Retry-After`` fits the retry budget."""

    status, code = 429, "too_many_requests"
    retryable = True
    refused_before_acting = True  # the API's rate limit and quota are checked before it acts (api/quotas.py)


class RateLimited(TooManyRequestsError):
    code = "rate_limited"


class QuotaExceeded(TooManyRequestsError):
    code = "quota_exceeded"


class ServerError(RelayError):
    """A 5xx the client does not know by code (502 and 504, from a proxy in front, count as retryable)."""

    status, code = 500, "server_error"


class InternalServerError(ServerError):
    code = "internal_error"


class ServiceUnavailableError(ServerError):
    """503: the API cannot take this right now; retried for you while ``Retry-After`` fits the retry budget."""

    status, code = 503, "service_unavailable"
    retryable = True


class QueueFull(ServiceUnavailableError):
    code = "queue_full"
    refused_before_acting = True  # nothing was enqueued


class Draining(ServiceUnavailableError):
    """This API process is shutting down; another one will answer."""

    code = "draining"
    refused_before_acting = True  # said before the request is looked at


class TooManyStreams(ServiceUnavailableError):
    code = "too_many_streams"
    refused_before_acting = True


class NotReplicated(ServiceUnavailableError):
    """The replicas did not confirm the job in time; it is on the primary. Resending with the same id is safe
    (``200`` if it survived, ``202`` if a failover lost it), which is what the retry does."""

    code = "not_replicated"


class StoreUnavailable(ServiceUnavailableError):
    """Redis, behind the API, cannot serve the request (any ``redis_*`` code)."""

    code = "redis_error"


class RedisUnavailable(StoreUnavailable):
    code = "redis_unavailable"


class RedisReadonly(StoreUnavailable):
    code = "redis_readonly"


class RedisOutOfMemory(StoreUnavailable):
    code = "redis_oom"


class RedisBusy(StoreUnavailable):
    code = "redis_busy"


class RedisLoading(StoreUnavailable):
    code = "redis_loading"


class RedisPoolExhausted(StoreUnavailable):
    code = "redis_pool_exhausted"


class RedisMasterDown(StoreUnavailable):
    code = "redis_masterdown"


class RedisNoReplicas(StoreUnavailable):
    code = "redis_no_replicas"


class RedisMisconfigured(StoreUnavailable):
    code = "redis_misconf"


class RedisNoScript(StoreUnavailable):
    code = "redis_noscript"


class RedisSlotMoving(StoreUnavailable):
    code = "redis_slot_moving"


class RedisAuthFailed(StoreUnavailable):
    code = "redis_auth"


def _by_code(*classes: type[RelayError]) -> dict[str, type[RelayError]]:
    return {cls.code: cls for cls in classes}


# Every code of the HTTP contract, and the class it raises.
ERROR_CODES: dict[str, type[RelayError]] = _by_code(
    MalformedJson,
    UnauthorizedError,
    ForbiddenError,
    TaskNotFound,
    WorkflowNotFound,
    RouteNotFound,
    MethodNotAllowedError,
    NotAcceptableError,
    IdConflict,
    NotAbortable,
    NotRetryable,
    PayloadTooLargeError,
    ArgsTooLarge,
    InvalidRequest,
    UnknownTask,
    InvalidArguments,
    RateLimited,
    QuotaExceeded,
    InternalServerError,
    QueueFull,
    RedisUnavailable,
    RedisReadonly,
    RedisOutOfMemory,
    RedisBusy,
    RedisLoading,
    RedisPoolExhausted,
    RedisMasterDown,
    RedisNoReplicas,
    RedisMisconfigured,
    RedisNoScript,
    RedisSlotMoving,
    RedisAuthFailed,
    StoreUnavailable,
    NotReplicated,
    Draining,
    TooManyStreams,
)

# The base for a code the client does not know yet, by status.
STATUS_FAMILIES: dict[int, type[RelayError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    406: NotAcceptableError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableError,
    429: TooManyRequestsError,
    503: ServiceUnavailableError,
}

_PROXY_RETRYABLE = {502, 504}  # a load balancer in front saying its backend is restarting


def error_class(status: int, code: str) -> type[RelayError]:
    """The class for ``code``; for an unknown code, its status family's base (a ``redis_*`` 503 is the store's)."""
    known = ERROR_CODES.get(code)
    if known is not None and known.status == status:
        return known
    if status == 503 and code.startswith("redis_"):
        return StoreUnavailable
    if status in STATUS_FAMILIES:
        return STATUS_FAMILIES[status]
    return ServerError if status >= 500 else ClientError


class Answer(Protocol):
    """What an error is read from: an ``httpx.Response`` or the urllib3 sender's reply (relay/client/senders.py)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    @property
    def reason_phrase(self) -> str: ...


def retry_after(response: Answer) -> float | None:
    """``Retry-After`` in seconds (the delta form; an HTTP date is rare enough to ignore)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def error_from_response(response: Answer) -> RelayError:
    """The exception for a non-2xx response (its body must have been read)."""
    status = response.status_code
    try:
        body = json.loads(response.content)
        error = body["error"]
        code, message, details = str(error["code"]), str(error["message"]), error.get("details")
    except (ValueError, TypeError, KeyError):
        # Not Relay's error shape: a proxy's page, most likely. Keep a little of it for the message.
        code, message, details = f"http_{status}", response.text[:200] or response.reason_phrase, None
    cls = error_class(status, code)
    if issubclass(cls, UnprocessableError):
        message = _with_first_problem(message, details)
    exc = cls(message, details, status=status, code=code, retry_after=retry_after(response))
    if cls is ServerError and status in _PROXY_RETRYABLE:
        exc.retryable = True
    return exc


def answer_json(response: Answer) -> dict[str, Any]:
    """A success's body: the API always answers with a JSON object, anything else is ``NotRelayAnswer`` (not a
    ``JSONDecodeError`` a caller would not think of catching)."""
    try:
        body = json.loads(response.content)
    except ValueError:  # not JSON, or not UTF-8
        body = None
    if not isinstance(body, dict):
        kind = response.headers.get("content-type") or "no content type"
        excerpt = response.text[:200] or "an empty body"
        message = f"the answer is not Relay's JSON ({kind}): {excerpt}; is this URL Relay's API?"
        raise NotRelayAnswer(message, status=response.status_code)
    return body


def _with_first_problem(message: str, details: Any) -> str:
    """A 422's message with its first problem, when the API did not put it there (an API older than the one
    that does): ``n: '3' is not of type 'integer' (and 1 more problem)`` says what to fix; a bare "the
    arguments do not fit the task" does not."""
    if not isinstance(details, list) or not details or not isinstance(details[0], dict):
        return message
    first = details[0]
    msg = str(first.get("msg", ""))
    if not msg or msg in message:
        return message
    where = ".".join(str(part) for part in first.get("loc") or [])
    line = f"{where}: {msg}" if where else msg
    others = len(details) - 1
    if others:
        line += f" (and {others} more problem{'s' if others > 1 else ''})"
    return f"{message}: {line}"


class TaskError(Exception):
    """The task ended without a result; ``task_id`` and ``state`` say which and how."""

    state: str = "unknown"

    def __init__(self, task_id: str, message: str) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.message = message


class TaskFailed(TaskError):
    """The task raised: ``error_type`` is its exception's class name, ``message`` its text."""

    state = "failed"

    def __init__(self, task_id: str, error_type: str, message: str) -> None:
        super().__init__(task_id, message)
        self.error_type = error_type

    def __str__(self) -> str:
        return f"task {self.task_id} failed: {self.error_type}: {self.message}"


class TaskAborted(TaskError):
    """The task was cancelled (``DELETE /tasks/{id}``) before it finished."""

    state = "aborted"

    def __str__(self) -> str:
        return f"task {self.task_id} was aborted: {self.message}"


class TaskLost(TaskError):
    """The task's record expired or vanished before an outcome was seen."""

    def __str__(self) -> str:
        return f"task {self.task_id} has no outcome: {self.message}"


class ResultTimeout(TimeoutError):
    """Waiting for the task gave up; the task itself keeps running (cancel it with ``handle.cancel()``)."""

    def __init__(self, task_id: str, timeout: float, kind: str = "task") -> None:
        # ``kind``: a workflow's wait says "workflow wf1", so the advice that follows names the right command.
        super().__init__(f"{kind} {task_id} did not end within {timeout:g}s (it keeps running)")
        self.task_id = task_id
        self.timeout = timeout


def connection_error(base_url: str, exc: httpx.TransportError) -> RelayConnectionError:
    """A lost or refused connection, as a ``RelayError`` that keeps the transport's exception as its cause."""
    error = RelayConnectionError(f"cannot talk to {base_url}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        error.retryable = False  # the request itself is wrong (a URL's scheme, a header): no retry can help
    return error


def may_resend(error: RelayError, idempotent: bool) -> bool:
    """Whether a call the API answered with ``error`` may be sent again: an idempotent one always (within the
    budget); another (a cancel, a retry) only when the API says it refused before acting. A redis_* 503 may come
    after the change was made (reading the task back), and a proxy's 502/504 is an answer lost on the way back."""
    return idempotent or error.refused_before_acting


def never_sent(exc: httpx.TransportError) -> bool:
    """True when the request cannot have reached the server, so resending it is safe whatever it does."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
