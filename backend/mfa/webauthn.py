"""Security keys and passkeys (WebAuthn) as a second factor: registration and assertions.

A key is registered in two calls. `begin_registration` makes a pending factor and the
PublicKeyCredentialCreationOptions for `navigator.credentials.create()`; `finish_registration`
checks what the key answered (its attestation: `none` or self attestation, which any key can
give, as py_webauthn accepts by default; no vendor's certificate is asked for) and keeps the
credential's id, public key and signature counter. A user may hold several keys beside an
authenticator app: a new key replaces none. Recovery codes come with the user's first
confirmed factor only; a key added beside another factor leaves the codes as they are.

Sign-in and step-up ask `assertion_options` for PublicKeyCredentialRequestOptions and answer
with the key's assertion, which `verify_assertion` checks within the password limits as a code
is (`backend.auth.limiter.verify_code`): a refused assertion counts toward the lockout and is
audited. Each options call stores a single-use challenge that an accepted assertion uses up. A
signature counter that does not grow, where the key keeps one, is refused: the mark of a
cloned key.

The relying party is the origin the browser is at, which is the origin the request arrives at,
accepted only among `Runtime.webauthn_origins` (`VIGIL_WEBAUTHN_ORIGINS`) when that is set. Its
id is the origin's host name; browsers refuse an IP address there, so a browser on the same
machine opens Vigil at `http://localhost:<port>`, not `http://127.0.0.1:<port>`.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from urllib.parse import urlsplit

from marshmallow import Schema, fields
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    options_to_json_dict,
    parse_authentication_credential_json,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    RegistrationCredential,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from backend.accounts.models import Organisation, User
from backend.audit import service as audit
from backend.auth import limiter
from backend.auth.caller import Caller
from backend.errors import Conflict, Forbidden, InvalidField, VigilError
from backend.mfa import service
from backend.mfa.models import FactorChallenge, FactorKind, SecondFactor
from backend.runtime import Runtime

RP_NAME = "Vigil"
DEFAULT_LABEL = "Security key"
BY_WEBAUTHN = FactorKind.WEBAUTHN.value
# An assertion's challenge lives as long as the sign-in challenge token it answers.
CHALLENGE_SECONDS = 300
CHALLENGE_BYTES = 32
ENROL = "enrol"
# py_webauthn lets some errors in parsing untrusted bytes (CBOR, COSE keys, base64) escape as
# built-in exceptions rather than its own: each of them means a malformed credential.
MALFORMED = (WebAuthnException, ValueError, KeyError, TypeError, IndexError)


class OptionsSchema(Schema):
    """What the browser needs to ask a security key: a single-use challenge and its options."""

    challenge_id = fields.UUID(metadata={
        "description": "The stored challenge these options carry: single-use, it expires with "
                       "them. Not sent back: the key's answer carries the challenge itself."})
    public_key = fields.Dict(metadata={
        "description": "PublicKeyCredentialCreationOptions (registration) or "
                       "PublicKeyCredentialRequestOptions (sign-in, step-up) in their JSON form "
                       "(WebAuthn level 3): every binary value (`challenge`, `user.id`, the `id` "
                       "of each of `excludeCredentials` and `allowCredentials`) is base64url "
                       "without padding. `PublicKeyCredential.parseCreationOptionsFromJSON()` "
                       "or `parseRequestOptionsFromJSON()` turns it into what "
                       "`navigator.credentials.create()` or `.get()` takes as `publicKey`; "
                       "otherwise decode those values to ArrayBuffers first."})


class InvalidAssertion(service.InvalidCode):
    """A security key's assertion is malformed, wrong, for no live challenge, or replayed."""

    def __init__(self) -> None:
        # InvalidCode's code and status, with a message and field of its own.
        VigilError.__init__(self, "The security key's answer is wrong, expired or already used.",
                            {"fields": {"webauthn": ["wrong, expired or already used"]}})


class _Refused(Exception):
    """Why an assertion is refused, for the audit row of the failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RelyingParty:
    """Where a key is used: the page's origin, and the id its credentials are scoped to."""

    origin: str
    id: str


def relying_party(rt: Runtime, origin: str) -> RelyingParty:
    """Return the relying party at `origin`, refused outside the configured origins."""
    allowed = rt.webauthn_origins
    if allowed and origin not in allowed:
        raise Forbidden("Security keys are used only at Vigil's own address.",
                        {"origin": origin, "allowed": list(allowed)})
    return RelyingParty(origin, urlsplit(origin).hostname or "")


def _keys(session: Session, user_id: uuid.UUID) -> list[SecondFactor]:
    return service.factors_of(session, user_id, confirmed=True, kind=FactorKind.WEBAUTHN)


def _descriptors(keys: list[SecondFactor]) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(id=key.credential_id) for key in keys]


def _new_challenge(session: Session, now: datetime, user_id: uuid.UUID, purpose: str,
                   seconds: int) -> FactorChallenge:
    # Those used or expired answer nothing more: each new one sweeps the user's away.
    session.execute(delete(FactorChallenge).where(
        FactorChallenge.user_id == user_id,
        or_(FactorChallenge.used_at.is_not(None), FactorChallenge.expires_at <= now)))
    challenge = FactorChallenge(user_id=user_id, purpose=purpose,
                                challenge=secrets.token_bytes(CHALLENGE_BYTES), created_at=now,
                                expires_at=now + timedelta(seconds=seconds))
    session.add(challenge)
    session.flush()
    return challenge


def _use_challenge(session: Session, now: datetime, user_id: uuid.UUID, purpose: str,
                   client_data_json: bytes) -> bytes | None:
    """Use up the user's live challenge of `purpose` that the client data carries."""
    challenge = parse_client_data_json(client_data_json).challenge
    # Conditional, so that of two answers to one challenge at once, one is accepted.
    used = session.execute(update(FactorChallenge).where(
        FactorChallenge.user_id == user_id, FactorChallenge.purpose == purpose,
        FactorChallenge.challenge == challenge, FactorChallenge.used_at.is_(None),
        FactorChallenge.expires_at > now).values(used_at=now)).rowcount
    return challenge if used == 1 else None


def assertion_options(session: Session, rt: Runtime, user: User, *, purpose: str,
                      origin: str) -> dict:
    """Return a single-use challenge and the request options for one of the user's keys.

    `purpose` is `sign_in` or `step_up`; an assertion answers only a challenge of its purpose.
    """
    rp = relying_party(rt, origin)
    keys = _keys(session, user.id)
    if not keys:
        raise Conflict("You have no security key: prove your second factor with a code.")
    challenge = _new_challenge(session, rt.clock.now(), user.id, purpose, CHALLENGE_SECONDS)
    options = generate_authentication_options(
        rp_id=rp.id, challenge=challenge.challenge, timeout=CHALLENGE_SECONDS * 1000,
        allow_credentials=_descriptors(keys),
        user_verification=UserVerificationRequirement.PREFERRED)
    return {"challenge_id": challenge.id, "public_key": options_to_json_dict(options)}


def verify_assertion(session: Session, rt: Runtime, caller: Caller, user: User,
                     credential: dict, *, purpose: str, origin: str) -> service.Proof:
    """Check a key's assertion against the user's live challenge of `purpose`, or refuse it.

    Refused (422 `invalid_code`) when malformed, from a key not among the user's confirmed
    ones, for no unused and unexpired challenge, not verifying, or with a counter that did
    not grow; each refusal counts toward the lockout and is audited (`mfa.code_failed`) with
    its reason: `malformed`, `unknown_key`, `challenge`, `signature` or `counter`.
    """
    rp = relying_party(rt, origin)
    now = rt.clock.now()
    refused: list[str] = []
    failed = partial(_audit_failure, now=now, caller=caller, user=user, purpose=purpose,
                     refused=refused)
    proof = limiter.verify_code(
        session, rt, limiter.Attempt.of(session, user, caller.address),
        partial(_accepts, session, now, rp, user, credential, purpose, refused), audit=failed)
    if proof is None:
        raise InvalidAssertion()
    return proof


def _audit_failure(session: Session, *, now: datetime, caller: Caller, user: User,
                   purpose: str, refused: list[str]) -> None:
    audit.record(session, now, caller, "mfa.code_failed", "user", user.id, detail={
        "purpose": purpose, "method": BY_WEBAUTHN, "refused": refused[-1]})


def _accepts(session: Session, now: datetime, rp: RelyingParty, user: User, credential: dict,
             purpose: str, refused: list[str]) -> service.Proof | None:
    try:
        return _check(session, now, rp, user, credential, purpose)
    except _Refused as refusal:
        refused.append(refusal.reason)
        return None


def _check(session: Session, now: datetime, rp: RelyingParty, user: User, credential: dict,
           purpose: str) -> service.Proof:
    try:
        assertion = parse_authentication_credential_json(credential)
    except MALFORMED as exc:
        raise _Refused("malformed") from exc
    key = next((key for key in _keys(session, user.id)
                if key.credential_id == assertion.raw_id), None)
    handle = assertion.response.user_handle
    # A passkey (a discoverable credential) names its user; other keys may name none.
    if key is None or (handle and handle != user.id.bytes):
        raise _Refused("unknown_key")
    try:
        challenge = _use_challenge(session, now, user.id, purpose,
                                   assertion.response.client_data_json)
    except MALFORMED as exc:
        raise _Refused("malformed") from exc
    if challenge is None:
        raise _Refused("challenge")
    try:
        # The counter is checked below, once the signature is known to be the key's: a
        # counter gone back on a true signature is a cloned key, not a forgery.
        verified = verify_authentication_response(
            credential=assertion, expected_challenge=challenge, expected_rp_id=rp.id,
            expected_origin=rp.origin, credential_public_key=key.public_key,
            credential_current_sign_count=0)
    except MALFORMED as exc:
        raise _Refused("signature") from exc
    _advance_counter(session, key, verified.new_sign_count)
    return service.Proof(BY_WEBAUTHN, key.id)


def _advance_counter(session: Session, key: SecondFactor, count: int) -> None:
    """Keep the key's new signature count; refuse one that does not grow (a cloned key)."""
    known = key.sign_count or 0
    if count == known == 0:
        # A key that keeps no counter (many passkeys) says 0 each time.
        return
    # Conditional, so that two assertions racing cannot both move the counter past `known`.
    if count <= known or session.execute(update(SecondFactor).where(
            SecondFactor.id == key.id, SecondFactor.sign_count == known)
            .values(sign_count=count)).rowcount != 1:
        raise _Refused("counter")


def begin_registration(session: Session, rt: Runtime, caller: Caller, *, label: str | None,
                       code: str | None, origin: str) -> tuple[SecondFactor, dict]:
    """Start registering a security key: a pending factor, and the options for the browser.

    Beside a confirmed factor, adding a key needs a current code or a recovery code. An
    earlier pending enrolment of any kind is dropped, as `service.begin_totp` does.
    """
    rp = relying_party(rt, origin)
    user = session.get(User, caller.user_id)
    if service.factors_of(session, user.id, confirmed=True):
        if code is None:
            raise InvalidField("code", "a current code or a recovery code is needed to add a "
                                       "security key")
        service.verify(session, rt, caller, user, code, purpose="enrol")
    now = rt.clock.now()
    for pending in service.factors_of(session, user.id, confirmed=False):
        service.remove_factor(pending, now, user.id)
    factor = SecondFactor(user_id=user.id, organisation_id=user.organisation_id,
                          kind=FactorKind.WEBAUTHN, label=label or DEFAULT_LABEL,
                          created_at=now)
    session.add(factor)
    session.flush()
    challenge = _new_challenge(session, now, user.id, ENROL, service.ENROLMENT_SECONDS)
    audit.record(session, now, caller, "mfa.enrol", "second_factor", factor.id,
                 detail={"kind": factor.kind.value})
    return factor, {"challenge_id": challenge.id,
                    "public_key": _creation_options(session, rp, user, challenge.challenge)}


def _creation_options(session: Session, rp: RelyingParty, user: User, challenge: bytes) -> dict:
    organisation = session.get(Organisation, user.organisation_id)
    options = generate_registration_options(
        rp_id=rp.id, rp_name=RP_NAME, user_id=user.id.bytes, user_name=user.username,
        user_display_name=f"{user.display_name} ({organisation.name})", challenge=challenge,
        timeout=service.ENROLMENT_SECONDS * 1000,
        exclude_credentials=_descriptors(_keys(session, user.id)),
        # A second factor beside a password: the key need not spend a discoverable slot.
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.PREFERRED))
    return options_to_json_dict(options)


def finish_registration(session: Session, rt: Runtime, caller: Caller, factor_id: uuid.UUID,
                        credential: dict, *, origin: str) -> service.Confirmed:
    """Confirm a pending security key with what it answered to the registration options.

    Returns ten recovery codes when it is the user's first confirmed factor; beside another
    one, none (an empty list): the codes the user holds stay valid.
    """
    rp = relying_party(rt, origin)
    factor = service.own_factor(session, caller, factor_id)
    now = rt.clock.now()
    _check_pending(factor, now)
    registration = _registration(credential)
    challenge = _use_challenge(session, now, caller.user_id, ENROL,
                               registration.response.client_data_json)
    if challenge is None:
        raise InvalidField("credential", "it answers no live challenge of this enrolment: "
                                         "begin again")
    _verify_registration(session, factor, registration, challenge, rp)
    user = session.get(User, caller.user_id)
    first = not service.factors_of(session, user.id, confirmed=True)
    # Conditional: of two confirmations racing, one confirms.
    if session.execute(update(SecondFactor).where(
            SecondFactor.id == factor.id, SecondFactor.confirmed_at.is_(None),
            SecondFactor.removed_at.is_(None)).values(confirmed_at=now)).rowcount != 1:
        raise Conflict("This second factor is already confirmed.")
    codes = service.issue_recovery_codes(session, rt, user, now) if first else []
    audit.record(session, now, caller, "mfa.confirm", "second_factor", factor.id,
                 detail={"kind": factor.kind.value, "recovery_codes": len(codes)})
    return service.Confirmed(factor, codes)


def _check_pending(factor: SecondFactor, now: datetime) -> None:
    if factor.kind != FactorKind.WEBAUTHN:
        raise Conflict("This second factor is not a security key.")
    if factor.confirmed_at is not None:
        raise Conflict("This second factor is already confirmed.")
    if now - factor.created_at > timedelta(seconds=service.ENROLMENT_SECONDS):
        raise Conflict("This enrolment has expired; begin again.",
                       {"enrolment_seconds": service.ENROLMENT_SECONDS})


def _registration(credential: dict) -> RegistrationCredential:
    try:
        registration = parse_registration_credential_json(credential)
        parse_client_data_json(registration.response.client_data_json)
    except MALFORMED as exc:
        raise InvalidField("credential", "not a security key's registration (PublicKeyCredential "
                                         "JSON with an attestationObject)") from exc
    return registration


def _verify_registration(session: Session, factor: SecondFactor,
                         registration: RegistrationCredential, challenge: bytes,
                         rp: RelyingParty) -> None:
    """Check the key's attestation for `rp` and keep its credential on `factor`."""
    try:
        verified = verify_registration_response(
            credential=registration, expected_challenge=challenge, expected_rp_id=rp.id,
            expected_origin=rp.origin)
        # Its public key must be one an assertion can later be checked with.
        decoded_public_key_to_cryptography(
            decode_credential_public_key(verified.credential_public_key))
    except MALFORMED as exc:
        raise InvalidField("credential", "the security key's answer does not verify for this "
                                         "enrolment and address") from exc
    if session.scalar(select(SecondFactor.id).where(
            SecondFactor.credential_id == verified.credential_id)):
        raise Conflict("This security key is already registered.")
    factor.credential_id = verified.credential_id
    factor.public_key = verified.credential_public_key
    factor.sign_count = verified.sign_count

