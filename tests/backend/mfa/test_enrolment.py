"""Enrolling a TOTP factor: the URI and QR code, confirmation with a code, re-enrolment and
removal, each audited without a secret, and the secret sealed at rest."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, unquote, urlparse

import pytest
from sqlalchemy import select

from backend.accounts.models import Role
from backend.mfa import service
from backend.mfa.models import RecoveryCode, SecondFactor
from backend.phi.cipher import PhiCipher
from tests.backend.mfa.authenticator import (
    FACTORS,
    RECOVERY_CODES,
    Authenticator,
    audit_rows,
    begin,
    confirm,
    enrol,
    listed,
)
from tests.factories import World

RECOVERY_FORMAT = re.compile(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}")
SVG = "{http://www.w3.org/2000/svg}"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def org(world: World):
    return world.org()


def test_enrol_then_confirm_with_a_code_computed_from_the_uri(world: World, clock, org):
    user = world.user(org, Role.PHARMACIST, factor=False)
    headers = world.headers(org, user)
    begun = begin(world, headers, label="My phone")
    assert begun.status_code == 201, begun.json
    factor = begun.json["factor"]
    assert (factor["kind"], factor["label"], factor["confirmed_at"]) == ("totp", "My phone", None)
    uri = urlparse(begun.json["otpauth_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == f"/Vigil (Test Pharmacy):{user.username}"
    assert parse_qs(uri.query)["issuer"] == ["Vigil (Test Pharmacy)"]
    assert listed(world, headers) == {"factors": [factor], "recovery_codes_remaining": 0}

    app = Authenticator(begun.json["otpauth_uri"], clock)
    confirmed = confirm(world, headers, factor["id"], app.code())
    assert confirmed.status_code == 200, confirmed.json
    codes = confirmed.json["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    assert all(RECOVERY_FORMAT.fullmatch(code) for code in codes)
    assert confirmed.json["factor"]["confirmed_at"] == clock.now().isoformat()
    mine = listed(world, headers)
    assert mine == {"factors": [confirmed.json["factor"]], "recovery_codes_remaining": 10}
    assert app.secret not in str(mine)
    assert {row.action for row in audit_rows(world, user_id=user.id)} == {
        "mfa.enrol", "mfa.confirm"}


def test_every_role_may_enrol(world: World, clock, org):
    for role in Role:
        enrolled = enrol(world, clock, org, world.user(org, role, factor=False))
        assert listed(world, enrolled.headers)["recovery_codes_remaining"] == 10


def test_a_wrong_code_leaves_the_factor_pending(world: World, clock, org):
    user = world.user(org, Role.PRESCRIBER, factor=False)
    headers = world.headers(org, user)
    begun = begin(world, headers)
    app = Authenticator(begun.json["otpauth_uri"], clock)
    refused = confirm(world, headers, begun.json["factor"]["id"], app.wrong_code())
    assert refused.status_code == 422
    assert refused.json["error"]["code"] == "invalid_code"
    assert "code" in refused.json["error"]["details"]["fields"]
    assert listed(world, headers)["factors"][0]["confirmed_at"] is None
    assert world.session.scalar(select(RecoveryCode.id)) is None
    assert confirm(world, headers, begun.json["factor"]["id"], app.code()).status_code == 200


def test_a_confirmed_factor_is_not_confirmed_again(world: World, clock, org):
    enrolled = enrol(world, clock, org, world.user(org, Role.ADMIN, factor=False))
    clock.advance(seconds=30)
    again = confirm(world, enrolled.headers, enrolled.factor_id, enrolled.app.code())
    assert again.status_code == 409
    assert listed(world, enrolled.headers)["recovery_codes_remaining"] == 10


def test_an_enrolment_not_confirmed_in_time_expires(world: World, clock, org):
    user = world.user(org, Role.COMPLIANCE, factor=False)
    headers = world.headers(org, user)
    begun = begin(world, headers)
    app = Authenticator(begun.json["otpauth_uri"], clock)
    clock.advance(seconds=service.ENROLMENT_SECONDS + 1)
    late = confirm(world, headers, begun.json["factor"]["id"], app.code())
    assert late.status_code == 409
    assert "expired" in late.json["error"]["message"]


def test_beginning_again_replaces_a_pending_enrolment(world: World, clock, org):
    user = world.user(org, Role.PHARMACIST, factor=False)
    headers = world.headers(org, user)
    first = begin(world, headers).json
    second = begin(world, headers).json
    assert [factor["id"] for factor in listed(world, headers)["factors"]] == [
        second["factor"]["id"]]
    stale = Authenticator(first["otpauth_uri"], clock)
    assert confirm(world, headers, first["factor"]["id"], stale.code()).status_code == 404


def test_re_enrolment_needs_a_code_and_replaces_the_old_factor(world: World, clock, org):
    old = enrol(world, clock, org, world.user(org, Role.PHARMACIST, factor=False))
    unproved = begin(world, old.headers)
    assert unproved.status_code == 422
    assert "code" in unproved.json["error"]["details"]["fields"]
    clock.advance(seconds=30)
    begun = begin(world, old.headers, code=old.app.code())
    assert begun.status_code == 201, begun.json
    new_app = Authenticator(begun.json["otpauth_uri"], clock)
    assert new_app.secret != old.app.secret
    confirmed = confirm(world, old.headers, begun.json["factor"]["id"], new_app.code())
    assert confirmed.status_code == 200, confirmed.json
    assert [factor["id"] for factor in listed(world, old.headers)["factors"]] == [
        begun.json["factor"]["id"]]
    replaced = world.session.get(SecondFactor, uuid.UUID(old.factor_id), populate_existing=True)
    assert replaced.removed_at is not None and replaced.secret_enc is None
    assert replaced.removed_by_id == old.user.id
    # The old recovery codes went with it; the new ones work.
    assert world.client.post(RECOVERY_CODES, headers=old.headers, json={
        "code": old.recovery_codes[0]}).status_code == 422
    assert world.client.post(RECOVERY_CODES, headers=old.headers, json={
        "code": confirmed.json["recovery_codes"][0]}).status_code == 200
    re_enrolled = [row for row in audit_rows(world, user_id=old.user.id)
                   if row.action == "mfa.re_enrol"]
    assert [row.detail["replaced"] for row in re_enrolled] == [[old.factor_id]]


def test_re_enrolment_with_a_recovery_code_for_a_lost_phone(world: World, clock, org):
    old = enrol(world, clock, org, world.user(org, Role.COMPLIANCE, factor=False))
    begun = begin(world, old.headers, code=old.recovery_codes[3].lower().replace("-", ""))
    assert begun.status_code == 201, begun.json
    new_app = Authenticator(begun.json["otpauth_uri"], clock)
    assert confirm(world, old.headers, begun.json["factor"]["id"],
                   new_app.code()).status_code == 200


def test_removing_a_factor_needs_its_code(world: World, clock, org):
    enrolled = enrol(world, clock, org, world.user(org, Role.PRESCRIBER, factor=False))
    url = f"{FACTORS}/{enrolled.factor_id}"
    clock.advance(seconds=30)
    refused = world.client.delete(url, headers=enrolled.headers,
                                  json={"code": enrolled.app.wrong_code()})
    assert refused.status_code == 422
    assert world.client.delete(url, headers=enrolled.headers).status_code == 422
    removed = world.client.delete(url, headers=enrolled.headers,
                                  json={"code": enrolled.app.code()})
    assert removed.status_code == 204
    assert listed(world, enrolled.headers) == {"factors": [], "recovery_codes_remaining": 0}
    assert world.client.delete(url, headers=enrolled.headers,
                               json={"code": enrolled.app.code(1)}).status_code == 404
    row = world.session.get(SecondFactor, uuid.UUID(enrolled.factor_id), populate_existing=True)
    assert row.removed_at == clock.now() and row.secret_enc is None
    removal = [row for row in audit_rows(world, user_id=enrolled.user.id)
               if row.action == "mfa.remove"]
    assert [row.detail for row in removal] == [{"kind": "totp", "confirmed": True}]


def test_a_pending_factor_is_removed_with_its_own_code(world: World, clock, org):
    user = world.user(org, Role.NURSE, factor=False)
    headers = world.headers(org, user)
    begun = begin(world, headers).json
    app = Authenticator(begun["otpauth_uri"], clock)
    assert world.client.delete(f"{FACTORS}/{begun['factor']['id']}", headers=headers,
                               json={"code": app.code()}).status_code == 204
    assert listed(world, headers)["factors"] == []


def test_another_users_factor_is_not_found(world: World, clock, org):
    enrolled = enrol(world, clock, org, world.user(org, Role.PHARMACIST, factor=False))
    admin = world.user(org, Role.ADMIN, factor=False)
    other_org = world.org()
    for headers in (world.headers(org, admin),
                    world.headers(other_org, world.user(other_org, Role.PHARMACIST, factor=False))):
        url = f"{FACTORS}/{enrolled.factor_id}"
        code = enrolled.app.code(1)
        assert world.client.delete(url, headers=headers, json={"code": code}).status_code == 404
        assert confirm(world, headers, enrolled.factor_id, code).status_code == 404
    assert len(listed(world, enrolled.headers)["factors"]) == 1


def test_the_secret_is_sealed_at_rest(world: World, clock, org, app):
    enrolled = enrol(world, clock, org, world.user(org, Role.ADMIN, factor=False))
    stored = world.session.scalar(select(SecondFactor.secret_enc).where(
        SecondFactor.id == uuid.UUID(enrolled.factor_id)))
    assert enrolled.app.secret not in stored
    box = PhiCipher.from_keyring(app.extensions["vigil.runtime"].keys)
    assert stored.startswith(box.active_prefix)
    row = world.session.get(SecondFactor, uuid.UUID(enrolled.factor_id))
    assert row.secret == enrolled.app.secret


def test_recovery_codes_are_stored_only_hashed(world: World, clock, org):
    enrolled = enrol(world, clock, org, world.user(org, Role.ADMIN, factor=False))
    hashes = world.session.scalars(select(RecoveryCode.code_hash).where(
        RecoveryCode.user_id == enrolled.user.id)).all()
    assert len(hashes) == 10 and all(len(digest) == 32 for digest in hashes)
    for code in enrolled.recovery_codes:
        assert all(code.replace("-", "").encode() not in digest for digest in hashes)


def test_audit_rows_hold_no_secret_and_no_code(world: World, clock, org):
    enrolled = enrol(world, clock, org, world.user(org, Role.PHARMACIST, factor=False))
    clock.advance(seconds=30)
    world.client.post(RECOVERY_CODES, headers=enrolled.headers,
                      json={"code": enrolled.app.wrong_code()})
    renewed = world.client.post(RECOVERY_CODES, headers=enrolled.headers,
                                json={"code": enrolled.recovery_codes[0]}).json
    world.client.delete(f"{FACTORS}/{enrolled.factor_id}", headers=enrolled.headers,
                        json={"code": enrolled.app.code()})
    rows = audit_rows(world, user_id=enrolled.user.id)
    assert {row.action for row in rows} == {
        "mfa.enrol", "mfa.confirm", "mfa.code_failed", "mfa.recovery_code_used",
        "mfa.recovery_codes", "mfa.remove"}
    # Ids aside (a code's six digits might turn up inside one), nothing a user keeps secret.
    written = UUID.sub("", " ".join(str(row.detail) for row in rows))
    secrets_shown = [enrolled.app.secret, enrolled.app.wrong_code(), enrolled.app.code(),
                     *enrolled.recovery_codes, *renewed["recovery_codes"]]
    for secret in secrets_shown:
        assert secret not in written
        assert secret.replace("-", "") not in written


def test_the_qr_code_is_an_svg_without_style(world: World, org):
    user = world.user(org, Role.COMPLIANCE, factor=False)
    begun = begin(world, world.headers(org, user)).json
    svg = ET.fromstring(begun["qr_svg"])  # noqa: S314 - our own markup, not untrusted input
    assert svg.tag == f"{SVG}svg"
    elements = list(svg.iter())
    assert not [element for element in elements if "style" in element.attrib]
    assert not [element for element in elements if element.tag == f"{SVG}style"]
    assert svg.find(f"{SVG}path").get("d")
    assert svg.find(f"{SVG}title").text
    assert "style=" not in begun["qr_svg"]
    assert begun["qr_svg"] == service.qr_svg(begun["otpauth_uri"])


@pytest.mark.parametrize("body", [
    {"code": "12345"}, {"code": "1234567"}, {"code": "12345a"}, {"code": "ABCD-EFGH"},
    {"code": "ABCD-EFGH-IJKL-MNO1"}, {"code": 123456}, {}, {"code": "123456", "extra": 1},
])
def test_malformed_codes_are_refused_before_any_check(world: World, org, body):
    user = world.user(org, Role.ADMIN, factor=False)
    headers = world.headers(org, user)
    response = world.client.post(RECOVERY_CODES, headers=headers, json=body)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "validation_error"
    assert audit_rows(world, user_id=user.id) == []
