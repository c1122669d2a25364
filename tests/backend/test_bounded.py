"""Times, days and whole numbers are read by the bounded fields, at every endpoint.

A time past year 9999 once in UTC, a day before year 1, an offset beyond 64 bits, a count beyond
its 32-bit column: each was a 500 (issue 13), and is now a 422 naming the field that leaves
every table as it was. A walk over every request schema keeps the fields in use everywhere.
"""

from __future__ import annotations

import uuid

import pytest
from marshmallow import Schema, fields

from backend import bounded
from backend.sync.tables import PUSH_SCHEMAS
from tests.backend.scene import (
    ADMIN,
    AT_HOME,
    BEFORE_YEAR_1,
    COMPLIANCE,
    DAY1,
    NURSE,
    PAST_9999,
    PHARMACIST,
    PHONE,
    PLAN,
    PRE_DOSE,
    PRESCRIBER,
    Scene,
    changed,
    refusal_records,
    row_counts,
)
from tests.factories import World

BAD = "__BAD__"


@pytest.fixture
def scene(world: World) -> Scene:
    return Scene(world)


class Signed(dict):
    """A record the phone signs once the bad value is in it, as a phone with a bad clock would."""


def _with(scene: Scene, value, bad):
    """Return `value` with BAD replaced by `bad`, each Signed record then signed."""
    if value == BAD:
        return bad
    if isinstance(value, list):
        return [_with(scene, item, bad) for item in value]
    if not isinstance(value, dict):
        return value
    filled = {key: _with(scene, item, bad) for key, item in value.items()}
    return scene.signed(filled) if isinstance(value, Signed) else filled


def _dose(scene: Scene, **values) -> dict:
    return {"product_id": scene.ids["product"], "lot": "L1", "expiry": "2028-01-31",
            "quantity_ug": 35_000, "route": "IV", "infusion_started_at": "2026-11-03T15:10Z",
            "infusion_ended_at": "2026-11-03T15:50Z", **values}


def _refused(response, field: str) -> dict:
    assert response.status_code == 422, response.get_data(as_text=True)[:600]
    error = response.json["error"]
    assert error["code"] == "validation_error", error
    named = error["details"]["fields"]
    assert any(name == field or name.startswith(f"{field}.") for name in named), error
    return error


# name, role, method, path, body (BAD marks the time), the field the refusal names
TIMES_IN_BODIES = [
    ("entry occurred_at", PHARMACIST, "POST", "/api/v1/custody/entries",
     lambda s: s.entry(occurred_at=BAD), "occurred_at"),
    ("count counted_at", PHARMACIST, "POST", "/api/v1/custody/counts",
     lambda s: {"holder": "vault", "counted_at": BAD, "counts": []}, "counted_at"),
    ("loss filed_at", PHARMACIST, "POST", f"/api/v1/custody/losses/{uuid.uuid4()}/filings",
     lambda s: {"filing": "dea_notice", "filed_at": BAD}, "filed_at"),
    ("visit start", ADMIN, "POST", "/api/v1/visits", lambda s: {
        "patient_id": s.ids["patient"], "nurse_id": s.ids["nurse"], "scheduled_start": BAD},
     "scheduled_start"),
    ("visit end", ADMIN, "POST", "/api/v1/visits", lambda s: {
        "patient_id": s.ids["patient"], "nurse_id": s.ids["nurse"],
        "scheduled_start": "2026-11-20T15:00Z", "scheduled_end": BAD}, "scheduled_end"),
    ("reschedule", ADMIN, "POST", "/api/v1/visits/{visit}/reschedule",
     lambda s: {"scheduled_start": BAD}, "scheduled_start"),
    ("series", ADMIN, "POST", "/api/v1/plans/{plan}/visits", lambda s: {
        "nurse_id": s.ids["nurse"], "first_start": BAD, "rrule": "FREQ=WEEKLY;COUNT=2"},
     "first_start"),
    ("check-in", PHONE, "POST", "/api/v1/visits/{visit}/check-in",
     lambda s: {**AT_HOME, "occurred_at": BAD}, "occurred_at"),
    ("weight", NURSE, "POST", "/api/v1/patients/{patient}/weights",
     lambda s: {"weight_kg": "70", "measured_at": BAD}, "measured_at"),
    ("pre-dose", PHONE, "POST", "/api/v1/visits/{visit}/pre-dose",
     lambda s: Signed({**PRE_DOSE, "occurred_at": BAD}), "occurred_at"),
    ("dose", PHONE, "POST", "/api/v1/visits/{visit}/dose",
     lambda s: Signed(_dose(s, infusion_ended_at=BAD)), "infusion_ended_at"),
    ("observation", PHONE, "POST", "/api/v1/visits/{visit}/observations",
     lambda s: Signed({"systolic": 120, "diastolic": 80, "occurred_at": BAD}),
     "occurred_at"),
    ("whole session", PHONE, "POST", "/api/v1/visits/{visit}/session", lambda s: {
        "dose": Signed(_dose(s, infusion_started_at=BAD))},
     "dose"),
]
DAYS_IN_BODIES = [
    ("entry expiry", PHARMACIST, "POST", "/api/v1/custody/entries",
     lambda s: s.entry(expiry=BAD), "expiry"),
    ("patient birth", ADMIN, "POST", "/api/v1/patients",
     lambda s: {"mrn": "MRN-NEW", "name": "N", "date_of_birth": BAD}, "date_of_birth"),
    ("plan start", PRESCRIBER, "PUT", "/api/v1/plans/{plan}", lambda s: {
        **PLAN, "product_id": s.ids["product"], "change_reason": "r", "starts_on": BAD},
     "starts_on"),
    ("plan phase", PRESCRIBER, "PUT", "/api/v1/plans/{plan}", lambda s: {
        **PLAN, "product_id": s.ids["product"], "change_reason": "r", "phases": [{
            "name": "induction", "starts_on": BAD, "min_interval_hours": 48,
            "max_per_7_days": 2, "max_per_28_days": 8}]}, "phases"),
]


def _send_with(scene: Scene, connection, role, method, path, body, bad, field) -> None:
    sent = _with(scene, body(scene), bad)
    before = row_counts(connection)
    _refused(scene.send(method, path, role, sent), field)
    assert changed(before, row_counts(connection)) == refusal_records(role, method)


@pytest.mark.parametrize("bad", [PAST_9999, BEFORE_YEAR_1, "2200-01-01T00:00:00Z",
                                 "1899-12-31T23:59:59Z"])
@pytest.mark.parametrize(("role", "method", "path", "body", "field"),
                         [case[1:] for case in TIMES_IN_BODIES],
                         ids=[case[0] for case in TIMES_IN_BODIES])
def test_times_outside_1900_to_2199_are_refused(scene, connection, bad, role, method, path,
                                                 body, field):
    _send_with(scene, connection, role, method, path, body, bad, field)


@pytest.mark.parametrize("bad", ["9999-12-31", "0001-01-01", "2200-01-01"])
@pytest.mark.parametrize(("role", "method", "path", "body", "field"),
                         [case[1:] for case in DAYS_IN_BODIES],
                         ids=[case[0] for case in DAYS_IN_BODIES])
def test_days_outside_1900_to_2199_are_refused(scene, connection, bad, role, method, path,
                                                body, field):
    _send_with(scene, connection, role, method, path, body, bad, field)


TIMES_IN_QUERIES = [
    ("entries", PHARMACIST, "/api/v1/custody/entries", "from"),
    ("visits", ADMIN, "/api/v1/visits", "to"),
    ("audit", COMPLIANCE, "/api/v1/audit-events", "since"),
    ("job runs", ADMIN, "/api/v1/jobs/runs", "since"),
    ("notifications", NURSE, "/api/v1/notifications", "since"),
    ("statement", PHARMACIST, "/api/v1/custody/bags/{nurse}/statement", "from"),
    ("inventory", PHARMACIST, "/api/v1/custody/reports/inventory", "as_of"),
]


@pytest.mark.parametrize("bad", [PAST_9999, BEFORE_YEAR_1])
@pytest.mark.parametrize(("role", "path", "field"), [case[1:] for case in TIMES_IN_QUERIES],
                         ids=[case[0] for case in TIMES_IN_QUERIES])
def test_times_in_queries_are_bounded_too(scene, connection, bad, role, path, field):
    before = row_counts(connection)
    _refused(scene.send("GET", path, role, query={field: bad}), field)
    assert changed(before, row_counts(connection)) == {}


@pytest.mark.parametrize("bad", [PAST_9999, "99999999999999999"])
def test_a_phone_clock_beyond_the_range_is_refused(scene, connection, bad):
    before = row_counts(connection)
    response = scene.send("GET", "/api/v1/sync", PHONE, query={"schema_version": 1},
                          headers={"X-Device-Time": bad})
    _refused(response, "X-Device-Time")
    assert changed(before, row_counts(connection)) == {}


# Whole numbers beyond their column: query strings, then bodies.
INTEGERS_IN_QUERIES = [
    ("audit offset", COMPLIANCE, "/api/v1/audit-events", "offset", {}),
    ("audit limit", COMPLIANCE, "/api/v1/audit-events", "limit", {}),
    ("flags offset", COMPLIANCE, "/api/v1/flags", "offset", {}),
    ("job runs offset", ADMIN, "/api/v1/jobs/runs", "offset", {}),
    ("notifications offset", NURSE, "/api/v1/notifications", "offset", {}),
    ("entries after_seq", PHARMACIST, "/api/v1/custody/entries", "after_seq", {}),
    ("entries limit", PHARMACIST, "/api/v1/custody/entries", "limit", {}),
    ("pull cursor", PHONE, "/api/v1/sync", "last_pulled_at", {"schema_version": 1}),
    ("pull schema", PHONE, "/api/v1/sync", "schema_version", {}),
    ("pull limit", PHONE, "/api/v1/sync", "limit", {"schema_version": 1}),
]


@pytest.mark.parametrize("bad", [2**63, 10**20, -(2**63) - 1])
@pytest.mark.parametrize(("role", "path", "field", "query"),
                         [case[1:] for case in INTEGERS_IN_QUERIES],
                         ids=[case[0] for case in INTEGERS_IN_QUERIES])
def test_integers_beyond_64_bits_in_queries_are_refused(scene, connection, bad, role, path,
                                                        field, query):
    before = row_counts(connection)
    _refused(scene.send("GET", path, role, query={**query, field: bad}), field)
    assert changed(before, row_counts(connection)) == {}


@pytest.mark.parametrize(("path", "query"), [
    ("/api/v1/custody/entries", {"after_seq": 2**31}),
    ("/api/v1/sync", {"schema_version": 2**31}),
])
def test_integers_compared_with_a_32_bit_column_are_bounded_to_it(scene, path, query):
    role = PHONE if path == "/api/v1/sync" else PHARMACIST
    _refused(scene.send("GET", path, role, query=query), next(iter(query)))


def test_a_push_cursor_beyond_64_bits_is_refused_before_the_push_is_logged(scene, connection):
    before = row_counts(connection)
    response = scene.send("POST", "/api/v1/sync", PHONE, {"changes": {}},
                          query={"last_pulled_at": 2**64, "schema_version": 2**40})
    error = _refused(response, "last_pulled_at")
    assert "schema_version" in error["details"]["fields"]
    assert changed(before, row_counts(connection)) == refusal_records(PHONE, "POST")


INTEGERS_IN_BODIES = [
    ("plan max dose", PRESCRIBER, "PUT", "/api/v1/plans/{plan}", lambda s: {
        **PLAN, "product_id": s.ids["product"], "change_reason": "r", "max_dose_ug": BAD},
     "max_dose_ug"),
    ("plan dose per kg", PRESCRIBER, "PUT", "/api/v1/plans/{plan}", lambda s: {
        **PLAN, "product_id": s.ids["product"], "change_reason": "r", "dose_ug_per_kg": BAD},
     "dose_ug_per_kg"),
    ("product strength", PHARMACIST, "POST", "/api/v1/products", lambda s: {
        "name": "Ketamine 1 g/mL", "active_ingredient": "ketamine", "dea_schedule": "III",
        "form": "vial", "ug_per_unit": BAD, "units_per_container": "10",
        "allowed_routes": ["IV"], "home_administration_allowed": True}, "ug_per_unit"),
    ("check-in accuracy", PHONE, "POST", "/api/v1/visits/{visit}/check-in",
     lambda s: {**AT_HOME, "accuracy_m": BAD}, "accuracy_m"),
    ("series duration", ADMIN, "POST", "/api/v1/plans/{plan}/visits", lambda s: {
        "nurse_id": s.ids["nurse"], "first_start": "2026-11-20T15:00Z",
        "rrule": "FREQ=WEEKLY;COUNT=2", "duration_minutes": BAD}, "duration_minutes"),
    ("entry quantity", PHARMACIST, "POST", "/api/v1/custody/entries",
     lambda s: s.entry(quantity_ug=BAD), "quantity_ug"),
    ("count quantity", PHARMACIST, "POST", "/api/v1/custody/counts", lambda s: {
        "holder": "vault", "counted_at": DAY1,
        "counts": [{"product_id": s.ids["product"], "lot": "L1", "quantity_ug": BAD}]},
     "counts"),
    ("observation item", PHONE, "POST", "/api/v1/visits/{visit}/observations",
     lambda s: Signed({"systolic": 120, "diastolic": 80,
                               "cadss_items": {"1": BAD}}), "cadss_items"),
    ("outcome item", PHONE, "POST", "/api/v1/visits/{visit}/outcomes",
     lambda s: Signed({"instrument": "phq9", "items": {"1": BAD}}), "items"),
]


@pytest.mark.parametrize("bad", [2**31, 2**53 - 1, -(2**31) - 1])
@pytest.mark.parametrize(("role", "method", "path", "body", "field"),
                         [case[1:] for case in INTEGERS_IN_BODIES],
                         ids=[case[0] for case in INTEGERS_IN_BODIES])
def test_integers_beyond_their_column_in_bodies_are_refused(scene, connection, bad, role,
                                                            method, path, body, field):
    _send_with(scene, connection, role, method, path, body, bad, field)


# --- Every request schema reads these kinds of value through the bounded fields -------------

UNBOUNDED = (fields.DateTime, fields.Date, fields.Integer, fields.Float, fields.TimeDelta)
BOUNDED = (bounded.DateTime, bounded.Date, bounded.Integer)


def _inner(name: str, field: fields.Field) -> list[tuple[str, fields.Field]]:
    if isinstance(field, fields.Nested):
        return [(f"{name}.{sub}", inner) for sub, inner in field.schema.fields.items()]
    if isinstance(field, fields.List):
        return [(f"{name}[]", field.inner)]
    if isinstance(field, fields.Dict):
        return [(f"{name}{{}}", inner) for inner in (field.key_field, field.value_field)
                if inner is not None]
    return []


def unbounded_fields(schema: Schema, where: str) -> list[str]:
    """Return every loaded field of `schema` (nested included) read by an unbounded field."""
    found = []
    stack = [(f"{where}.{name}", field) for name, field in schema.fields.items()]
    while stack:
        name, field = stack.pop()
        if field.dump_only:
            continue
        if isinstance(field, UNBOUNDED) and not isinstance(field, BOUNDED):
            found.append(name)
        stack.extend(_inner(name, field))
    return found


def request_schemas(app) -> list[tuple[str, Schema]]:
    """Return every schema the API reads a request with, by endpoint, and the sync push's."""
    found = [(f"sync push {table}", schema()) for table, schema in PUSH_SCHEMAS.items()]
    for endpoint, view in app.view_functions.items():
        view_class = getattr(view, "view_class", None)
        for method in getattr(view_class, "methods", None) or ():
            handler = getattr(view_class, method.lower())
            for parameter in getattr(handler, "_apidoc", {}).get("arguments", {}).get(
                    "parameters", []):
                schema = parameter["schema"]
                found.append((f"{method} {endpoint}",
                              schema() if isinstance(schema, type) else schema))
    return found


def test_every_request_schema_reads_times_days_and_integers_bounded(app):
    schemas = request_schemas(app)
    assert len(schemas) > 40
    unbounded = [name for where, schema in schemas for name in unbounded_fields(schema, where)]
    assert unbounded == []


@pytest.mark.parametrize(("field", "value", "expected"), [
    (bounded.DateTime(), "1900-01-01T00:00:00Z", "ok"),
    (bounded.DateTime(), "2199-12-31T23:59:59.999999Z", "ok"),
    (bounded.DateTime(), "2200-01-01T00:00:00Z", "refused"),
    (bounded.DateTime(), "1900-01-01T00:30:00+01:00", "refused"),
    (bounded.DateTime(), PAST_9999, "refused"),
    (bounded.Date(), "2199-12-31", "ok"),
    (bounded.Date(), "1899-12-31", "refused"),
    (bounded.Integer(), 2**31 - 1, "ok"),
    (bounded.Integer(), -(2**31), "ok"),
    (bounded.Integer(), 2**31, "refused"),
    (bounded.Integer(bits=64), 2**63 - 1, "ok"),
    (bounded.Integer(bits=64), 2**63, "refused"),
])
def test_the_bounds_themselves(field, value, expected):
    from marshmallow import ValidationError

    try:
        field.deserialize(value)
        outcome = "ok"
    except ValidationError:
        outcome = "refused"
    assert outcome == expected


def test_the_bounds_are_documented_in_the_openapi(app):
    spec = app.test_client().get("/api/v1/openapi.json").json
    query = {p["name"]: p["schema"] for p in spec["paths"]["/api/v1/audit-events"]["get"][
        "parameters"]}
    assert query["offset"]["maximum"] == 2**63 - 1
    assert query["limit"]["maximum"] == 1000


@pytest.mark.parametrize("bad", [PAST_9999, BEFORE_YEAR_1])
def test_a_pushed_record_with_a_time_out_of_range_is_quarantined_naming_the_field(scene, bad):
    """A pushed record's values are read by its API schema: refused, it is held, not a 500."""
    record = {"id": str(uuid.uuid4()), "visit_id": scene.ids["visit"], "occurred_at": bad,
              "systolic": 120, "diastolic": 80}
    record["signature"] = scene.pharmacy.phone.sign(record)
    response = scene.send("POST", "/api/v1/sync", PHONE, {"changes": {"observations": {
        "created": [record], "updated": [], "deleted": []}}})
    assert response.status_code == 200, response.json
    [held] = response.json["quarantined"]
    assert held["record_id"] == record["id"]
    assert "occurred_at" in held["reason"], held
    assert response.json["applied"] == {}
