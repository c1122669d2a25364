"""Domain errors, and the one place that turns any error into Vigil's JSON error shape."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class VigilError(Exception):
    """Base of the errors services raise; each maps to an HTTP status and a stable code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})


class NotFound(VigilError):
    """The object does not exist, or belongs to another organisation."""

    status = 404
    code = "not_found"


class Unauthenticated(VigilError):
    """No valid credentials came with the request."""

    status = 401
    code = "unauthenticated"


class InvalidCredentials(Unauthenticated):
    """The login or refresh credentials are wrong."""

    code = "invalid_credentials"


class Forbidden(VigilError):
    """The caller's role may not perform the action."""

    status = 403
    code = "forbidden"


class Conflict(VigilError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"


class LockedOut(VigilError):
    """Too many failed passwords (logins or witnesses' confirmations); retry later."""

    status = 429
    code = "locked_out"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"retry_after": retry_after})
        self.retry_after = retry_after


class InvalidField(VigilError):
    """One field holds a value the domain refuses."""

    status = 422
    code = "validation_error"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", {"fields": {field: [problem]}})


class SignatureInvalid(VigilError):
    """A device signature does not verify."""

    status = 422
    code = "signature_invalid"


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict:
    """Return the one JSON error shape."""
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


def _respond(status: int, code: str, message: str, details: Mapping[str, Any] | None = None,
             headers: Mapping[str, str] | None = None) -> Response:
    response = jsonify(error_body(code, message, details))
    response.status_code = status
    response.headers.update(headers or {})
    return response


HTTP_CODES = {
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
    415: "unsupported_media_type", 422: "validation_error", 429: "too_many_requests",
}


def _webargs_details(messages: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten webargs' {location: {field: [msgs]}} into {"fields": ..., "location": ...}."""
    location, fields = next(iter(messages.items()))
    if isinstance(fields, Mapping):
        return {"location": location, "fields": dict(fields)}
    return {"location": location, "problems": list(fields)}


def handle_http_exception(error: HTTPException) -> Response:
    """Render a werkzeug/webargs HTTP error in Vigil's shape."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if status == 400 and messages and "json" in messages and not isinstance(
            messages["json"], Mapping):
        return _respond(400, "malformed_json", "The request body is not valid JSON.",
                        {"location": "json"})
    if messages:
        details = _webargs_details(messages)
        names = ", ".join(sorted(details.get("fields", {}))) or details["location"]
        return _respond(status, "validation_error", f"Invalid input: {names}.", details)
    if status == 413:
        return _respond(413, "payload_too_large", "The request body is larger than allowed.")
    code = HTTP_CODES.get(status, "error")
    # Keep the headers the status requires, such as Allow on a 405 (RFC 9110).
    headers = {name: value for name, value in error.get_headers() if name != "Content-Type"}
    headers.update(data.get("headers") or {})
    return _respond(status, code, error.description or error.name, headers=headers)


def handle_vigil_error(error: VigilError) -> Response:
    """Render a domain error."""
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, LockedOut) else None
    if isinstance(error, Unauthenticated):
        headers = {"WWW-Authenticate": 'Bearer realm="vigil"'}
    return _respond(error.status, error.code, error.message, error.details, headers)


# A key already taken: PostgreSQL's unique_violation; SQLite names the constraint kind.
UNIQUE_SQLSTATE = "23505"
SQLITE_UNIQUE = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
# Contention that a retry can get past: a lock not granted in time, a deadlock victim, a
# serialization failure (PostgreSQL), or SQLite's write lock still held after the busy timeout.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
SQLITE_TRANSIENT_PREFIXES = ("SQLITE_BUSY", "SQLITE_LOCKED")
RETRY_AFTER_SECONDS = 1


def is_unique_violation(error: DBAPIError) -> bool:
    """Tell whether the database refused a row because its unique key is already taken."""
    return (getattr(error.orig, "sqlstate", None) == UNIQUE_SQLSTATE
            or getattr(error.orig, "sqlite_errorname", None) in SQLITE_UNIQUE)


def is_transient(error: DBAPIError) -> bool:
    """Tell whether the database gave up on contention that a retry can get past."""
    name = getattr(error.orig, "sqlite_errorname", None) or ""
    return (getattr(error.orig, "sqlstate", None) in TRANSIENT_SQLSTATES
            or name.startswith(SQLITE_TRANSIENT_PREFIXES))


def _constraint(error: DBAPIError) -> str:
    """Name the constraint (PostgreSQL) or its columns (SQLite), never the refused values."""
    diag = getattr(error.orig, "diag", None)
    return getattr(diag, "constraint_name", None) or str(error.orig).partition("\n")[0]


def handle_integrity_error(error: IntegrityError) -> Response:
    """Answer 409 when the key is taken (a client-made id in use, or a racing request took it
    first); 500 for other breaches."""
    if not is_unique_violation(error):
        return handle_unexpected(error)
    # A client-made id already in use (maybe another organisation's, which is not named), or
    # two requests raced with one id: either way this transaction changed nothing.
    log.warning("key taken: %s", _constraint(error))
    return _respond(409, "conflict", "A record with the same key already exists, or another "
                    "request stored one at the same moment; this one changed nothing. Read or "
                    "resend it with another id.")


def handle_operational_error(error: OperationalError) -> Response:
    """Answer 503 with Retry-After when the database gave up on contention; else 500."""
    if not is_transient(error):
        return handle_unexpected(error)
    log.warning("database busy: %s", str(error.orig).partition("\n")[0])
    return _respond(503, "database_busy", "The database is busy; nothing was changed. Retry.",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def handle_unexpected(error: Exception) -> Response:
    """Log an unexpected error and answer 500 without leaking its details."""
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    log.exception("unhandled error", exc_info=error)
    return _respond(500, "internal_error", "Internal server error.")


def init_app(app: Flask) -> None:
    """Register the error handlers on `app`."""
    app.register_error_handler(VigilError, handle_vigil_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    app.register_error_handler(OperationalError, handle_operational_error)
    app.register_error_handler(Exception, handle_unexpected)
