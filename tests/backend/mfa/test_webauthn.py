"""Security keys (WebAuthn): registration, sign-in and step-up with a key's assertion, each
challenge used once and within its time, counters that must grow, keys that are the user's
own, refusals counted toward the lockout, and malformed answers refused cleanly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import jwt
import pytest
from sqlalchemy import func, select

from backend import config
from backend.accounts.models import Organisation, Role, User
from backend.auth.models import LoginFailure, TokenFamily
from backend.mfa.models import FactorChallenge, SecondFactor
from tests.backend.conftest import make_app
from tests.backend.mfa.authenticator import FACTORS, audit_rows, enrol, listed
from tests.backend.mfa.security_key import Excluded, SecurityKey, b64url, unb64url
from tests.factories import PASSWORD, World

LOGIN = "/api/v1/auth/login"
LOGIN_OPTIONS = "/api/v1/auth/login/webauthn-options"
LOGIN_FACTOR = "/api/v1/auth/login/factor"
STEP_UP = "/api/v1/auth/step-up"
STEP_UP_OPTIONS = "/api/v1/auth/step-up/webauthn-options"


@dataclass
class Keyholder:
    """A signed-in user whose only second factor is a security key."""

    org: Organisation
    user: User
    headers: dict[str, str]
    key: SecurityKey
    factor_id: str
    recovery_codes: list[str]


def begin(world: World, headers: dict, **body):
    """Begin registering a security key."""
    return world.client.post(f"{FACTORS}/webauthn", headers=headers, json=body)


def finish(world: World, headers: dict, factor_id: str, credential):
    """Confirm a pending key with what it answered."""
    return world.client.post(f"{FACTORS}/{factor_id}/webauthn", headers=headers,
                             json={"credential": credential})


def password_headers(world: World, org: Organisation, user: User) -> dict:
    """Return the headers of a password-only sign-in, for a user with no factor yet."""
    response = world.client.post(LOGIN, json={"org": org.slug, "username": user.username,
                                              "password": PASSWORD})
    assert response.status_code == 200 and not response.json["mfa_required"], response.json
    return {"Authorization": f"Bearer {response.json['access_token']}"}


def keyholder(world: World, org: Organisation | None = None,
              role: Role = Role.PRESCRIBER, key: SecurityKey | None = None) -> Keyholder:
    """Make a user, sign them in within their grace, and register a key as the first factor."""
    org = org or world.org()
    user = world.user(org, role, factor=False)
    headers = password_headers(world, org, user)
    key = key or SecurityKey()
    begun = begin(world, headers)
    assert begun.status_code == 201, begun.json
    confirmed = finish(world, headers, begun.json["factor"]["id"],
                       key.register(begun.json["public_key"]))
    assert confirmed.status_code == 200, confirmed.json
    return Keyholder(org, user, headers, key, begun.json["factor"]["id"],
                     confirmed.json["recovery_codes"])


def challenged(world: World, holder: Keyholder) -> dict:
    """Sign in with the password; return the `mfa_required` answer."""
    response = world.client.post(LOGIN, json={"org": holder.org.slug,
                                              "username": holder.user.username,
                                              "password": PASSWORD})
    assert response.status_code == 200 and response.json["mfa_required"], response.json
    return response.json


def login_options(world: World, token: str) -> dict:
    """Return the assertion options for a challenged sign-in."""
    response = world.client.post(LOGIN_OPTIONS, json={"challenge_token": token})
    assert response.status_code == 200, response.json
    return response.json


def sign_in(world: World, holder: Keyholder, key: SecurityKey | None = None, **assertion):
    """Sign in with the password, then with an assertion of `key` (the holder's own)."""
    token = challenged(world, holder)["challenge_token"]
    options = login_options(world, token)["public_key"]
    return world.client.post(LOGIN_FACTOR, json={
        "challenge_token": token,
        "webauthn": (key or holder.key).assertion(options, **assertion)})


def step_up_options(world: World, headers: dict) -> dict:
    """Return the assertion options for a step-up."""
    response = world.client.post(STEP_UP_OPTIONS, headers=headers)
    assert response.status_code == 200, response.json
    return response.json["public_key"]


def bearer(signed_in) -> dict:
    """Return the Authorization header of a successful sign-in."""
    assert signed_in.status_code == 200, signed_in.json
    return {"Authorization": f"Bearer {signed_in.json['access_token']}"}


def family_of(world: World, headers: dict) -> TokenFamily:
    """Return the session an access token belongs to."""
    token = headers["Authorization"].split()[1]
    claims = jwt.decode(token, options={"verify_signature": False})
    world.session.expire_all()
    return world.session.get(TokenFamily, uuid.UUID(claims["sid"]))


def stored(world: World, factor_id: str) -> SecondFactor:
    """Return a factor as the database holds it now."""
    world.session.expire_all()
    return world.session.get(SecondFactor, uuid.UUID(factor_id))


def refused_as(world: World, response, user: User, reason: str, purpose: str = "sign_in"):
    """Assert a refused assertion: 422 `invalid_code`, audited with its reason."""
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_code"
    assert response.json["error"]["details"] == {
        "fields": {"webauthn": ["wrong, expired or already used"]}}
    # Rows of one instant on the test's fixed clock have no order among them: look for it.
    assert {"purpose": purpose, "method": "webauthn", "refused": reason} in [
        row.detail for row in audit_rows(world, user_id=user.id, action_prefix="mfa.code_failed")]


def test_a_key_registers_as_the_first_factor_with_recovery_codes(world: World, clock):
    org = world.org()
    user = world.user(org, Role.PHARMACIST, factor=False)
    headers = password_headers(world, org, user)
    begun = begin(world, headers, label="Blue key")
    assert begun.status_code == 201, begun.json
    factor = begun.json["factor"]
    assert (factor["kind"], factor["label"], factor["confirmed_at"]) == (
        "webauthn", "Blue key", None)
    options = begun.json["public_key"]
    assert options["rp"] == {"name": "Vigil", "id": "localhost"}
    assert options["user"] == {"id": b64url(user.id.bytes), "name": user.username,
                               "displayName": "Test User (Test Pharmacy)"}
    assert len(unb64url(options["challenge"])) == 32
    assert {"type": "public-key", "alg": -7} in options["pubKeyCredParams"]
    assert (options["excludeCredentials"], options["attestation"], options["timeout"]) == (
        [], "none", 600_000)
    assert options["authenticatorSelection"] == {"residentKey": "discouraged",
                                                 "requireResidentKey": False,
                                                 "userVerification": "preferred"}
    challenge = world.session.get(FactorChallenge, uuid.UUID(begun.json["challenge_id"]))
    assert (challenge.user_id, challenge.purpose, challenge.challenge) == (
        user.id, "enrol", unb64url(options["challenge"]))
    assert challenge.expires_at == clock.now() + timedelta(seconds=600)

    key = SecurityKey()
    confirmed = finish(world, headers, factor["id"], key.register(options))
    assert confirmed.status_code == 200, confirmed.json
    assert confirmed.json["factor"]["confirmed_at"] == clock.now().isoformat()
    assert len(set(confirmed.json["recovery_codes"])) == 10
    kept = stored(world, factor["id"])
    assert (kept.credential_id, kept.public_key, kept.sign_count, kept.secret) == (
        key.credential_id, key.cose_public_key(), 0, None)
    assert listed(world, headers) == {"factors": [confirmed.json["factor"]],
                                      "recovery_codes_remaining": 10}
    assert sorted((row.action, row.detail) for row in audit_rows(world, user_id=user.id)) == [
        ("mfa.confirm", {"kind": "webauthn", "recovery_codes": 10}),
        ("mfa.enrol", {"kind": "webauthn"})]
    assert challenged(world, Keyholder(org, user, headers, key, factor["id"], []))[
        "methods"] == ["webauthn", "recovery_code"]


def test_a_second_key_needs_a_code_and_leaves_the_recovery_codes(world: World):
    holder = keyholder(world)
    without = begin(world, holder.headers)
    assert without.status_code == 422
    assert without.json["error"]["details"]["fields"] == {
        "code": ["a current code or a recovery code is needed to add a security key"]}
    assert begin(world, holder.headers, code="AAAA-AAAA-AAAA-AAAA").json["error"][
        "code"] == "invalid_code"

    begun = begin(world, holder.headers, code=holder.recovery_codes[0], label="Spare")
    assert begun.status_code == 201, begun.json
    options = begun.json["public_key"]
    assert options["excludeCredentials"] == [
        {"id": b64url(holder.key.credential_id), "type": "public-key"}]
    with pytest.raises(Excluded):
        holder.key.register(options)
    spare = SecurityKey()
    confirmed = finish(world, holder.headers, begun.json["factor"]["id"], spare.register(options))
    assert confirmed.status_code == 200, confirmed.json
    assert confirmed.json["recovery_codes"] == []
    assert listed(world, holder.headers)["recovery_codes_remaining"] == 9

    token = challenged(world, holder)["challenge_token"]
    allowed = login_options(world, token)["public_key"]["allowCredentials"]
    assert {unb64url(entry["id"]) for entry in allowed} == {holder.key.credential_id,
                                                            spare.credential_id}
    assert sign_in(world, holder, spare).status_code == 200
    assert sign_in(world, holder).status_code == 200


def test_a_removed_key_signs_in_no_more(world: World):
    holder = keyholder(world)
    begun = begin(world, holder.headers, code=holder.recovery_codes[0])
    spare = SecurityKey()
    finish(world, holder.headers, begun.json["factor"]["id"], spare.register(begun.json[
        "public_key"]))
    removed = world.client.delete(f"{FACTORS}/{holder.factor_id}", headers=holder.headers,
                                  json={"code": holder.recovery_codes[1]})
    assert removed.status_code == 204, removed.json
    refused_as(world, sign_in(world, holder), holder.user, "unknown_key")
    assert sign_in(world, holder, spare).status_code == 200


def test_a_key_is_added_beside_an_authenticator_app(world: World, clock):
    org = world.org()
    user = world.user(org, Role.COMPLIANCE, factor=False)
    app = enrol(world, clock, org, user, password_headers(world, org, user))
    clock.advance(seconds=30)
    begun = begin(world, app.headers, code=app.app.code())
    assert begun.status_code == 201, begun.json
    key = SecurityKey()
    confirmed = finish(world, app.headers, begun.json["factor"]["id"],
                       key.register(begun.json["public_key"]))
    assert confirmed.json["recovery_codes"] == []
    holder = Keyholder(org, user, app.headers, key, begun.json["factor"]["id"], [])
    assert challenged(world, holder)["methods"] == ["totp", "webauthn", "recovery_code"]
    assert sign_in(world, holder).status_code == 200


def test_sign_in_with_a_key(world: World, clock):
    holder = keyholder(world)
    answer = challenged(world, holder)
    assert answer["methods"] == ["webauthn", "recovery_code"]
    assert "access_token" not in answer
    options = login_options(world, answer["challenge_token"])
    public_key = options["public_key"]
    assert public_key["rpId"] == "localhost"
    assert public_key["allowCredentials"] == [
        {"id": b64url(holder.key.credential_id), "type": "public-key"}]
    assert (public_key["userVerification"], public_key["timeout"]) == ("preferred", 300_000)
    challenge = world.session.get(FactorChallenge, uuid.UUID(options["challenge_id"]))
    assert (challenge.purpose, challenge.expires_at) == ("sign_in",
                                                         clock.now() + timedelta(seconds=300))

    signed_in = world.client.post(LOGIN_FACTOR, json={
        "challenge_token": answer["challenge_token"],
        "webauthn": holder.key.assertion(public_key)})
    headers = bearer(signed_in)
    family = family_of(world, headers)
    assert (family.factor_method, str(family.factor_id), family.factor_at) == (
        "webauthn", holder.factor_id, clock.now())
    assert stored(world, holder.factor_id).sign_count == 1
    world.session.refresh(challenge)
    assert challenge.used_at == clock.now()
    assert world.client.get(FACTORS, headers=headers).status_code == 200
    assert {"factor": "webauthn"} in [
        row.detail for row in audit_rows(world, user_id=holder.user.id, action_prefix="auth.login")]


def test_step_up_with_a_key(world: World, clock):
    holder = keyholder(world)
    headers = bearer(sign_in(world, holder))
    clock.advance(minutes=14)
    stepped = world.client.post(STEP_UP, headers=headers, json={
        "webauthn": holder.key.assertion(step_up_options(world, headers))})
    assert stepped.status_code == 200, stepped.json
    assert stepped.json == {"method": "webauthn", "proved_at": clock.now().isoformat(),
                            "fresh_until": (clock.now() + timedelta(minutes=15)).isoformat()}
    family = family_of(world, headers)
    assert (family.factor_method, family.factor_at) == ("webauthn", clock.now())


def test_an_assertion_answers_only_a_challenge_of_its_purpose(world: World):
    holder = keyholder(world)
    headers = bearer(sign_in(world, holder))
    sign_in_options = login_options(world, challenged(world, holder)["challenge_token"])
    refused = world.client.post(STEP_UP, headers=headers, json={
        "webauthn": holder.key.assertion(sign_in_options["public_key"])})
    refused_as(world, refused, holder.user, "challenge", purpose="step_up")


def test_options_need_a_key(world: World, clock):
    org = world.org()
    user = world.user(org, Role.ADMIN, factor=False)
    enrolled = enrol(world, clock, org, user, password_headers(world, org, user))
    refused = world.client.post(STEP_UP_OPTIONS, headers=enrolled.headers)
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "conflict"


def test_wrong_signatures_count_toward_the_lockout(world: World):
    holder = keyholder(world)
    token = challenged(world, holder)["challenge_token"]
    options = login_options(world, token)["public_key"]
    forger = SecurityKey()
    forger.credential_id = holder.key.credential_id
    for _ in range(world.rt.login_limits.max_per_account):
        refused = world.client.post(LOGIN_FACTOR, json={
            "challenge_token": token, "webauthn": forger.assertion(options)})
        refused_as(world, refused, holder.user, "signature")
    key = f"{holder.org.slug}:{holder.user.username}"
    assert world.session.scalar(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.scope == "factor", LoginFailure.key == key)) == 5
    locked = world.client.post(LOGIN_FACTOR, json={
        "challenge_token": token, "webauthn": holder.key.assertion(options)})
    assert locked.status_code == 429
    assert locked.json["error"]["code"] == "locked_out"


def test_a_challenge_is_used_once(world: World):
    holder = keyholder(world)
    token = challenged(world, holder)["challenge_token"]
    options = login_options(world, token)["public_key"]
    first = holder.key.assertion(options)
    assert world.client.post(LOGIN_FACTOR, json={"challenge_token": token,
                                                 "webauthn": first}).status_code == 200
    # A fresh signature, its counter grown, over the challenge already used.
    again = challenged(world, holder)["challenge_token"]
    refused = world.client.post(LOGIN_FACTOR, json={
        "challenge_token": again, "webauthn": holder.key.assertion(options)})
    refused_as(world, refused, holder.user, "challenge")


def test_an_expired_challenge_is_refused(world: World, clock):
    holder = keyholder(world)
    headers = bearer(sign_in(world, holder))
    options = step_up_options(world, headers)
    clock.advance(seconds=300)
    refused = world.client.post(STEP_UP, headers=headers,
                                json={"webauthn": holder.key.assertion(options)})
    refused_as(world, refused, holder.user, "challenge", purpose="step_up")
    options = step_up_options(world, headers)
    clock.advance(seconds=299)
    assert world.client.post(STEP_UP, headers=headers, json={
        "webauthn": holder.key.assertion(options)}).status_code == 200


def test_a_counter_that_does_not_grow_is_refused(world: World):
    holder = keyholder(world)
    assert sign_in(world, holder, sign_count=5).status_code == 200
    for claimed in (5, 3, 0):
        refused_as(world, sign_in(world, holder, sign_count=claimed), holder.user, "counter")
    assert stored(world, holder.factor_id).sign_count == 5
    assert sign_in(world, holder, sign_count=6).status_code == 200
    assert stored(world, holder.factor_id).sign_count == 6


def test_a_key_that_keeps_no_counter_signs_in_again(world: World):
    holder = keyholder(world, key=SecurityKey(counts=False))
    for _ in range(2):
        assert sign_in(world, holder).status_code == 200
    assert stored(world, holder.factor_id).sign_count == 0


def test_another_users_key_is_refused(world: World):
    alice = keyholder(world)
    bob = keyholder(world, alice.org)
    refused_as(world, sign_in(world, alice, bob.key), alice.user, "unknown_key")
    refused_as(world, sign_in(world, alice, user_handle=bob.user.id.bytes), alice.user,
               "unknown_key")
    assert sign_in(world, alice).status_code == 200


def test_a_pending_key_is_its_owners_alone(world: World):
    alice = keyholder(world)
    begun = begin(world, alice.headers, code=alice.recovery_codes[0])
    pending = begun.json["factor"]["id"]
    answer = SecurityKey().register(begun.json["public_key"])
    colleague = keyholder(world, alice.org)
    outsider = keyholder(world)
    for other in (colleague, outsider):
        refused = finish(world, other.headers, pending, answer)
        assert refused.status_code == 404, refused.json
        assert pending not in str(listed(world, other.headers))
    assert finish(world, alice.headers, pending, answer).status_code == 200


def test_a_registration_that_does_not_verify_is_refused(world: World, clock):
    org = world.org()
    user = world.user(org, Role.PRESCRIBER, factor=False)
    headers = password_headers(world, org, user)
    begun = begin(world, headers)
    factor_id, options = begun.json["factor"]["id"], begun.json["public_key"]
    key = SecurityKey()
    for answer in (key.register(options, origin="https://vigil.example.org"),
                   key.register(options, rp_id="example.org"),
                   key.register({**options, "challenge": b64url(b"x" * 32)})):
        refused = finish(world, headers, factor_id, answer)
        assert refused.status_code == 422, refused.json
        assert list(refused.json["error"]["details"]["fields"]) == ["credential"]
    assert stored(world, factor_id).confirmed_at is None
    clock.advance(seconds=601)
    late = finish(world, headers, factor_id, key.register(options))
    assert late.status_code == 409
    assert late.json["error"]["details"] == {"enrolment_seconds": 600}


def test_a_key_registers_once(world: World):
    alice = keyholder(world)
    again = finish(world, alice.headers, alice.factor_id, SecurityKey().register(
        begin(world, alice.headers, code=alice.recovery_codes[0]).json["public_key"]))
    assert again.status_code == 409
    org = world.org()
    bob = world.user(org, Role.PRESCRIBER, factor=False)
    headers = password_headers(world, org, bob)
    begun = begin(world, headers)
    taken = finish(world, headers, begun.json["factor"]["id"],
                   alice.key.register(begun.json["public_key"]))
    assert taken.status_code == 409
    assert taken.json["error"]["message"] == "This security key is already registered."


def test_an_authenticator_app_is_not_confirmed_as_a_key(world: World, clock):
    org = world.org()
    user = world.user(org, Role.PRESCRIBER, factor=False)
    app = enrol(world, clock, org, user, password_headers(world, org, user))
    clock.advance(seconds=30)
    begun = begin(world, app.headers, code=app.app.code())
    refused = finish(world, app.headers, app.factor_id,
                     SecurityKey().register(begun.json["public_key"]))
    assert refused.status_code == 409
    assert refused.json["error"]["message"] == "This second factor is not a security key."


def _assertion(world: World) -> tuple[Keyholder, str, dict]:
    holder = keyholder(world)
    token = challenged(world, holder)["challenge_token"]
    return holder, token, holder.key.assertion(login_options(world, token)["public_key"])


def _mangled(field: str, value):
    def mangle(credential: dict) -> dict:
        if field in credential:
            return {**credential, field: value}
        return {**credential, "response": {**credential["response"], field: value}}
    return mangle


MALFORMED_ASSERTIONS = {
    "empty": lambda credential: {},
    "id is a number": _mangled("id", 7),
    "id is not rawId": _mangled("id", b64url(b"another id")),
    "no response": _mangled("response", None),
    "type": _mangled("type", "password"),
    "clientDataJSON not base64url": _mangled("clientDataJSON", "!!!"),
    "clientDataJSON not JSON": _mangled("clientDataJSON", b64url(b"\xff{")),
    "clientDataJSON a list": _mangled("clientDataJSON", b64url(b"[1, 2]")),
    "challenge a number": _mangled("clientDataJSON", b64url(
        b'{"type": "webauthn.get", "challenge": 12, "origin": "http://localhost"}')),
    "authenticatorData short": _mangled("authenticatorData", b64url(b"\x00" * 10)),
    "signature garbage": _mangled("signature", b64url(b"\x30\x02\x01")),
    "signature missing": _mangled("signature", None),
    # One character more than a multiple of four: no base64 decodes it.
    "userHandle not base64url": _mangled("userHandle", "A"),
    "userHandle a number": _mangled("userHandle", 3),
}


@pytest.mark.parametrize("mangle", MALFORMED_ASSERTIONS.values(), ids=MALFORMED_ASSERTIONS)
def test_a_malformed_assertion_is_refused_cleanly(world: World, mangle):
    _holder, token, assertion = _assertion(world)
    refused = world.client.post(LOGIN_FACTOR, json={"challenge_token": token,
                                                    "webauthn": mangle(assertion)})
    assert refused.status_code == 422, refused.json
    assert refused.json["error"]["code"] == "invalid_code"
    assert world.client.post(LOGIN_FACTOR, json={"challenge_token": token,
                                                 "webauthn": assertion}).status_code == 200


@pytest.mark.parametrize("body", [{"webauthn": "a string"}, {"webauthn": [1]},
                                  {"webauthn": {}, "code": "123456"}, {}])
def test_a_proof_of_the_wrong_shape_is_refused_before_it_is_checked(world: World, body):
    _holder, token, _unsent = _assertion(world)
    refused = world.client.post(LOGIN_FACTOR, json={"challenge_token": token, **body})
    assert refused.status_code == 422, refused.json
    assert refused.json["error"]["code"] == "validation_error"


MALFORMED_REGISTRATIONS = {
    "empty": lambda credential: {},
    "no attestationObject": _mangled("attestationObject", None),
    "attestationObject not CBOR": _mangled("attestationObject", b64url(b"\xff\xff")),
    "attestationObject a list": _mangled("attestationObject", b64url(b"\x82\x01\x02")),
    "clientDataJSON not JSON": _mangled("clientDataJSON", b64url(b"not json")),
    "rawId not base64url": _mangled("rawId", "!!!"),
}


@pytest.mark.parametrize("mangle", MALFORMED_REGISTRATIONS.values(), ids=MALFORMED_REGISTRATIONS)
def test_a_malformed_registration_is_refused_cleanly(world: World, mangle):
    org = world.org()
    user = world.user(org, Role.PRESCRIBER, factor=False)
    headers = password_headers(world, org, user)
    begun = begin(world, headers)
    answer = SecurityKey().register(begun.json["public_key"])
    refused = finish(world, headers, begun.json["factor"]["id"], mangle(answer))
    assert refused.status_code == 422, refused.json
    assert list(refused.json["error"]["details"]["fields"]) == ["credential"]
    assert finish(world, headers, begun.json["factor"]["id"], answer).status_code == 200


@pytest.fixture
def pinned(database_url, instance_path, clock, connection):
    """Return a World whose app accepts security keys at https://vigil.example.org alone."""
    app = make_app(database_url, instance_path, clock,
                   WEBAUTHN_ORIGINS=("https://vigil.example.org",))
    app.extensions["vigil.db"].use_connection(connection)
    yield World(app)
    app.extensions["vigil.db"].engine.dispose()


def test_keys_are_used_only_at_the_configured_origins(pinned: World):
    org = pinned.org()
    user = pinned.user(org, Role.PRESCRIBER, factor=False)
    headers = password_headers(pinned, org, user)
    elsewhere = begin(pinned, headers)
    assert elsewhere.status_code == 403
    assert elsewhere.json["error"]["details"] == {
        "origin": "http://localhost", "allowed": ["https://vigil.example.org"]}
    site = "https://vigil.example.org"
    begun = pinned.client.post(f"{FACTORS}/webauthn", headers=headers, json={}, base_url=site)
    assert begun.status_code == 201, begun.json
    assert begun.json["public_key"]["rp"]["id"] == "vigil.example.org"
    key = SecurityKey(site)
    confirmed = pinned.client.post(
        f"{FACTORS}/{begun.json['factor']['id']}/webauthn", headers=headers, base_url=site,
        json={"credential": key.register(begun.json["public_key"])})
    assert confirmed.status_code == 200, confirmed.json
    options = pinned.client.post(STEP_UP_OPTIONS, headers=headers, base_url=site).json
    assert options["public_key"]["rpId"] == "vigil.example.org"
    assert pinned.client.post(STEP_UP, headers=headers, base_url=site, json={
        "webauthn": key.assertion(options["public_key"])}).status_code == 200


def test_the_origins_setting_is_read_and_checked():
    read = config.load({"VIGIL_WEBAUTHN_ORIGINS": " https://vigil.example.org/, "
                                                  "http://localhost:5000 ,"})
    assert read["WEBAUTHN_ORIGINS"] == ("https://vigil.example.org", "http://localhost:5000")
    config.validate(read)
    with pytest.raises(ValueError, match="VIGIL_WEBAUTHN_ORIGINS"):
        config.validate(config.load({"VIGIL_WEBAUTHN_ORIGINS": "vigil.example.org"}))
