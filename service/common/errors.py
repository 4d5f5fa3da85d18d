"""Errors as RFC 9457 problem+json: one exception type per meaning, one status, one stable code."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger("service.errors")


class FieldError(msgspec.Struct, omit_defaults=True):
    field: str
    message: str
    index: int | None = None


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
    code: str
    errors: list[FieldError] | None = None


class ServiceError(Exception):
    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = headers or {}


class InvalidInput(ServiceError):
    status, code, title = 422, "validation_error", "Invalid input"


class Unauthorized(ServiceError):
    status, code, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(ServiceError):
    status, code, title = 403, "forbidden", "Not allowed for this API key"


class NotFound(ServiceError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ServiceError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(ServiceError):
    status, code, title = 413, "payload_too_large", "Request body too large"


class RateLimited(ServiceError):
    status, code, title = 429, "rate_limited", "Too many requests"


class Unavailable(ServiceError):
    status, code, title = 503, "unavailable", "Service temporarily unavailable"


class QueryTimeout(ServiceError):
    """The database is fine but this query needed longer than a request's statement may run."""

    status, code, title = 503, "query_timeout", "Query took too long"


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: Sequence[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Problem]:
    body = Problem(
        type=f"https://metering.dev/problems/{code}",
        title=title,
        status=status,
        detail=detail,
        code=code,
        errors=list(errors) if errors else None,
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _service_error(_: Request[Any, Any, Any], exc: ServiceError) -> Response[Problem]:
    return problem_response(exc.status, exc.code, exc.title, exc.detail, exc.errors, exc.headers)


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    errors: list[FieldError] = []
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if isinstance(item, dict):
            key = str(item.get("key") or item.get("source") or "body")
            errors.append(FieldError(field=key, message=str(item.get("message", exc.detail))))
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or str(exc.detail)
    return problem_response(422, "validation_error", "Invalid input", detail, errors)


_HTTP_CODES = {
    400: ("bad_request", "Bad request"),
    401: ("unauthorized", "Missing or invalid API key"),
    403: ("forbidden", "Not allowed for this API key"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    429: ("rate_limited", "Too many requests"),
}


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    code, title = _HTTP_CODES.get(status, ("http_error", "HTTP error"))
    detail = str(exc.detail) if exc.detail else title
    if status == 400:
        # Bodies that are not valid JSON for the schema: Litestar says 400, the API says 422.
        return problem_response(422, "validation_error", "Invalid input", detail)
    return problem_response(status, code, title, detail, headers=exc.headers)


# SQLSTATE classes meaning "the database cannot serve us right now": 08 connection exception,
# 53 insufficient resources (too many connections, out of memory, disk full), 57P operator
# intervention (admin or crash shutdown, "the database system is starting up", ...); and our
# own time bounds (service/db/session.py): 57014 statement_timeout, 55P03 lock_timeout. The
# driver's client-side command_timeout raises TimeoutError, an OSError, handled below.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "57014", "55P03")
# Class 22, data exception: the database refused a value the request carried (a NUL character
# in text, a number out of range, ...). The request is at fault, not the service.
_INVALID_DATA_SQLSTATES = ("22",)
_CONNECTION_ERROR_NAMES = frozenset(
    {
        "ConnectionDoesNotExistError",
        "InterfaceError",
        "CannotConnectNowError",
        "AdminShutdownError",
        "CrashShutdownError",
        "ConnectionFailureError",
        "TooManyConnectionsError",
        # asyncpg, when the server ends an idle pooled connection and the next query races the
        # close: "cannot switch to state …; another operation is in progress".
        "InternalClientError",
    }
)


def _driver_errors(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, down to the driver's own error.

    SQLAlchemy wraps asyncpg's errors twice: `exc.orig` is the dialect's DB-API adapter
    ("Error", "InterfaceError") and asyncpg's own exception is its `__cause__`; code using
    asyncpg directly raises asyncpg's exceptions unwrapped."""
    chain: list[BaseException] = []
    current: BaseException | None = exc.orig if isinstance(exc, DBAPIError) else exc
    while current is not None and len(chain) < 4:
        chain.append(current)
        current = current.__cause__
    return chain


def _sqlstate_in(exc: BaseException, classes: tuple[str, ...]) -> bool:
    return any(
        isinstance(state := getattr(error, "sqlstate", None), str) and state.startswith(classes)
        for error in _driver_errors(exc)
    )


# Where database code runs: an OSError raised in one of these packages is the network or the
# socket failing under the driver (refused, reset, timed out); one raised anywhere else (a
# zone file name too long for the file system, ...) says nothing about the database.
_DATABASE_PACKAGES = ("asyncpg", "sqlalchemy")


def _raised_by_database_code(exc: BaseException) -> bool:
    return any(
        str(frame.f_globals.get("__name__", "")).partition(".")[0] in _DATABASE_PACKAGES
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def _is_connection_problem(exc: BaseException) -> bool:
    """True when the database is unreachable, restarting or out of connections (→ 503)."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OSError):
        return _raised_by_database_code(exc)
    if any(
        (isinstance(error, OSError) and _raised_by_database_code(error))
        or type(error).__name__ in _CONNECTION_ERROR_NAMES
        for error in _driver_errors(exc)
    ):
        return True
    return _sqlstate_in(exc, _UNAVAILABLE_SQLSTATES)


# What a refused value was, by SQLSTATE, in our words: the driver's message names internals
# (encodings, column types) and is no help to a caller. Values are checked before the
# database; this is the fallback for a check that is missing, logged so that it gets added.
_INVALID_DATA_MESSAGES = {
    "22001": "a text value is too long",
    "22003": "a number is out of the supported range",
    "22007": "a date or time is not valid",
    "22008": "a date or time is out of the supported range",
    "22021": "a text value holds a character that cannot be stored (e.g. a NUL character)",
    "22P05": "a text value holds a character that cannot be stored (e.g. a NUL character)",
}


def _invalid_data_message(exc: BaseException) -> str:
    for error in _driver_errors(exc):
        state = getattr(error, "sqlstate", None)
        if isinstance(state, str) and state in _INVALID_DATA_MESSAGES:
            return _INVALID_DATA_MESSAGES[state]
    return "a value is outside what the service can store"


def _database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    if _sqlstate_in(exc, _INVALID_DATA_SQLSTATES):
        log.warning("value_refused_by_database", path=request.url.path, exc_info=exc)
        return problem_response(
            422,
            "validation_error",
            "Invalid input",
            f"a value in the request cannot be stored: {_invalid_data_message(exc)}",
        )
    if not _is_connection_problem(exc):
        return _unexpected(request, exc)
    log.warning("database_unavailable", path=request.url.path, error=type(exc).__name__)
    return problem_response(
        503,
        "database_unavailable",
        "Database unavailable",
        "The database is not reachable right now; retry shortly.",
        headers={"Retry-After": "1"},
    )


def _pool_timeout(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.warning("db_pool_exhausted", path=request.url.path)
    return problem_response(
        503,
        "overloaded",
        "Service overloaded",
        "No database connection became free in time; retry shortly.",
        headers={"Retry-After": "1"},
    )


def _out_of_range(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """Dates or numbers at the edge of what Python represents (year 1 with a positive offset,
    converted to UTC, ...) overflow in conversions: the input is at fault. Logged with its
    traceback so that a domain can add a precise check naming the field."""
    log.warning("value_out_of_range", path=request.url.path, exc_info=exc)
    return problem_response(
        422,
        "validation_error",
        "Invalid input",
        "a date or number in the request is out of the supported range "
        "(dates: years 0001 to 9999 in UTC)",
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    if _is_connection_problem(exc) or _sqlstate_in(exc, _INVALID_DATA_SQLSTATES):
        return _database_error(request, exc)
    log.exception("unhandled_error", path=request.url.path)
    return problem_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal_error",
        "Internal server error",
        "An unexpected error occurred; it has been logged.",
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ServiceError: _service_error,
    ValidationException: _validation_error,
    NotAuthorizedException: _http_error,
    PermissionDeniedException: _http_error,
    NotFoundException: _http_error,
    HTTPException: _http_error,
    PoolTimeoutError: _pool_timeout,
    OperationalError: _database_error,
    DBAPIError: _database_error,
    OverflowError: _out_of_range,
    Exception: _unexpected,
}

__all__ = [
    "PROBLEM_JSON",
    "Conflict",
    "FieldError",
    "Forbidden",
    "InvalidInput",
    "MediaType",
    "NotFound",
    "PayloadTooLarge",
    "Problem",
    "RateLimited",
    "ServiceError",
    "Unauthorized",
    "Unavailable",
]
