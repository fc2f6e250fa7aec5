"""API failures a client can act on, and the one place that maps every failure to a status and JSON body.

Body shape, for every error: ``{"error": {"code": str, "message": str, "details": any}}``.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sanic import Request
from sanic.exceptions import PayloadTooLarge, SanicException
from sanic.response import HTTPResponse, json

from shared.durability import NotReplicated
from shared.errors import (
    IdConflict,
    InvalidArguments,
    InvalidOptions,
    QueueFull,
    SubmissionError,
    UnknownTask,
    first_problem,
)
from shared.limits import ArgsTooLarge
from shared.redis_errors import RedisFailure, classify

if TYPE_CHECKING:  # api.resources imports this module (through api.quotas)
    from api.resources import RelayApp

logger = logging.getLogger("relay.api")


class ApiError(Exception):
    """A failure with a status code; subclasses name the ones clients handle."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class MalformedJson(ApiError):
    status, code = 400, "malformed_json"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class TaskNotFound(ApiError):
    status, code = 404, "task_not_found"


class NotAbortable(ApiError):
    status, code = 409, "not_abortable"


class NotRetryable(ApiError):
    status, code = 409, "not_retryable"


class InvalidRequest(ApiError):
    status, code = 422, "invalid_request"


class Draining(ApiError):
    status, code = 503, "draining"


class TooManyStreams(ApiError):
    status, code = 503, "too_many_streams"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class QuotaExceeded(ApiError):
    status, code = 429, "quota_exceeded"


MAX_DETAILS = 50  # a body with 60,000 bad keys must not earn a 5 MB answer


def _capped(details: Any) -> Any:
    if isinstance(details, list) and len(details) > MAX_DETAILS:
        return [*details[:MAX_DETAILS], {"msg": f"... and {len(details) - MAX_DETAILS} more problems"}]
    return details


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> HTTPResponse:
    """The JSON error body every failure uses."""
    body = {"error": {"code": code, "message": message, "details": _capped(details)}}
    return json(body, status=status, headers=headers)


def _validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


async def handle_error(request: Request, exc: Exception) -> HTTPResponse:
    """Sanic's handler for everything: known failures get their status, anything else a logged 500."""
    logger.debug("%s %s refused: %s: %s", request.method, request.path, type(exc).__name__, exc)
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, ValidationError):
        problems = _validation_details(exc)
        message = f"the request does not match the schema: {first_problem(problems)}"
        return error_response(422, "invalid_request", message, problems)
    if isinstance(exc, SubmissionError):
        return _submission_error(exc)
    if (failure := classify(exc)) is not None:
        return _redis_failure(request, exc, failure)
    if isinstance(exc, NotReplicated):
        details = {"id": exc.task_id, "replicas": exc.confirmed, "wanted": exc.wanted}
        message = f"{exc}: it will probably run; resubmit with the same id to be sure"
        return error_response(503, "not_replicated", message, details, headers={"Retry-After": "1"})
    if isinstance(exc, PayloadTooLarge):
        return _too_large(request, exc)
    if isinstance(exc, SanicException) and exc.status_code >= 500:
        # Sanic's own 5xx messages can carry internals (e.g. the repr of what a handler returned).
        logger.error("server error on %s %s: %s", request.method, request.path, exc)
        code, message = ("internal_error", "internal error") if exc.status_code == 500 else ("http_error", "")
        message = message or HTTPStatus(exc.status_code).phrase.lower()
        return error_response(exc.status_code, code, message, headers=dict(exc.headers or {}))
    if isinstance(exc, SanicException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, code, str(exc), headers=dict(exc.headers or {}))
    logger.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "internal error")


def _too_large(request: Request, exc: PayloadTooLarge) -> HTTPResponse:
    """Say which limit was hit and, for the body, which setting raises it."""
    if "header" in str(exc).lower():  # Sanic's own header limit, not a Relay setting
        limit = request.app.config.REQUEST_MAX_HEADER_SIZE
        message = f"the request headers are larger than {limit} bytes"
    else:
        limit = request.app.config.REQUEST_MAX_SIZE
        message = f"the body is larger than {limit} bytes, the limit set by RELAY_MAX_BODY_BYTES"
    return error_response(413, "payload_too_large", message, {"limit_bytes": limit})


def _redis_failure(request: Request, exc: Exception, failure: RedisFailure) -> HTTPResponse:
    """Every Redis failure is a 503 with its own code: the request was fine, the store was not."""
    if failure.transient:
        logger.warning("%s on %s %s: %s", failure.code, request.method, request.path, exc)
    else:  # a configuration problem or a bug: worth a traceback
        logger.error("%s on %s %s", failure.code, request.method, request.path, exc_info=exc)
    headers = {"Retry-After": str(failure.retry_after)}
    return error_response(503, failure.code, failure.message, headers=headers)


# How each submission failure answers over HTTP: (status, code, extra headers).
_SUBMISSION_ERRORS: dict[type[SubmissionError], tuple[int, str, dict[str, str]]] = {
    UnknownTask: (422, "unknown_task", {}),
    InvalidArguments: (422, "invalid_arguments", {}),
    InvalidOptions: (422, "invalid_request", {}),
    IdConflict: (409, "id_conflict", {}),
    QueueFull: (503, "queue_full", {"Retry-After": "5"}),
    ArgsTooLarge: (413, "args_too_large", {}),
}


def _submission_error(exc: SubmissionError) -> HTTPResponse:
    status, code, headers = _SUBMISSION_ERRORS.get(type(exc), (422, "invalid_request", {}))
    return error_response(status, code, exc.message, exc.details, headers)


def install(app: RelayApp) -> None:
    """Route every exception through ``handle_error``."""
    app.error_handler.add(Exception, handle_error)
