"""The flask-smorest API, its OpenAPI metadata, the strict Blueprint every feature uses, and the
docs page's Swagger UI, served from this origin."""

from __future__ import annotations

import re
from pathlib import Path

import marshmallow as ma
from apispec import BasePlugin
from flask import Flask, Response, abort, send_from_directory
from flask_smorest import Api as SmorestApi
from flask_smorest import Blueprint as SmorestBlueprint
from webargs.flaskparser import FlaskParser

from backend import errors
from backend.untrusted import GatedParser

DESCRIPTION = """\
Vigil: the backend for home administration of ketamine by visiting nurses — visits, controlled
substance custody, monitoring, and safeguards against misuse and diversion.

**Authentication.** `POST /api/v1/auth/login` returns an access token (at most 15 minutes) and a
rotating refresh token. Send `Authorization: Bearer <access_token>` on every other call.

**Errors.** Every error has one shape:
`{"error": {"code": "...", "message": "...", "details": {...}}}`. Validation errors list each
field under `details.fields`. Unknown fields are refused. Bodies over the configured limit get 413.
Objects of another organisation answer 404. A refused request changes nothing (it is rolled back
whole; only its audit row is kept). Ids made by the client are safe to retry: the same record again
answers as the first time; a different record under a used id is 409 `conflict`; a database still
busy after the wait is 503 `database_busy` with `Retry-After`.
"""


DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"

# The docs page's Swagger UI is vendored (its README.txt says from where) and served from here:
# the page needs no network. The version leads the assets' path, so a browser may keep them a
# year: an upgrade changes their URLs.
SWAGGER_UI_VERSION = "5.36.0"
SWAGGER_UI_DIR = Path(__file__).parent / "static" / "vendor" / "swagger-ui"
SWAGGER_UI_URL = f"/api/v1/docs/{SWAGGER_UI_VERSION}/"
YEAR = 365 * 24 * 60 * 60


class StrictParser(GatedParser):
    """Refuse unknown fields in every location a request can carry them."""

    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "querystring": ma.RAISE, "query": ma.RAISE}


class ErrorDetailSchema(ma.Schema):
    """Document the error body."""

    code = ma.fields.String(required=True, metadata={
        "description": "Stable machine-readable error code."})
    message = ma.fields.String(required=True, metadata={
        "description": "What went wrong, for a person."})
    details = ma.fields.Dict(required=True, metadata={
        "description": "Fields and values behind the error."})


class ErrorSchema(ma.Schema):
    """Document Vigil's one error shape."""

    error = ma.fields.Nested(ErrorDetailSchema, required=True)


def error_response(description: str) -> dict:
    """Return an OpenAPI response in Vigil's one error shape, for `Blueprint.doc`."""
    return {"description": description, "content": {"application/json": {"schema": ErrorSchema}}}


MALFORMED_JSON = "`malformed_json`: the body is not JSON."
PAYLOAD_TOO_LARGE = "`payload_too_large`: the body is larger than allowed."
NOT_FOUND = ("`not_found`: no such object in the caller's organisation (for a nurse, another "
             "nurse's visit or a patient not assigned to her).")


class Blueprint(SmorestBlueprint):
    """A flask-smorest Blueprint whose arguments refuse unknown fields, refusals documented."""

    ARGUMENTS_PARSER = StrictParser()

    def refusal(self, status: int, description: str):
        """Document an error answer of the view: its status and the codes it carries."""
        return self.alt_response(status, schema=ErrorSchema, description=description)

    def arguments(self, schema, *, location: str = "json", **kwargs):
        """Read the view's arguments; a JSON body can also be malformed (400) or too large."""
        read = super().arguments(schema, location=location, **kwargs)
        if location != "json":
            return read

        def documented(view):
            return self.refusal(400, MALFORMED_JSON)(
                self.refusal(413, PAYLOAD_TOO_LARGE)(read(view)))

        return documented

    def route(self, rule: str, **options):
        """Register a view; each method of one whose path names an object also answers 404."""
        register = super().route(rule, **options)
        if "<" not in rule:
            return register

        def documented(view):
            # Outermost, so a view's own 404 description, if it has one, wins.
            for method in view.methods:
                name = method.lower()
                setattr(view, name, self.refusal(404, NOT_FOUND)(getattr(view, name)))
            return register(view)

        return documented


class OperationIds(BasePlugin):
    """Give every operation a stable `operationId` made of its method and path."""

    def operation_helper(self, path: str | None = None, operations: dict | None = None,
                         **_kwargs: object) -> None:
        """Name each operation that has no id yet, e.g. `getCustodyEntriesEntryId`."""
        for method, operation in (operations or {}).items():
            operation.setdefault("operationId", operation_id(method, path or ""))


def operation_id(method: str, path: str) -> str:
    """Return `method` and the words of `path` in camel case: `POST /a/{b_id}` → `postABId`."""
    words = re.findall(r"[A-Za-z0-9]+", path.removeprefix("/api/v1"))
    return method.lower() + "".join(word[:1].upper() + word[1:] for word in words)


def decimal_pattern(_converter: object, field: ma.fields.Field, **_kwargs: object) -> dict:
    """Document decimals, which travel as strings so no amount is rounded, with their pattern."""
    return {"pattern": DECIMAL_PATTERN} if isinstance(field, ma.fields.Decimal) else {}


class Api(SmorestApi):
    """flask-smorest Api that renders errors in Vigil's shape."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error):
        """Render HTTP errors through Vigil's single error handler."""
        return errors.handle_http_exception(error)


def swagger_ui_asset(filename: str) -> Response:
    """Send a vendored Swagger UI file named `<version>/<name>`, cacheable for a year."""
    version, _, name = filename.partition("/")
    if version != SWAGGER_UI_VERSION:
        abort(404)
    # No PHI, and this URL always names these bytes: any cache may keep them.
    response = send_from_directory(SWAGGER_UI_DIR, name, max_age=YEAR)
    response.cache_control.immutable = True
    return response


def init_app(app: Flask, blueprints: list[SmorestBlueprint]) -> Api:
    """Create the API on `app`, register `blueprints` and the bearer security scheme."""
    app.config.update(
        API_TITLE="Vigil",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL=SWAGGER_UI_URL,
        API_SPEC_OPTIONS={
            "info": {"description": DESCRIPTION},
            "security": [{"bearerAuth": []}],
            "components": {"securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        },
    )
    api = Api(app, spec_kwargs={"extra_plugins": [OperationIds()]})
    app.add_url_rule("/api/v1/docs/<path:filename>", "swagger_ui_asset", swagger_ui_asset)
    # Decimals are strings on the wire (exact, never a float): say so, with their pattern; their
    # bounds then appear as `x-minimum`/`x-maximum`, which a string schema may carry.
    api.register_field(ma.fields.Decimal, "string", "decimal")
    api.ma_plugin.converter.add_attribute_function(decimal_pattern)
    for blueprint in blueprints:
        api.register_blueprint(blueprint, url_prefix=f"/api/v1{blueprint.url_prefix or ''}")
    return api
