"""The OpenAPI document: valid, every operation named, decimals typed alike, examples that load,
every refusal documented in the one error shape; the docs page that shows it, served whole from
this origin."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from openapi_spec_validator import OpenAPIV30SpecValidator

from backend import create_app
from backend.api import (
    DECIMAL_PATTERN,
    SWAGGER_UI_DIR,
    SWAGGER_UI_URL,
    SWAGGER_UI_VERSION,
    operation_id,
)

METHODS = ("get", "post", "put", "patch", "delete")
# Both are JavaScript MIME types to a browser; which one Python names depends on its version.
JAVASCRIPT = {"text/javascript", "application/javascript"}
# Each file the docs page loads → the types it may be served as.
DOCS_ASSETS = {"swagger-ui.css": {"text/css"}, "swagger-ui-standalone-preset.js": JAVASCRIPT,
               "swagger-ui-bundle.js": JAVASCRIPT}


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Flask:
    """Return an app on an in-memory database: the document needs no rows."""
    return create_app({"INSTANCE_PATH": tmp_path_factory.mktemp("openapi"),
                       "DATABASE_URL": "sqlite://", "VIGIL_ENV": "test"})


@pytest.fixture(scope="module")
def spec(app) -> dict:
    """Return the served OpenAPI document."""
    return app.test_client().get("/api/v1/openapi.json").json


def _operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, operation) for path, item in spec["paths"].items()
            for method, operation in item.items() if method in METHODS]


def _properties(node: object):
    if isinstance(node, dict):
        for name, value in node.get("properties", {}).items():
            yield name, value
        for value in node.values():
            yield from _properties(value)
    elif isinstance(node, list):
        for value in node:
            yield from _properties(value)


def test_the_document_is_valid_openapi_3(spec):
    assert [error.message for error in OpenAPIV30SpecValidator(spec).iter_errors()] == []


def test_every_operation_has_its_own_id(spec):
    ids = [operation.get("operationId") for _, _, operation in _operations(spec)]
    assert all(ids) and len(set(ids)) == len(ids)
    assert {"postAuthLogin", "getCustodyBalances", "postVisitsVisitIdCheckIn"} <= set(ids)


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("get", "/api/v1/me", "getMe"),
    ("post", "/api/v1/visits/{visit_id}/check-in", "postVisitsVisitIdCheckIn"),
    ("delete", "/api/v1/patients/{patient_id}/nurses/{nurse_id}",
     "deletePatientsPatientIdNursesNurseId"),
])
def test_an_operation_id_reads_as_its_method_and_path(method, path, expected):
    assert operation_id(method, path) == expected


def test_decimals_are_strings_with_one_pattern_and_numbers_are_numbers(spec):
    decimals = [(name, value) for name, value in _properties(spec)
                if value.get("format") == "decimal"]
    assert decimals, "latitudes, mg/kg and container sizes are decimals"
    assert all(value["type"] == "string" and value["pattern"] == DECIMAL_PATTERN
               for _, value in decimals)
    bounds = [value[key] for _, value in _properties(spec)
              for key in ("minimum", "maximum") if key in value]
    assert bounds and all(isinstance(bound, int | float) for bound in bounds)
    assert re.fullmatch(DECIMAL_PATTERN, "-89.650148") and not re.fullmatch(DECIMAL_PATTERN, "1e3")


def _documented_examples(app: Flask):
    for name, view in sorted(app.view_functions.items()):
        for method in METHODS:
            function = getattr(getattr(view, "view_class", None), method, None)
            for parameter in getattr(function, "_apidoc", {}).get("arguments", {}).get(
                    "parameters", []):
                if "example" in parameter:
                    yield f"{name}.{method}", parameter["schema"], parameter["example"]


def test_the_main_request_bodies_have_examples_that_their_schemas_accept(app, spec):
    examples = list(_documented_examples(app))
    assert {name for name, _, _ in examples} >= {
        "auth.Login.post", "patients.Patients.post", "plans.PatientPlans.post",
        "visits.Visits.post", "custody.Entries.post", "custody.Counts.post",
        "flags.FlagResolution.post", "policy.ThresholdDetail.put"}
    for name, schema, example in examples:
        loaded = schema() if isinstance(schema, type) else schema
        assert loaded.validate(example) == {}, name
    documented = [operation for _, _, operation in _operations(spec)
                  if "example" in operation.get("requestBody", {}).get("content", {}).get(
                      "application/json", {})]
    assert len(documented) == len(examples)


def _error_schema(spec: dict, response: dict) -> dict | None:
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rpartition("/")[2]]
    return response.get("content", {}).get("application/json", {}).get("schema")


def test_every_refusal_is_documented_in_the_one_error_shape(spec):
    error = {"$ref": "#/components/schemas/Error"}
    for path, method, operation in _operations(spec):
        responses = operation["responses"]
        refusals = {code for code in responses if code.startswith("4")}
        assert {"401", "403"} <= refusals or "x-roles" not in operation, (method, path)
        assert "404" in refusals or "{" not in path, (method, path)
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            assert {"400", "413", "422"} <= refusals, (method, path)
        assert all(_error_schema(spec, responses[code]) == error for code in refusals), (
            method, path)


def test_the_docs_page_loads_only_its_own_assets_from_this_origin(app):
    client = app.test_client()
    page = client.get("/api/v1/docs").get_data(as_text=True)
    # No absolute URL at all: the spec, the scripts and the stylesheet are all this origin's.
    assert not re.search(r"[a-z]+://|//", page.replace("<!DOCTYPE html>", ""))
    assert re.findall(r'(?:src|href)="([^"]+)"', page) == [
        f"{SWAGGER_UI_URL}{name}" for name in
        ("swagger-ui.css", "swagger-ui-standalone-preset.js", "swagger-ui-bundle.js")]
    for name, types in DOCS_ASSETS.items():
        with client.get(f"{SWAGGER_UI_URL}{name}") as asset:  # closes the file it streams
            assert asset.status_code == 200, name
            assert asset.mimetype in types, (name, asset.mimetype)
            assert asset.get_data() == (SWAGGER_UI_DIR / name).read_bytes()


@pytest.mark.parametrize("path", [
    "0.0.1/swagger-ui.css", "swagger-ui.css", f"{SWAGGER_UI_VERSION}/nowhere.js",
    f"{SWAGGER_UI_VERSION}/", f"{SWAGGER_UI_VERSION}/%2e%2e/%2e%2e/api.py"])
def test_nothing_but_the_vendored_files_of_this_version_is_served(app, path):
    response = app.test_client().get(f"/api/v1/docs/{path}")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    assert response.headers["Cache-Control"] == "no-store"


def test_the_vendored_files_are_the_version_their_urls_name():
    readme = (SWAGGER_UI_DIR / "README.txt").read_text()
    assert f"swagger-ui-dist {SWAGGER_UI_VERSION}" in readme
    assert f'PACKAGE_VERSION:"{SWAGGER_UI_VERSION}"' in (
        SWAGGER_UI_DIR / "swagger-ui-bundle.js").read_text()
