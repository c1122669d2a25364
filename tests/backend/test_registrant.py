"""The registrant's details every DEA record prints, users' contacts, and products' codes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.audit.models import AuditEvent
from backend.products import ndc
from tests.factories import World

ORGANISATION = "/api/v1/organisation"
ADDRESS = {"name": "Riverside Home Infusion", "dea_expires_on": "2028-03-31",
           "address_line": "1 Registered Way", "city": "Springfield", "state": "IL",
           "postal_code": "62701-1234", "phone": "+1 217 555 0100"}
PRODUCT = {"name": "Ketamine HCl 50 mg/mL", "active_ingredient": "ketamine",
           "dea_schedule": "III", "form": "vial", "ug_per_unit": 50_000,
           "units_per_container": "10.000", "allowed_routes": ["IV"],
           "home_administration_allowed": True}


@pytest.mark.parametrize("role", list(Role))
def test_every_role_reads_the_registrant(world: World, role: Role):
    org = world.org()
    user = world.user(org, role)
    got = world.client.get(ORGANISATION, headers=world.headers(org, user))
    assert got.status_code == 200
    assert (got.json["name"], got.json["dea_registration"]) == (org.name, org.dea_registration)
    assert {"address_line", "city", "state", "postal_code", "phone",
            "dea_expires_on"} <= set(got.json)


def test_an_admin_sets_the_address_audited_field_by_field(world: World):
    org = world.org()
    admin = world.user(org, Role.ADMIN)
    headers = world.headers(org, admin)
    changed = world.client.patch(ORGANISATION, headers=headers, json=ADDRESS)
    assert changed.status_code == 200, changed.json
    assert {key: changed.json[key] for key in ADDRESS} == ADDRESS
    world.session.expire_all()
    detail = world.session.scalar(select(AuditEvent.detail).where(
        AuditEvent.organisation_id == org.id, AuditEvent.action == "organisation.registrant"))
    assert detail["city"] == {"from": None, "to": "Springfield"}
    assert "dea_registration" not in detail
    cleared = world.client.patch(ORGANISATION, headers=headers, json={"phone": None})
    assert cleared.json["phone"] is None and cleared.json["city"] == "Springfield"


@pytest.mark.parametrize(("body", "field"), [
    ({"dea_registration": "AB1234567"}, "dea_registration"),
    ({"dea_registration": "AB12"}, "dea_registration"),
    ({"state": "XX"}, "state"),
    ({"postal_code": "6270"}, "postal_code"),
    ({"phone": "call me"}, "phone"),
    ({"name": ""}, "name"),
    ({"name": None}, "name"),
    ({"dea_expires_on": "next year"}, "dea_expires_on"),
    ({"timezone": "UTC"}, "timezone"),
    ({"slug": "taken"}, "slug"),
])
def test_a_bad_registrant_field_is_named_and_changes_nothing(world: World, body, field):
    org = world.org()
    headers = world.headers(org, world.user(org, Role.ADMIN))
    before = world.client.get(ORGANISATION, headers=headers).json
    refused = world.client.patch(ORGANISATION, headers=headers, json=body)
    assert refused.status_code == 422, refused.json
    assert field in str(refused.json["error"]["details"])
    assert world.client.get(ORGANISATION, headers=headers).json == before


def test_a_new_registration_number_is_kept_in_capitals(world: World):
    org = world.org()
    headers = world.headers(org, world.user(org, Role.ADMIN))
    changed = world.client.patch(ORGANISATION, headers=headers,
                                 json={"dea_registration": "fv1234563"})
    assert changed.status_code == 200 and changed.json["dea_registration"] == "FV1234563"


@pytest.mark.parametrize("role", [Role.PHARMACIST, Role.COMPLIANCE, Role.PRESCRIBER, Role.NURSE])
def test_only_an_admin_changes_the_registrant(world: World, role: Role):
    org = world.org()
    refused = world.client.patch(ORGANISATION, headers=world.headers(org, world.user(org, role)),
                                 json={"city": "Elsewhere"})
    assert refused.status_code == 403


def test_an_admin_changes_only_her_own_organisation(world: World):
    mine, theirs = world.org(), world.org()
    world.client.patch(ORGANISATION, headers=world.headers(mine, world.user(mine, Role.ADMIN)),
                       json={"city": "Springfield"})
    world.session.expire_all()
    assert world.session.get(type(theirs), theirs.id).city is None


def test_users_carry_a_phone_and_email(world: World):
    org = world.org()
    headers = world.headers(org, world.user(org, Role.ADMIN))
    made = world.client.post("/api/v1/users", headers=headers, json={
        "username": "rn-contact", "display_name": "Robin Contact, RN", "role": "nurse",
        "password": "a long passphrase of words", "phone": "+1 555 0142",
        "email": "robin@example.org"})
    assert made.status_code == 201, made.json
    assert (made.json["phone"], made.json["email"]) == ("+1 555 0142", "robin@example.org")
    cleared = world.client.patch(f"/api/v1/users/{made.json['id']}", headers=headers,
                                 json={"email": ""})
    assert cleared.json["email"] is None and cleared.json["phone"] == "+1 555 0142"
    bad = world.client.patch(f"/api/v1/users/{made.json['id']}", headers=headers,
                             json={"email": "not an address"})
    assert bad.status_code == 422 and "email" in str(bad.json["error"]["details"])


@pytest.mark.parametrize(("given", "stored", "shown"), [
    ("0409-4276-01", "00409427601", "00409-4276-01"),   # 4-4-2
    ("42023-113-10", "42023011310", "42023-0113-10"),   # 5-3-2
    ("12345-6789-1", "12345678901", "12345-6789-01"),   # 5-4-1
    ("12345-6789-01", "12345678901", "12345-6789-01"),  # 5-4-2
    ("12345678901", "12345678901", "12345-6789-01"),    # 11 digits
])
def test_an_ndc_in_any_valid_form_is_kept_as_eleven_digits(world: World, given, stored, shown):
    assert ndc.normalise(given) == stored and ndc.formatted(stored) == shown
    org = world.org()
    headers = world.headers(org, world.user(org, Role.PHARMACIST))
    made = world.client.post("/api/v1/products", headers=headers,
                             json={**PRODUCT, "ndc": given, "rxnorm_code": "6130",
                                   "package_description": "10 mL vial, carton of 10"})
    assert made.status_code == 201, made.json
    assert made.json["ndc"] == stored
    assert made.json["package"] == "10 mL vial, carton of 10 (10 mL per vial)"


@pytest.mark.parametrize("given", ["1234567890", "123-4567-89", "12345-67890-1", "1234567890a",
                                   "12345-678-9"])
def test_an_ambiguous_or_malformed_ndc_is_refused(world: World, given):
    org = world.org()
    headers = world.headers(org, world.user(org, Role.PHARMACIST))
    refused = world.client.post("/api/v1/products", headers=headers, json={**PRODUCT, "ndc": given})
    assert refused.status_code == 422 and "ndc" in str(refused.json["error"]["details"])
    assert world.client.get("/api/v1/products", headers=headers).json == []


def test_a_products_codes_are_set_later_and_audited(world: World):
    org = world.org()
    headers = world.headers(org, world.user(org, Role.PHARMACIST))
    product = world.client.post("/api/v1/products", headers=headers, json=PRODUCT).json
    assert product["ndc"] is None and product["package"] == "10 mL per vial"
    path = f"/api/v1/products/{product['id']}"
    changed = world.client.patch(path, headers=headers, json={"ndc": "0409-4276-01"})
    assert changed.status_code == 200 and changed.json["ndc"] == "00409427601"
    for refused_body in ({"ug_per_unit": 1}, {"ndc": "1234567890"}, {"rxnorm_code": "RX1"}):
        refused = world.client.patch(path, headers=headers, json=refused_body)
        assert refused.status_code == 422, refused_body
    world.session.expire_all()
    detail = world.session.scalar(select(AuditEvent.detail).where(
        AuditEvent.organisation_id == org.id, AuditEvent.action == "product.update"))
    assert detail == {"ndc": {"from": None, "to": "00409427601"}}


def test_a_product_is_changed_by_its_own_pharmacy_only(world: World):
    org, other = world.org(), world.org()
    product = world.client.post("/api/v1/products",
                                headers=world.headers(org, world.user(org, Role.PHARMACIST)),
                                json=PRODUCT).json
    path = f"/api/v1/products/{product['id']}"
    outsider = world.headers(other, world.user(other, Role.PHARMACIST))
    assert world.client.patch(path, headers=outsider, json={"ndc": "12345678901"}
                              ).status_code == 404
    nurse = world.headers(org, world.user(org, Role.NURSE))
    assert world.client.patch(path, headers=nurse, json={"ndc": "12345678901"}).status_code == 403
    missing = f"/api/v1/products/{uuid.uuid4()}"
    assert world.client.patch(missing, headers=world.headers(org, world.user(org, Role.ADMIN)),
                              json={"ndc": "12345678901"}).status_code == 404
