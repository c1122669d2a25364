"""The gate a client's input passes before any schema reads it: JSON bodies, queries, headers.

Whatever Vigil could neither store nor reckon with is refused here, once for every endpoint and
for the sync push, as 422 `validation_error` naming where it is (`details.fields`, by JSON path
such as `witnesses.0.password`):

- text holding a NUL character or a lone surrogate (`\\ud800`): PostgreSQL text and UTF-8 cannot
  hold them;
- numbers that are not finite (`NaN`, `Infinity`, `1e400`), and integers beyond ±(2^53 − 1):
  I-JSON (RFC 7493 §2.2), what a phone's JavaScript holds exactly and canonical JSON can sign;
- JSON nested deeper than `MAX_DEPTH` levels.

A body that is not JSON at all is 400 `malformed_json`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any

import marshmallow as ma
from flask import Flask
from flask import Request as FlaskRequest
from webargs.flaskparser import FlaskParser, is_json_request

from backend.errors import VigilError

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1
# Enough to name every bad value of an ordinary body, few enough to keep the answer small.
MAX_NAMED = 20
# Longer digit strings are beyond MAX_SAFE_INTEGER anyway; int() would refuse past 4,300.
MAX_INTEGER_DIGITS = 20
SURROGATE = re.compile("[\ud800-\udfff]")
DEEPER = f"nested deeper than {MAX_DEPTH} levels"
NOT_FINITE = "not a finite number"
BEYOND = f"an integer beyond ±{MAX_SAFE_INTEGER} (2^53 − 1)"


class RefusedInput(VigilError):
    """Input Vigil cannot hold, each place it was found named as a field."""

    status = 422
    code = "validation_error"

    def __init__(self, location: str, problems: Mapping[str, str]) -> None:
        super().__init__(f"Invalid input: {', '.join(problems)}.", {
            "location": location, "fields": {name: [problem] for name, problem in
                                             problems.items()}})
        self.problems = dict(problems)


class MalformedJson(VigilError):
    """The body is not JSON."""

    status = 400
    code = "malformed_json"

    def __init__(self) -> None:
        super().__init__("The request body is not valid JSON.", {"location": "json"})


class _Beyond:
    """An integer with more digits than any integer Vigil takes, left unconverted."""


_BEYOND = _Beyond()
# What only a document that may hold refused text contains: an escape (a NUL or a lone
# surrogate is written `\u0000`, `\ud800`), a raw NUL, or a surrogate's UTF-8 bytes, which
# `json.loads` decodes from bytes with surrogatepass.
SUSPECT_BYTES = re.compile(rb"\\u|\x00|\xed[\xa0-\xbf]")
SUSPECT_TEXT = re.compile(r"\\u|\x00|[\ud800-\udfff]")


class _Numbers:
    """The decoder's number hooks, noting whether any number it read would be refused."""

    def __init__(self) -> None:
        self.suspect = False

    def integer(self, digits: str) -> int | _Beyond:
        """Return an integer, or _BEYOND for one too long to convert."""
        if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
            self.suspect = True
            return _BEYOND
        value = int(digits)
        self.suspect |= abs(value) > MAX_SAFE_INTEGER
        return value

    def decimal(self, digits: str) -> float:
        """Return a float, noting one too large to be finite (`1e400`)."""
        value = float(digits)
        self.suspect |= not math.isfinite(value)
        return value

    def constant(self, name: str) -> float:
        """Return NaN or an infinity, which are always refused."""
        self.suspect = True
        return float(name)


def loads(document: bytes | str, root: str = "") -> Any:
    """Decode a JSON document a client sent, or refuse it; `root` prefixes the named paths.

    Raise `json.JSONDecodeError` (a ValueError) when it is not JSON at all.
    """
    numbers = _Numbers()
    try:
        decoded = json.loads(document, parse_int=numbers.integer, parse_float=numbers.decimal,
                             parse_constant=numbers.constant)
    except RecursionError:
        # Python gives up near a thousand levels, before any path can be walked.
        raise RefusedInput("json", {root or "body": DEEPER}) from None
    # Walking every value costs more than decoding it, so only a document that may hold
    # something refused is walked: the number hooks and one scan of the text tell which.
    suspect = (numbers.suspect or _may_hold_refused_text(document)
               or _deeper_than(document, decoded))
    if suspect and (problems := refusals(decoded, root)):
        raise RefusedInput("json", problems)
    return decoded


def _may_hold_refused_text(document: bytes | str) -> bool:
    pattern = SUSPECT_TEXT if isinstance(document, str) else SUSPECT_BYTES
    return pattern.search(document) is not None


def _deeper_than(document: bytes | str, decoded: Any) -> bool:
    """Tell whether `decoded` nests containers more than MAX_DEPTH levels deep."""
    brackets = (b"[", b"{") if isinstance(document, bytes) else ("[", "{")
    if document.count(brackets[0]) + document.count(brackets[1]) <= MAX_DEPTH:
        # Fewer opening brackets in the whole text, strings included, than levels allowed.
        return False
    level = [decoded] if isinstance(decoded, dict | list) else []
    for _ in range(MAX_DEPTH):
        level = [child for value in level
                 for child in (value.values() if isinstance(value, dict) else value)
                 if isinstance(child, dict | list)]
        if not level:
            return False
    return True


def text_problem(text: str) -> str | None:
    """Say why `text` cannot be stored, or return None."""
    if "\x00" in text:
        return "contains a NUL character"
    if SURROGATE.search(text):
        return "contains a lone surrogate, which is not UTF-8"
    return None


def refusals(document: Any, root: str = "") -> dict[str, str]:
    """Return what `document` holds that Vigil refuses, by JSON path, in document order."""
    problems: dict[str, str] = {}
    start: tuple[str | int, ...] = (root,) if root else ()
    stack: list[tuple[tuple[str | int, ...], Any]] = [(start, document)]
    while stack and len(problems) < MAX_NAMED:
        path, value = stack.pop()
        for where, problem in _value_problems(path, value, len(path) - len(start)):
            problems.setdefault(_name(where), problem)
        if isinstance(value, dict | list) and len(path) - len(start) < MAX_DEPTH:
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend(reversed([((*path, key), item) for key, item in items]))
    return problems


def _value_problems(path: tuple, value: Any, depth: int) -> Iterable[tuple[tuple, str]]:
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        yield path, DEEPER
    elif isinstance(value, dict):
        yield from (((*path, key), f"its name {problem}") for key in value
                    if (problem := text_problem(key)))
    elif isinstance(value, str) and (problem := text_problem(value)):
        yield path, problem
    elif isinstance(value, float) and not math.isfinite(value):
        yield path, NOT_FINITE
    elif value is _BEYOND or (type(value) is int and abs(value) > MAX_SAFE_INTEGER):
        yield path, BEYOND


def _name(path: tuple[str | int, ...]) -> str:
    """Return a path as `a.b.0`, a refused name's unstorable characters escaped."""
    return ".".join(_printable(str(part)) for part in path) or "body"


def _printable(part: str) -> str:
    return part if text_problem(part) is None else part.encode(
        "unicode_escape", "backslashreplace").decode("ascii")


def check_text(location: str, pairs: Iterable[tuple[str, str]]) -> None:
    """Refuse query or header values (and names) that text columns cannot hold."""
    problems = {_printable(name): problem for name, value in pairs
                if (problem := text_problem(name) or text_problem(value))}
    if problems:
        raise RefusedInput(location, problems)


# What a request decodes its body with (`request.get_json()`), in the shape Flask expects.
GATE = SimpleNamespace(loads=loads, dumps=json.dumps)


class Request(FlaskRequest):
    """A request whose JSON body is decoded through the gate, once, for the parser and view."""

    @property
    def json_module(self) -> Any:
        """Return the gate: the body is decoded by `loads` (and kept) whatever the app's JSON."""
        return GATE

    @json_module.setter
    def json_module(self, _provider: Any) -> None:
        # Flask hands each request the app's JSON provider; a request's body keeps the gate.
        pass

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        """Answer a body that is not JSON with 400 `malformed_json`."""
        if e is None:
            return super().on_json_loading_failed(e)
        raise MalformedJson from e


class GatedParser(FlaskParser):
    """A webargs parser that reads bodies, query strings and headers through the gate."""

    def _raw_load_json(self, req):
        if not is_json_request(req) or not req.get_data(cache=True):
            # As webargs: an empty body is no body, and the schema names what it lacks.
            return ma.missing
        # Once: a view that reads request.get_json() too gets the same value.
        return req.get_json()

    def load_querystring(self, req, schema):
        """Return the query string, refusing text a column cannot hold."""
        check_text("query", req.args.items(multi=True))
        return super().load_querystring(req, schema)

    def load_headers(self, req, schema):
        """Return the headers, refusing text a column cannot hold in those the schema reads."""
        names = {(field.data_key or name).lower() for name, field in schema.fields.items()}
        check_text("headers", ((name, value) for name, value in req.headers.items()
                               if name.lower() in names))
        return super().load_headers(req, schema)


def init_app(app: Flask) -> None:
    """Make every request of `app` read its JSON body through the gate, once."""
    app.request_class = Request
