"""Log lines as JSON (or text for a terminal), one per request and per job run, without PHI.

Every line carries its time (ISO, UTC), level, logger and message, and the context it was
written in: the request's id and caller, or the job and slot being run. What is never logged,
because it can carry PHI: request paths and query strings (a line names the route template),
request and response bodies, SQL parameters (the engine hides them), and the text of
exceptions — a driver's message can quote a row ("Failing row contains …") and a ValueError
its input — so an exception is logged by its type, its SQLSTATE and where it was raised.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, TextIO

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter
from werkzeug.serving import WSGIRequestHandler

REQUEST_ID_HEADER = "X-Request-Id"
# A proxy's or client's id is kept only when it is a plain token: anything else (newlines,
# quotes, a PHI-laden string) would be written into every line of the request.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# The fields a text line appends after its message; a JSON line carries every field.
TEXT_FIELDS = ("request_id", "user_id", "organisation_id")

request_log = logging.getLogger("backend.requests")
_job_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "vigil_log_context", default=MappingProxyType({}))

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def exception_outline(exc_info: ExcInfo) -> str:
    """Describe an exception and its causes by type, SQLSTATE and frames, never by their text."""
    parts: list[str] = []
    error: BaseException | None = exc_info[1]
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        kind = type(error)
        sqlstate = getattr(getattr(error, "orig", None) or error, "sqlstate", None)
        parts.append(f"{kind.__module__}.{kind.__qualname__}"
                     + (f" (SQLSTATE {sqlstate})" if sqlstate else "") + "\n"
                     + "".join(traceback.format_tb(error.__traceback__)))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return "caused by ".join(parts).rstrip("\n")


def _iso_time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonLines(JsonFormatter):
    """Format a record as one JSON object: time, level, logger, message and its context."""

    def __init__(self) -> None:
        super().__init__("{asctime}{levelname}{name}{message}", style="{", rename_fields={
            "asctime": "time", "levelname": "level", "name": "logger"})

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """Return the record's time in ISO 8601, UTC, to the millisecond."""
        return _iso_time(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802
        """Return the exception's outline, without its text."""
        return exception_outline(ei)


class TextLines(logging.Formatter):
    """Format a record as one readable line (and an exception's outline) for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """Return `time level logger: message key=value…`, the exception outlined below."""
        context = "".join(f" {name}={getattr(record, name)}" for name in TEXT_FIELDS
                          if getattr(record, name, None) is not None)
        line = f"{_iso_time(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            return f"{line}{context}\n{exception_outline(record.exc_info)}"
        return line + context


class ContextFilter(logging.Filter):
    """Add the request's id and caller, or the job's fields, to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the current context to `record`; keep it."""
        for name, value in current_context().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def current_context() -> dict[str, Any]:
    """Return the fields of the job or request being served."""
    fields = dict(_job_context.get())
    if has_request_context() and "request_id" in g:
        fields["request_id"] = g.request_id
        caller = g.get("caller")
        if caller is not None:
            fields["user_id"] = str(caller.user_id)
            fields["organisation_id"] = str(caller.organisation_id)
    return fields


@contextlib.contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Add `fields` to every line logged inside the block (a job's name and slot)."""
    token = _job_context.set({**_job_context.get(), **fields})
    try:
        yield
    finally:
        _job_context.reset(token)


class VigilHandler(logging.StreamHandler):
    """The handler Vigil installs on the root logger; replaced, not doubled, on reconfiguring."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._own_stream = stream
        super().__init__(stream)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        """Return the given stream, else whatever `sys.stderr` is now (test runners swap it)."""
        return self._own_stream or sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        # StreamHandler's constructor assigns sys.stderr here: the getter looks it up instead.
        pass


def handler(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """Return a handler writing `log_format` lines, with their context, to `stream` (stderr)."""
    made = VigilHandler(stream)
    made.setFormatter(JsonLines() if log_format == "json" else TextLines())
    made.addFilter(ContextFilter())
    return made


def log_format_of(config: dict[str, Any]) -> str:
    """Return the configured format: `LOG_FORMAT`, else JSON in production and text elsewhere."""
    return config["LOG_FORMAT"] or ("json" if config["VIGIL_ENV"] == "production" else "text")


def configure(log_format: str, level: str) -> None:
    """Send every logger's records at `level` and above to stderr as `log_format` lines."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, VigilHandler)]:
        root.removeHandler(old)
    root.addHandler(handler(log_format))
    root.setLevel(level)
    # Alembic announces each of its plugins whenever a worker reads the migrations' heads.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(root.level, logging.WARNING))


def _start_request() -> None:
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = offered if SAFE_REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    if "request_id" not in g:
        # A hook before ours refused the request before it started.
        _start_request()
    response.headers[REQUEST_ID_HEADER] = g.request_id
    # The route's template, never the path: paths and query strings carry ids and searches.
    route = request.url_rule.rule if request.url_rule is not None else None
    duration_ms = round((time.perf_counter() - g.request_started) * 1000, 1)
    request_log.info("%s %s %s %.1f ms", request.method, route or "(no route)",
                     response.status_code, duration_ms, extra={
                         "route": route, "method": request.method,
                         "status": response.status_code, "duration_ms": duration_ms})
    return response


def init_app(app: Flask) -> None:
    """Configure logging from `app`'s settings and log each request in one line, with its id."""
    configure(log_format_of(app.config), app.config["LOG_LEVEL"])
    # Registered before the other hooks: the id exists for their lines, and this after-request
    # hook runs last, timing the others too.
    app.before_request(_start_request)
    app.after_request(_finish_request)


class QuietRequestHandler(WSGIRequestHandler):
    """The development server's handler without its access line, which shows the raw path."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log nothing: the app logs each request by its route."""
