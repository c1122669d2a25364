"""The input gate: text a column cannot hold, numbers that are not numbers, JSON too deep.

Each was a 500 somewhere (issue 13). Each class is sent to the endpoints that read it — REST
bodies, query strings, headers and the sync push — and must come back 422 in the one error
shape naming where it was, leaving every table as it was but for what a refusal keeps.
"""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend import untrusted
from tests.backend.scene import (
    ADMIN,
    AT_HOME,
    COMPLIANCE,
    DAY1,
    DISCHARGE,
    NOBODY,
    NURSE,
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
from tests.factories import PASSWORD, SUPPLIER, Phone, World

BAD = "__BAD__"
NUL, SURROGATE = "a\x00b", "a\ud800b"


@pytest.fixture
def scene(world: World) -> Scene:
    return Scene(world)


def _with(value, bad):
    """Return `value` with every BAD placeholder replaced by `bad`."""
    if value == BAD:
        return bad
    if isinstance(value, dict):
        return {_with(k, bad): _with(v, bad) for k, v in value.items()}
    if isinstance(value, list):
        return [_with(item, bad) for item in value]
    return value


def _dose(scene: Scene, **values) -> dict:
    return {"product_id": scene.ids["product"], "lot": "L1", "expiry": "2028-01-31",
            "quantity_ug": 35_000, "route": "IV", "infusion_started_at": "2026-11-03T15:10Z",
            "infusion_ended_at": "2026-11-03T15:50Z", **values}


def _pushed(scene: Scene, table: str, **values) -> dict:
    record = {"id": str(uuid.uuid4()), "visit_id": scene.ids["visit"], **values}
    return {"changes": {table: {"created": [{**record, "signature": "AAAA"}], "updated": [],
                                "deleted": []}}}


# name, role, method, path, body (BAD marks the text), the field the refusal names
TEXT_IN_BODIES = [
    ("login org", NOBODY, "POST", "/api/v1/auth/login",
     lambda s: {"org": BAD, "username": "u", "password": "p"}, "org"),
    ("login username", NOBODY, "POST", "/api/v1/auth/login",
     lambda s: {"org": "demo", "username": BAD, "password": "p"}, "username"),
    ("refresh token", NOBODY, "POST", "/api/v1/auth/refresh",
     lambda s: {"refresh_token": BAD}, "refresh_token"),
    ("user", ADMIN, "POST", "/api/v1/users", lambda s: {
        "username": "new-user", "display_name": BAD, "role": "nurse",
        "password": "a-long-password"}, "display_name"),
    ("device label", NURSE, "POST", "/api/v1/devices",
     lambda s: {"public_key": Phone.new().public_key_b64(), "label": BAD}, "label"),
    ("patient notes", ADMIN, "POST", "/api/v1/patients", lambda s: {
        "mrn": "MRN-NEW", "name": "N", "date_of_birth": "1970-01-01", "notes": BAD}, "notes"),
    ("patient address", ADMIN, "PATCH", "/api/v1/patients/{patient}",
     lambda s: {"address": BAD}, "address"),
    ("product", PHARMACIST, "POST", "/api/v1/products", lambda s: {
        "name": BAD, "active_ingredient": "ketamine", "dea_schedule": "III", "form": "vial",
        "ug_per_unit": 50_000, "units_per_container": "10", "allowed_routes": ["IV"],
        "home_administration_allowed": True}, "name"),
    ("plan change reason", PRESCRIBER, "PUT", "/api/v1/plans/{plan}",
     lambda s: {**PLAN, "product_id": s.ids["product"], "change_reason": BAD}, "change_reason"),
    ("plan threshold name", PRESCRIBER, "PUT", "/api/v1/plans/{plan}", lambda s: {
        **PLAN, "product_id": s.ids["product"], "change_reason": "r",
        "policy_overrides": {BAD: "72"}}, "policy_overrides.{bad}"),
    ("visit override reason", PRESCRIBER, "POST", "/api/v1/visits", lambda s: {
        "patient_id": s.ids["patient"], "nurse_id": s.ids["nurse"],
        "scheduled_start": "2026-11-20T15:00:00Z", "override_reason": BAD}, "override_reason"),
    ("visit cancel", ADMIN, "POST", "/api/v1/visits/{visit}/cancel",
     lambda s: {"reason": BAD}, "reason"),
    ("series rule", ADMIN, "POST", "/api/v1/plans/{plan}/visits", lambda s: {
        "nurse_id": s.ids["nurse"], "first_start": "2026-11-20T15:00:00Z",
        "rrule": BAD}, "rrule"),
    ("check-in reason", PHONE, "POST", "/api/v1/visits/{visit}/check-in",
     lambda s: {**AT_HOME, "reason": BAD}, "reason"),
    ("entry lot", PHARMACIST, "POST", "/api/v1/custody/entries",
     lambda s: s.entry(lot=BAD), "lot"),
    ("entry details", PHARMACIST, "POST", "/api/v1/custody/entries",
     lambda s: s.entry(details={**SUPPLIER, "invoice": BAD}), "details.invoice"),
    ("witness password", PHONE, "POST", "/api/v1/visits/{visit}/waste", lambda s: {
        **s.signed({"product_id": s.ids["product"], "lot": "L1", "expiry": "2028-01-31",
                    "quantity_ug": 15_000}),
        "witnesses": [{"user_id": s.ids["nurse"], "password": BAD}]}, "witnesses.0.password"),
    ("count reason", PHARMACIST, "POST", "/api/v1/custody/counts", lambda s: {
        "holder": "vault", "counted_at": DAY1, "counts": [], "reasons": {"L1": BAD}},
     "reasons.L1"),
    ("pre-dose reason", PHONE, "POST", "/api/v1/visits/{visit}/pre-dose",
     lambda s: s.signed({**PRE_DOSE, "decision": "no_go", "decision_reason": BAD}),
     "decision_reason"),
    ("dose lot", PHONE, "POST", "/api/v1/visits/{visit}/dose",
     lambda s: s.signed(_dose(s, lot=BAD)), "lot"),
    ("adverse events", PHONE, "POST", "/api/v1/visits/{visit}/discharge", lambda s: s.signed(
        {**DISCHARGE, "adverse_event_category": "other", "adverse_events": BAD}),
     "adverse_events"),
    ("whole session", PHONE, "POST", "/api/v1/visits/{visit}/session", lambda s: {
        "pre_dose": s.signed({**PRE_DOSE, "bp_justification": BAD})},
     "pre_dose.bp_justification"),
    ("flag note", COMPLIANCE, "POST", f"/api/v1/flags/{uuid.uuid4()}/notes",
     lambda s: {"note": BAD}, "note"),
    ("policy value", ADMIN, "PUT", "/api/v1/policy/evv_radius_m",
     lambda s: {"value": BAD}, "value"),
    ("rule mode", ADMIN, "PATCH", "/api/v1/safeguards/rules/monitoring.early_discharge",
     lambda s: {"mode": BAD}, "mode"),
    ("pushed dose lot", PHONE, "POST", "/api/v1/sync",
     lambda s: _pushed(s, "doses", **_dose(s, lot=BAD), occurred_at=DAY1),
     "changes.doses.created.0.lot"),
]


def _refused(response, field: str, location: str) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)[:600]
    error = response.json["error"]
    assert error["code"] == "validation_error", error
    assert error["details"]["location"] == location, error
    assert field in error["details"]["fields"], error


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(("role", "method", "path", "body", "field"),
                         [case[1:] for case in TEXT_IN_BODIES],
                         ids=[case[0] for case in TEXT_IN_BODIES])
def test_text_no_column_can_hold_is_refused_naming_the_field(scene, connection, bad, role,
                                                             method, path, body, field):
    sent = _with(body(scene), bad)
    before = row_counts(connection)
    response = scene.send(method, path, role, sent)
    # A refused name is named escaped: the answer holds no NUL either.
    escaped = bad.encode("unicode_escape").decode()
    _refused(response, field.format(bad=escaped), "json")
    assert changed(before, row_counts(connection)) == refusal_records(
        role, method, logged_push=path == "/api/v1/sync")


# Query strings and headers: a lone surrogate cannot travel in a URL or a header.
TEXT_IN_QUERIES = [
    ("entries lot", PHARMACIST, "/api/v1/custody/entries", "lot"),
    ("balances holder", PHARMACIST, "/api/v1/custody/balances", "holder"),
    ("patients mrn", ADMIN, "/api/v1/patients", "mrn"),
    ("visits nurse", ADMIN, "/api/v1/visits", "nurse"),
    ("audit action", COMPLIANCE, "/api/v1/audit-events", "action"),
    ("flags rule", COMPLIANCE, "/api/v1/flags", "rule"),
    ("job runs job", ADMIN, "/api/v1/jobs/runs", "job"),
]


@pytest.mark.parametrize(("role", "path", "field"), [case[1:] for case in TEXT_IN_QUERIES],
                         ids=[case[0] for case in TEXT_IN_QUERIES])
def test_a_nul_in_a_query_string_is_refused_naming_the_parameter(scene, connection, role, path,
                                                                 field):
    before = row_counts(connection)
    _refused(scene.send("GET", path, role, query={field: NUL}), field, "query")
    assert changed(before, row_counts(connection)) == {}


def test_a_nul_in_a_sync_header_is_refused_before_the_push_is_logged(scene, connection):
    before = row_counts(connection)
    response = scene.send("POST", "/api/v1/sync", PHONE, {"changes": {}},
                          headers={"Idempotency-Key": f"key-{NUL}"})
    _refused(response, "Idempotency-Key", "headers")
    assert changed(before, row_counts(connection)) == refusal_records(PHONE, "POST")


# Non-finite numbers and integers beyond I-JSON, written into the raw body where BAD stands.
NUMBERS_IN_BODIES = [
    ("login", NOBODY, "POST", "/api/v1/auth/login",
     lambda s: {"org": "demo", "username": "u", "password": BAD}, "password"),
    ("entry details", PHARMACIST, "POST", "/api/v1/custody/entries",
     lambda s: s.entry(details={**SUPPLIER, "pallets": BAD}), "details.pallets"),
    ("entry details deep down", PHARMACIST, "POST", "/api/v1/custody/entries",
     lambda s: s.entry(details={**SUPPLIER, "lines": [{"qty": [1, BAD]}]}),
     "details.lines.0.qty.1"),
    ("entry quantity", PHARMACIST, "POST", "/api/v1/custody/entries",
     lambda s: s.entry(quantity_ug=BAD), "quantity_ug"),
    ("check-in position", PHONE, "POST", "/api/v1/visits/{visit}/check-in",
     lambda s: {**AT_HOME, "latitude": BAD}, "latitude"),
    ("plan dose", PRESCRIBER, "PUT", "/api/v1/plans/{plan}",
     lambda s: {**PLAN, "product_id": s.ids["product"], "change_reason": "r",
                "max_dose_ug": BAD}, "max_dose_ug"),
    ("observation", PHONE, "POST", "/api/v1/visits/{visit}/observations",
     lambda s: {"id": str(uuid.uuid4()), "occurred_at": DAY1, "systolic": BAD,
                "signature": "AAAA"}, "systolic"),
    ("count", PHARMACIST, "POST", "/api/v1/custody/counts", lambda s: {
        "holder": "vault", "counted_at": DAY1,
        "counts": [{"product_id": s.ids["product"], "lot": "L1", "quantity_ug": BAD}]},
     "counts.0.quantity_ug"),
    ("weight", ADMIN, "POST", "/api/v1/patients/{patient}/weights",
     lambda s: {"weight_kg": BAD, "measured_at": DAY1}, "weight_kg"),
    ("thresholds", ADMIN, "PATCH", "/api/v1/safeguards/policy",
     lambda s: {"thresholds": {"evv_radius_m": BAD}}, "thresholds.evv_radius_m"),
    ("pushed observation", PHONE, "POST", "/api/v1/sync",
     lambda s: _pushed(s, "observations", occurred_at=DAY1, systolic=BAD),
     "changes.observations.created.0.systolic"),
]


def _raw(body: dict, literal: str) -> bytes:
    return json.dumps(body).replace(json.dumps(BAD), literal).encode()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400",
                                     "9007199254740992", "-" + "9" * 5000])
@pytest.mark.parametrize(("role", "method", "path", "body", "field"),
                         [case[1:] for case in NUMBERS_IN_BODIES],
                         ids=[case[0] for case in NUMBERS_IN_BODIES])
def test_numbers_that_are_not_finite_or_beyond_i_json_are_refused(scene, connection, literal,
                                                                  role, method, path, body,
                                                                  field):
    before = row_counts(connection)
    response = scene.send(method, path, role, raw=_raw(body(scene), literal))
    _refused(response, field, "json")
    assert changed(before, row_counts(connection)) == refusal_records(
        role, method, logged_push=path == "/api/v1/sync")


# JSON nested past the limit: just past it (the path is named), and far past it (the body).
DEEP_BODIES = [
    ("login", NOBODY, "POST", "/api/v1/auth/login", "org"),
    ("entry details", PHARMACIST, "POST", "/api/v1/custody/entries", "details"),
    ("patient", ADMIN, "POST", "/api/v1/patients", "notes"),
    ("session", PHONE, "POST", "/api/v1/visits/{visit}/session", "observations"),
    ("thresholds", ADMIN, "PATCH", "/api/v1/safeguards/policy", "thresholds"),
    ("sync push", PHONE, "POST", "/api/v1/sync", "changes"),
]


@pytest.mark.parametrize("depth", [untrusted.MAX_DEPTH, 1_000, 100_000])
@pytest.mark.parametrize(("role", "method", "path", "field"),
                         [case[1:] for case in DEEP_BODIES],
                         ids=[case[0] for case in DEEP_BODIES])
def test_json_nested_too_deep_is_refused(scene, connection, depth, role, method, path, field):
    raw = b'{"' + field.encode() + b'": ' + b"[" * depth + b"]" * depth + b"}"
    before = row_counts(connection)
    response = scene.send(method, path, role, raw=raw)
    assert response.status_code == 422, response.get_data(as_text=True)[:600]
    error = response.json["error"]
    assert error["code"] == "validation_error"
    [named] = error["details"]["fields"]
    assert named == "body" or named.startswith(f"{field}.0"), named
    assert error["details"]["fields"][named] == [untrusted.DEEPER]
    assert changed(before, row_counts(connection)) == refusal_records(
        role, method, logged_push=path == "/api/v1/sync")


@pytest.mark.parametrize(("extra", "status"), [(0, 201), (1, 422)])
def test_json_of_the_limits_depth_is_read_and_one_more_level_is_not(scene, extra, status):
    # The body, `details` and the pallets' lists: MAX_DEPTH levels in all, then one more.
    levels = untrusted.MAX_DEPTH - 2 + extra
    nested = json.loads("[" * levels + "]" * levels)
    response = scene.send("POST", "/api/v1/custody/entries", PHARMACIST,
                          scene.entry(details={**SUPPLIER, "pallets": nested}))
    assert response.status_code == status, response.json


def test_a_body_that_is_not_json_stays_400_malformed_json(scene):
    for raw in (b"{", b"\xff\xfe{}", b"   "):
        response = scene.send("POST", "/api/v1/auth/login", NOBODY, raw=raw)
        assert response.status_code == 400, raw
        assert response.json["error"]["code"] == "malformed_json"


def test_an_empty_body_is_read_as_no_body(scene):
    response = scene.client.post("/api/v1/auth/login", data=b"",
                                 content_type="application/json")
    assert response.status_code == 422
    assert set(response.json["error"]["details"]["fields"]) == {"org", "username", "password"}


def test_the_view_reads_the_body_the_gate_read(scene):
    """A signed record's body (request.get_json) is the gate's decoding, not a second one."""
    body = scene.signed(PRE_DOSE)
    response = scene.send("POST", "/api/v1/visits/{visit}/pre-dose", PHONE, body)
    assert response.status_code == 201, response.json
    assert response.json["signed_body"] == {k: v for k, v in body.items() if k != "signature"}


def test_a_refused_value_inside_a_pushed_json_column_quarantines_its_record(scene):
    """A JSON column is a record's value: refused, the record is quarantined, naming it."""
    record = {"visit_id": scene.ids["visit"], "occurred_at": DAY1, "systolic": 120,
              "diastolic": 80, "cadss_items": '{"1": NaN}'}
    record = {"id": str(uuid.uuid4()), **record}
    record["signature"] = scene.pharmacy.phone.sign(record)
    response = scene.send("POST", "/api/v1/sync", PHONE, {"changes": {"observations": {
        "created": [record], "updated": [], "deleted": []}}})
    assert response.status_code == 200, response.json
    [held] = response.json["quarantined"]
    assert "cadss_items.1" in held["reason"], held


def test_a_migration_note_with_numbers_no_phone_sends_is_refused(scene):
    note = '{"from": 1e400, "tables": [], "columns": []}'
    response = scene.send("GET", "/api/v1/sync", PHONE,
                          query={"schema_version": 1, "migration": note})
    _refused(response, "migration", "query")


@pytest.mark.parametrize(("document", "named"), [
    ({"a": ["ok", "x\x00"]}, {"a.1": "contains a NUL character"}),
    ({"a\x00": 1}, {"a\\x00": "its name contains a NUL character"}),
    ({"a": {"b": float("nan")}, "c": 2**53}, {"a.b": untrusted.NOT_FINITE,
                                              "c": untrusted.BEYOND}),
    ({"ok": [1.5, -(2**53 - 1), "\U0001f600"]}, {}),
])
def test_refusals_name_each_value_by_its_path(document, named):
    assert untrusted.refusals(document) == named


def test_refusals_stop_at_the_depth_limit_and_name_it_once():
    document: list = []
    for _ in range(untrusted.MAX_DEPTH + 5):
        document = [document]
    assert untrusted.refusals(document) == {
        ".".join(["0"] * untrusted.MAX_DEPTH): untrusted.DEEPER}


# Values at and around every refusal: text with NUL, lone surrogates and escapes, integers
# around 2^53 and past 20 digits, floats that are or become infinite, and nesting around the
# depth limit.
TEXTS = st.text(alphabet=st.sampled_from(["a", "\\", "u", "\x00", "\ud800", "\udfff", "é",
                                          "\U0001f600", "\"", "{", "["]), max_size=6)
NUMBERS = st.one_of(st.integers(-(2**54), 2**54), st.integers(10**19, 10**22).map(lambda n: -n),
                    st.sampled_from([2**53 - 1, 2**53, -(2**53), 10**21]),
                    st.floats(allow_nan=True, allow_infinity=True), st.just(1e308))
SCALARS = st.one_of(st.none(), st.booleans(), TEXTS, NUMBERS)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXTS, inner, max_size=3)), max_leaves=12)


def _nested(value, levels: int):
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


def _reference(document: bytes | str) -> dict[str, str]:
    """Return what the gate refused before it skipped the walk: every value walked."""
    decoded = json.loads(document, parse_int=lambda digits: int(digits) if len(
        digits.lstrip("-")) <= untrusted.MAX_INTEGER_DIGITS else untrusted._BEYOND)
    return untrusted.refusals(decoded)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(value=VALUES, levels=st.integers(0, untrusted.MAX_DEPTH + 2), ascii_only=st.booleans(),
       as_bytes=st.booleans(), exponent=st.booleans())
def test_the_gate_refuses_exactly_what_walking_every_value_refuses(value, levels, ascii_only,
                                                                    as_bytes, exponent):
    document = json.dumps(_nested(value, levels), ensure_ascii=ascii_only)
    if exponent:
        # A float written so that it overflows only as it is read.
        document = document.replace("1e+308", "1e400")
    if as_bytes:
        document = document.encode("utf-8", "surrogatepass")
    expected = _reference(document)
    try:
        untrusted.loads(document)
    except untrusted.RefusedInput as refused:
        assert refused.problems == expected
    else:
        assert expected == {}


def test_a_password_with_a_nul_is_refused_before_any_account_is_touched(scene, connection):
    before = row_counts(connection)
    response = scene.send("POST", "/api/v1/auth/login", NOBODY, {
        "org": scene.pharmacy.org.slug, "username": scene.pharmacy.nurse.username,
        "password": PASSWORD + "\x00"})
    _refused(response, "password", "json")
    # No login failure counted: the gate refused it before the password was checked.
    assert changed(before, row_counts(connection)) == {}
